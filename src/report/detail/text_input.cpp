#include "report/detail/text_input.h"

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/files.h"
#include "report/limits.h"

namespace bulwark::report::detail {
namespace {

Error too_large(const std::string& message) { return Error(ErrorKind::kResourceExhausted, message); }

}  // namespace

void check_input_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) throw not_found(what + " " + path + " does not exist");
  if (!std::filesystem::is_regular_file(status)) throw invalid_argument(what + " " + path + " is not a regular file");
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw io_error("cannot read the size of " + what + " " + path + ": " + ec.message());
  if (size == 0) throw data_format(what + " " + path + " is empty");
  if (size > static_cast<uintmax_t>(kMaxInputBytes)) {
    throw too_large(what + " " + path + " is " + std::to_string(size) + " bytes; reports read at most " +
                    std::to_string(kMaxInputBytes) + " (256 MiB) per file");
  }
}

std::string read_input_file(const std::string& path, const std::string& what) {
  check_input_file(path, what);
  return read_file(path);
}

void for_each_line(const std::string& path, const std::string& what,
                   const std::function<void(int64_t, const std::string&)>& on_line) {
  check_input_file(path, what);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error("cannot open " + what + " " + path);
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    if (++number > kMaxInputLines) {
      throw too_large(what + " " + path + " has more than " + std::to_string(kMaxInputLines) +
                      " lines; reports read at most that many");
    }
    const bool unterminated = in.eof();  // getline hit the end before a newline
    try {
      on_line(number, line);
    } catch (const Error& e) {
      if (!unterminated) throw;
      throw Error(e.kind(),
                  std::string(e.what()) + " (the last line has no newline: was the file still being written?)");
    }
  }
  if (in.bad()) throw io_error("reading " + what + " " + path + " failed");
}

}  // namespace bulwark::report::detail
