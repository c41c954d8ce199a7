// core/digest.h — SHA-256 (OpenSSL) of bytes and of files, hex-encoded. Calibration files, the
// registry and tokens identify what they vouch for by these digests.
#pragma once

#include <string>

namespace bulwark {

std::string sha256_hex(const std::string& data);
// Streams the file; throws not_found / io_error naming the path.
std::string sha256_file_hex(const std::string& path);

}  // namespace bulwark
