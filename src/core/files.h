// core/files.h — file helpers that never leave a half-written file behind.
#pragma once

#include <string>

namespace bulwark {

// Writes `bytes` to a temporary file beside `path`, fsyncs it, then renames it over `path`,
// so a reader (or a crash) sees either the old file or the whole new one.
void atomic_write_file(const std::string& path, const std::string& bytes);

// Reads a whole file; throws not_found / io_error naming the path.
std::string read_file(const std::string& path);

bool file_exists(const std::string& path);
bool directory_exists(const std::string& path);

}  // namespace bulwark
