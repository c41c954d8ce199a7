// core/digest.h — SHA-256 (OpenSSL) of bytes and of files, hex-encoded. Calibration files, the
// registry and tokens identify what they vouch for by these digests.
#pragma once

#include <string>

namespace bulwark {

std::string sha256_hex(const std::string& data);
// Raw 32 bytes, for hash trees and signatures over digests.
std::string sha256_raw(const std::string& data);
// Lowercase hex of raw bytes.
std::string hex_encode(const std::string& raw);
// `bytes` bytes from OpenSSL's CSPRNG, hex-encoded: ids and tokens nobody can guess.
std::string random_hex(size_t bytes);
// Streams the file; throws not_found / io_error naming the path.
std::string sha256_file_hex(const std::string& path);

}  // namespace bulwark
