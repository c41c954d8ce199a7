// report/detail/text_input.h — reading the report's input files within the limits (limits.h), with
// errors that name the file and line.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace bulwark::report::detail {

// Throws not_found when `path` is missing, data_format when it is empty, resource-exhausted when
// it is larger than kMaxInputBytes. `what` names the file's role in messages ("events file").
void check_input_file(const std::string& path, const std::string& what);

// The whole file, after check_input_file.
std::string read_input_file(const std::string& path, const std::string& what);

// Calls `on_line(line_number, text)` for each line (1-based, without the newline); throws
// resource-exhausted past kMaxInputLines. An exception from `on_line` about the last line, when
// that line has no final newline, gets a hint that the file may still have been being written.
void for_each_line(const std::string& path, const std::string& what,
                   const std::function<void(int64_t, const std::string&)>& on_line);

}  // namespace bulwark::report::detail
