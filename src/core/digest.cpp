#include "core/digest.h"

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
