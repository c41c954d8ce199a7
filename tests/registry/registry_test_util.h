// Helpers for the registry tests: files of random bytes, an independent SHA-256 (OpenSSL's
// one-shot function, not Bulwark's digest code), expected-error helpers and running the CLI with
// stdout and stderr kept apart.
#pragma once

#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <utility>

#include "core/error.h"
#include "registry/signing.h"
#include "test_util.h"

namespace bulwark::registry::test {

using bulwark::testing::run_command;
using bulwark::testing::TempDir;

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

inline std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string to_hex(const std::string& raw) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (const unsigned char c : raw) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

inline std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

inline std::string sha256_raw_of(const std::string& bytes) {
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
         reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

inline std::string sha256_hex_of(const std::string& bytes) { return to_hex(sha256_raw_of(bytes)); }
inline std::string sha256_of_file(const std::string& path) { return sha256_hex_of(read_all(path)); }

// Writes `size` random bytes (from `seed`) to `path`; returns them.
inline std::string write_random_file(const std::string& path, size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string bytes(size, '\0');
  for (auto& c : bytes) c = static_cast<char>(rng() & 0xff);
  write_all(path, bytes);
  return bytes;
}

inline unsigned file_mode(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// Runs `f`, which must throw a bulwark::Error; returns it.
template <typename F>
Error error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected a bulwark::Error";
  return Error(ErrorKind::kInternal, "(nothing was thrown)");
}

// Runs `f`, which must throw SignatureError; returns its check ("" when something else happened).
template <typename F>
std::string signature_check_of(F f) {
  try {
    f();
  } catch (const SignatureError& e) {
    return e.check;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a SignatureError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected a SignatureError, nothing was thrown";
  return "";
}

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs the real `bulwark` binary through the shell; `scratch` holds its captured output.
inline CliResult run_bulwark(const std::string& args, const TempDir& scratch) {
  const std::string out = scratch.file("cli.stdout"), err = scratch.file("cli.stderr");
  const std::string cmd = std::string(BULWARK_BIN) + " " + args + " >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_all(out);
  r.err = read_all(err);
  return r;
}

}  // namespace bulwark::registry::test
