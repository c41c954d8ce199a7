#include "core/digest.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstdio>
#include <memory>

#include "core/error.h"
#include "core/files.h"

namespace bulwark {
namespace {

std::string to_hex(const unsigned char* p, unsigned int n) {
  static const char* kHex = "0123456789abcdef";
  std::string s(2 * n, '0');
  for (unsigned int i = 0; i < n; ++i) {
    s[2 * i] = kHex[p[i] >> 4];
    s[2 * i + 1] = kHex[p[i] & 15];
  }
  return s;
}

struct CtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

}  // namespace

std::string hex_encode(const std::string& raw) {
  return to_hex(reinterpret_cast<const unsigned char*>(raw.data()), static_cast<unsigned int>(raw.size()));
}

std::string hex_decode(std::string_view hex) {
  const size_t bad = hex.find_first_not_of("0123456789abcdef");
  if (bad != std::string_view::npos) {
    throw data_format("hex: character " + std::to_string(bad) + " is not a lowercase hex digit");
  }
  if (hex.size() % 2 != 0) throw data_format("hex: odd length " + std::to_string(hex.size()));
  std::string raw(hex.size() / 2, '\0');
  size_t written = 0;
  const std::string text(hex);  // OpenSSL wants a NUL-terminated string
  if (!raw.empty() && OPENSSL_hexstr2buf_ex(reinterpret_cast<unsigned char*>(raw.data()), raw.size(), &written,
                                            text.c_str(), '\0') != 1) {
    throw data_format("hex: not decodable");
  }
  raw.resize(written);
  return raw;
}

std::string base64_encode(std::string_view bytes) {
  std::string out((bytes.size() + 2) / 3 * 4 + 1, '\0');  // + the NUL EVP_EncodeBlock writes
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    throw data_format("base64 length " + std::to_string(text.size()) + " is not a multiple of 4");
  }
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) throw data_format("base64: a character outside the alphabet, or padding inside the text");
  const size_t padding = text.size() >= 2 && text.substr(text.size() - 2) == "==" ? 2 : (!text.empty() && text.back() == '=' ? 1 : 0);
  if (static_cast<size_t>(n) < padding) throw data_format("base64: padding only");
  out.resize(static_cast<size_t>(n) - padding);  // EVP_DecodeBlock counts the padding as zero bytes
  // The strictness check: only the one canonical text of these bytes (whitespace, which OpenSSL
  // skips at the ends, and non-zero padding bits, which it ignores, are refused).
  if (base64_encode(out) != text) throw data_format("base64 is not in canonical form (whitespace or padding bits)");
  return out;
}

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    throw internal_error("random bytes failed (OpenSSL)");
  }
  return hex_encode(raw);
}

std::string sha256_raw(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    throw internal_error("SHA-256 failed (OpenSSL)");
  }
  return std::string(reinterpret_cast<const char*>(md), len);
}

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    throw internal_error("SHA-256 failed (OpenSSL)");
  }
  return to_hex(md, len);
}

std::string sha256_file_hex(const std::string& path) {
  if (!file_exists(path)) throw not_found(path + ": no such file");
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw io_error(path + ": cannot open for reading");
  std::unique_ptr<EVP_MD_CTX, CtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw internal_error("SHA-256 init failed");
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) {
    if (EVP_DigestUpdate(ctx.get(), buf, n) != 1) throw internal_error("SHA-256 update failed");
  }
  if (std::ferror(f.get())) throw io_error(path + ": read failed");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) throw internal_error("SHA-256 final failed");
  return to_hex(md, len);
}

}  // namespace bulwark
