// core/digest.h — SHA-256 (OpenSSL) of bytes and of files, hex-encoded. Calibration files, the
// registry and tokens identify what they vouch for by these digests.
#pragma once

#include <string>
#include <string_view>

namespace bulwark {

std::string sha256_hex(const std::string& data);
// Raw 32 bytes, for hash trees and signatures over digests.
std::string sha256_raw(const std::string& data);
// Lowercase hex of raw bytes.
std::string hex_encode(const std::string& raw);
// The bytes of lowercase hex (what hex_encode writes, and only that: an odd length, upper case or
// any other character throws data_format naming the offset), decoded by OpenSSL.
std::string hex_decode(std::string_view hex);
// RFC 4648 base64 (standard alphabet, padded), by OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock. The
// decoder accepts only the canonical encoding (what base64_encode writes: no whitespace, no
// missing padding, zero padding bits), so each byte string has exactly one text; data_format otherwise.
std::string base64_encode(std::string_view bytes);
std::string base64_decode(std::string_view text);
// `bytes` bytes from OpenSSL's CSPRNG, hex-encoded: ids and tokens nobody can guess.
std::string random_hex(size_t bytes);
// Streams the file; throws not_found / io_error naming the path.
std::string sha256_file_hex(const std::string& path);

}  // namespace bulwark
