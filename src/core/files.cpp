#include "core/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace bulwark {
namespace {

std::string errno_text() { return std::strerror(errno); }

std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

void write_all(int fd, const std::string& bytes, const std::string& tmp) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw io_error("cannot write " + tmp + ": " + errno_text());
    }
    done += static_cast<size_t>(n);
  }
}

}  // namespace

void atomic_write_file(const std::string& path, const std::string& bytes) {
  if (path.empty()) throw invalid_argument("output path is empty");
  // A fresh, unpredictable name, created exclusively and never through a symlink: a file or link
  // planted at the temporary name by someone else who can write the directory is never written
  // through, and cannot make the write fail by squatting the name.
  std::random_device rd;
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, "%d.%08x%08x", static_cast<int>(::getpid()), rd(), rd());
  const std::string tmp = path + ".tmp." + suffix;
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) throw io_error("cannot create " + tmp + ": " + errno_text());
  try {
    write_all(fd, bytes, tmp);
    if (::fsync(fd) != 0) throw io_error("cannot fsync " + tmp + ": " + errno_text());
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw io_error("cannot rename " + tmp + " to " + path + ": " + why);
  }
  // Make the rename itself durable.
  const int dir = ::open(directory_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

std::string read_file(const std::string& path) {
  if (!file_exists(path)) throw not_found(path + ": no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(path + ": cannot open: " + errno_text());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool directory_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace bulwark
