#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <memory>

#include "core/error.h"
#include "core/files.h"

namespace bulwark::data {
namespace {

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};
using GzHandle = std::unique_ptr<gzFile_s, GzCloser>;

// Reads exactly n bytes; returns how many were read (fewer means the file ended early).
size_t read_some(gzFile f, uint8_t* out, size_t n, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
    const int got = gzread(f, out + done, chunk);
    if (got < 0) {
      int code = 0;
      const char* msg = gzerror(f, &code);
      throw data_format(path + ": corrupt compressed data (" + std::string(msg ? msg : "?") + ")");
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

uint32_t big_endian(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  if (!file_exists(path)) throw not_found(path + ": no such file");
  GzHandle f(gzopen(path.c_str(), "rb"));
  if (!f) throw io_error(path + ": cannot open");

  uint8_t magic[4];
  if (read_some(f.get(), magic, 4, path) != 4) throw data_format(path + ": truncated: file ends inside the 4-byte magic number");
  if (magic[0] != 0 || magic[1] != 0) {
    throw data_format(path + ": bad magic number: first two bytes must be 0 (is this an IDX file?)");
  }
  if (magic[2] != 0x08) {
    throw data_format(path + ": unsupported IDX element type 0x" + std::to_string(magic[2]) +
                      " (only unsigned byte, 0x08, is supported)");
  }
  const int ndims = magic[3];
  if (ndims < 1 || ndims > 4) {
    throw data_format(path + ": bad number of dimensions " + std::to_string(ndims) + " (must be 1 to 4)");
  }

  IdxArray out;
  int64_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    uint8_t raw[4];
    if (read_some(f.get(), raw, 4, path) != 4) {
      throw data_format(path + ": truncated: file ends inside the header (dimension " + std::to_string(i) + ")");
    }
    const int64_t dim = big_endian(raw);
    if (dim == 0) throw data_format(path + ": dimension " + std::to_string(i) + " is 0");
    total *= dim;
    if (total > kMaxIdxElements) {
      throw data_format(path + ": header declares more than " + std::to_string(kMaxIdxElements) + " elements");
    }
    out.dims.push_back(dim);
  }

  // The header is untrusted: the buffer grows as data arrives (geometrically, by resize), so a
  // few bytes declaring 2^31 elements fail as truncated instead of first allocating 2 GiB.
  constexpr size_t kChunk = size_t{1} << 20;
  const size_t want = static_cast<size_t>(total);
  size_t got = 0;
  while (got < want) {
    const size_t n = std::min(want - got, kChunk);
    out.values.resize(got + n);
    const size_t read = read_some(f.get(), out.values.data() + got, n, path);
    got += read;
    if (read < n) break;
  }
  if (got != want) {
    throw data_format(path + ": truncated: header declares " + std::to_string(total) + " bytes of data, file has " +
                      std::to_string(got));
  }
  uint8_t extra;
  if (read_some(f.get(), &extra, 1, path) != 0) {
    throw data_format(path + ": trailing bytes after the " + std::to_string(total) + " declared by the header");
  }
  return out;
}

torch::Tensor read_idx_images(const std::string& path) {
  IdxArray a = read_idx(path);
  if (a.dims.size() != 3) {
    throw data_format(path + ": image file must have 3 dimensions (count, rows, cols), has " +
                      std::to_string(a.dims.size()));
  }
  auto t = torch::empty({a.dims[0], 1, a.dims[1], a.dims[2]}, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), a.values.data(), a.values.size());
  return t;
}

torch::Tensor read_idx_labels(const std::string& path, int64_t num_classes) {
  IdxArray a = read_idx(path);
  if (a.dims.size() != 1) {
    throw data_format(path + ": label file must have 1 dimension, has " + std::to_string(a.dims.size()));
  }
  auto t = torch::empty({a.dims[0]}, torch::kInt64);
  auto* p = t.data_ptr<int64_t>();
  for (size_t i = 0; i < a.values.size(); ++i) {
    if (a.values[i] >= num_classes) {
      throw data_format(path + ": label " + std::to_string(a.values[i]) + " at index " + std::to_string(i) +
                        " is out of range (must be < " + std::to_string(num_classes) + ")");
    }
    p[i] = a.values[i];
  }
  return t;
}

}  // namespace bulwark::data
