#include "data/disk_tensor.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <torch/torch.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace bulwark::data {
namespace {

struct Mapping {
  void* base = nullptr;
  size_t length = 0;
};

// The deleter of every mapping made here; is_disk_tensor recognises a storage by it.
void release(void* ctx) {
  auto* m = static_cast<Mapping*>(ctx);
  if (m->base != nullptr && m->base != MAP_FAILED) munmap(m->base, m->length);
  delete m;
}

}  // namespace

std::string scratch_dir() {
  for (const char* var : {"BULWARK_SCRATCH_DIR", "TMPDIR"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && *v != '\0') return v;
  }
  return "/tmp";
}

torch::Tensor disk_tensor(const std::vector<int64_t>& sizes, const std::string& what) {
  int64_t bytes = 1;
  for (const int64_t s : sizes) {
    if (s < 0 || __builtin_mul_overflow(bytes, s, &bytes)) throw invalid_argument(what + ": size out of range");
  }
  const std::string dir = scratch_dir();
  const std::string where = " (the scratch directory: $BULWARK_SCRATCH_DIR, else $TMPDIR, else /tmp)";
  struct statvfs fs {};
  if (statvfs(dir.c_str(), &fs) != 0) {
    const int err = errno;
    throw io_error(dir + ": " + std::strerror(err) + where);
  }
  // A tmpfs or ramfs is memory: a scratch file there would break the bound it exists to keep.
  constexpr long kTmpfsMagic = 0x01021994, kRamfsMagic = 0x858458f6;
  struct statfs kind {};
  if (statfs(dir.c_str(), &kind) == 0 &&
      (static_cast<long>(kind.f_type) == kTmpfsMagic || static_cast<long>(kind.f_type) == kRamfsMagic)) {
    throw invalid_argument(what + " is over the memory bound (--max-memory), and the scratch directory " + dir +
                           " is a tmpfs or ramfs, which is memory" + where + "; point BULWARK_SCRATCH_DIR at a "
                           "directory on disk, or raise --max-memory");
  }
  const auto free_bytes = static_cast<unsigned long long>(fs.f_bavail) * fs.f_frsize;
  if (static_cast<unsigned long long>(bytes) > free_bytes) {
    throw invalid_argument(what + " needs " + std::to_string(bytes >> 20) + " MiB on disk, over the memory bound (" +
                           "--max-memory), and " + dir + " has " + std::to_string(free_bytes >> 20) + " MiB free" +
                           where + "; free space there, point the variable at a larger disk, or raise --max-memory");
  }
  // O_TMPFILE: a file with no name at all; where the file system lacks it, a named one unlinked at once.
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    std::string name = dir + "/bulwark-scratch-XXXXXX";
    fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      throw io_error(dir + ": cannot make a scratch file: " + std::strerror(err) + where);
    }
    ::unlink(name.c_str());
  }
  auto* m = new Mapping{nullptr, static_cast<size_t>(std::max<int64_t>(bytes, 1))};
  // Blocks allocated now, not on first write: a disk that fills up later would otherwise end the
  // process with SIGBUS at a write through the mapping, with no message.
  const int allocated = ::posix_fallocate(fd, 0, static_cast<off_t>(m->length));
  if (allocated != 0) {
    ::close(fd);
    delete m;
    throw io_error(dir + ": cannot allocate a scratch file of " + std::to_string(bytes >> 20) + " MiB: " +
                   std::strerror(allocated) + where + "; free space there or raise --max-memory");
  }
  m->base = ::mmap(nullptr, m->length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const std::string e = std::strerror(errno);
  ::close(fd);  // the mapping keeps the file
  if (m->base == MAP_FAILED) {
    delete m;
    throw io_error(dir + ": cannot map a scratch file of " + std::to_string(bytes) + " bytes: " + e + where);
  }
  void* base = m->base;
  c10::DataPtr data(base, m, &release, c10::Device(c10::kCPU));
  c10::Storage storage(c10::Storage::use_byte_size_t(), static_cast<size_t>(bytes), std::move(data), nullptr, false);
  return torch::empty({0}, torch::kUInt8).set_(storage, 0, sizes);
}

bool is_disk_tensor(const torch::Tensor& t) {
  return t.defined() && t.has_storage() && t.storage().data_ptr().get_deleter() == &release;
}

torch::Tensor disk_index_select(const torch::Tensor& source, const torch::Tensor& indices, const std::string& what) {
  std::vector<int64_t> sizes = source.sizes().vec();
  sizes[0] = indices.numel();
  torch::Tensor out = disk_tensor(sizes, what);
  const int64_t row_bytes = sizes[0] > 0 ? out.numel() / sizes[0] : 0;
  // About 64 MiB of rows at a time.
  const int64_t chunk = std::max<int64_t>(1, (int64_t{64} << 20) / std::max<int64_t>(row_bytes, 1));
  for (int64_t start = 0; start < sizes[0]; start += chunk) {
    const int64_t n = std::min(chunk, sizes[0] - start);
    out.narrow(0, start, n).copy_(source.index_select(0, indices.narrow(0, start, n)));
  }
  return out;
}

}  // namespace bulwark::data
