#include "registry/objects.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>

#include "core/digest.h"
#include "core/error.h"
#include "core/files.h"

namespace bulwark::registry {
namespace fs = std::filesystem;
namespace {

std::string errno_text() { return std::strerror(errno); }

void fsync_path(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) throw io_error("cannot open " + path + ": " + errno_text());
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw io_error("cannot fsync " + path + ": " + errno_text());
}

// Copies src to a new file dst (mode 0444), fsyncing it; returns the bytes' SHA-256.
void copy_synced(const std::string& src, const std::string& dst) {
  const int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) throw io_error("cannot read " + src + ": " + errno_text());
  const int out = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
  if (out < 0) {
    ::close(in);
    throw io_error("cannot create " + dst + ": " + errno_text());
  }
  char buf[1 << 16];
  bool ok = true;
  for (;;) {
    const ssize_t n = ::read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = n == 0;
      break;
    }
    for (ssize_t done = 0; done < n;) {
      const ssize_t w = ::write(out, buf + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        ok = false;
        break;
      }
      done += w;
    }
    if (!ok) break;
  }
  ok = ok && ::fsync(out) == 0;
  ::close(in);
  ::close(out);
  if (!ok) {
    ::unlink(dst.c_str());
    throw io_error("cannot copy " + src + " into the registry: " + errno_text());
  }
}

}  // namespace

ObjectStore::ObjectStore(std::string registry_dir) : root_(std::move(registry_dir) + "/objects") {
  if (!directory_exists(root_)) throw not_found(root_ + ": the registry's objects directory is missing");
}

void ObjectStore::create(const std::string& registry_dir) {
  fs::create_directories(registry_dir + "/objects/sha256");
  fs::create_directories(registry_dir + "/objects/tmp");
}

std::string ObjectStore::path_of(const std::string& sha) const { return root_ + "/sha256/" + sha.substr(0, 2) + "/" + sha; }

bool ObjectStore::has(const std::string& sha) const { return file_exists(path_of(sha)); }

std::string ObjectStore::put(const std::string& path) const {
  if (!file_exists(path)) throw not_found(path + ": no such file");
  std::random_device rd;
  const std::string tmp = root_ + "/tmp/" + std::to_string(::getpid()) + "-" + std::to_string(rd());
  copy_synced(path, tmp);
  // Hash the copy, not the source: the bytes stored are the bytes signed.
  std::string sha;
  try {
    sha = sha256_file_hex(tmp);
    const std::string dir = root_ + "/sha256/" + sha.substr(0, 2);
    fs::create_directories(dir);
    if (::rename(tmp.c_str(), path_of(sha).c_str()) != 0) throw io_error("cannot rename into " + dir + ": " + errno_text());
    fsync_path(dir, O_RDONLY | O_DIRECTORY);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  return sha;
}

ObjectStore::GcResult ObjectStore::gc(const std::set<std::string>& keep, bool dry_run) const {
  GcResult r;
  for (const auto& e : fs::directory_iterator(root_ + "/tmp")) {
    // Temp files are named <pid>-<random>: one whose writer still runs is a put in progress.
    const std::string name = e.path().filename().string();
    const long pid = std::strtol(name.c_str(), nullptr, 10);
    if (pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) continue;
    r.bytes_freed += static_cast<int64_t>(fs::file_size(e.path()));
    ++r.removed_temp;
    if (!dry_run) fs::remove(e.path());
  }
  for (const auto& e : fs::recursive_directory_iterator(root_ + "/sha256")) {
    if (!e.is_regular_file() || keep.count(e.path().filename().string()) != 0) continue;
    r.bytes_freed += static_cast<int64_t>(fs::file_size(e.path()));
    ++r.removed_objects;
    if (!dry_run) fs::remove(e.path());
  }
  return r;
}

}  // namespace bulwark::registry
