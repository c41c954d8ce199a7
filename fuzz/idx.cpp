// fuzz/idx.cpp — the IDX reader (data/idx.h) on a file of the input's bytes, read as the datasets
// read it: raw, and gzip-compressed (gzread decodes both), which must give the same answer; then
// as images or labels when the shape fits. Two files and a deflate per input: slower than the
// in-memory targets, but it is the reader the product runs.
#include <zlib.h>

#include <string>

#include "data/idx.h"
#include "fuzz_util.h"

namespace {

// The input gzip-compressed, so valid gzip streams of any content reach the reader too (corrupt
// ones come from the raw file: gzread reads gzip magic as such).
std::string gzip(const uint8_t* data, size_t size) {
  z_stream z{};
  if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::string out(deflateBound(&z, size), '\0');
  z.next_in = const_cast<Bytef*>(data);
  z.avail_in = static_cast<uInt>(size);
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bulwark;
  static fuzz::ScratchFile raw_file(".idx"), gz_file(".idx.gz");
  const std::string& raw = raw_file.write(data, size);
  const std::string z = gzip(data, size);
  const std::string& gz = gz_file.write(reinterpret_cast<const uint8_t*>(z.data()), z.size());

  bool raw_ok = false, gz_ok = false;
  data::IdxArray a, b;
  fuzz::expect_only_errors([&] {
    a = data::read_idx(raw);
    raw_ok = true;
  });
  fuzz::expect_only_errors([&] {
    b = data::read_idx(gz);
    gz_ok = true;
  });
  // An input that is itself gzip is decoded once from the raw file and only unwrapped once from the
  // compressed one, so the two differ; every other input must read the same both ways.
  const bool is_gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  if (!is_gzip) {
    fuzz::check(raw_ok == gz_ok, "raw and gzip files of the same bytes both load or both fail");
    if (raw_ok) fuzz::check(a.dims == b.dims && a.values == b.values, "raw and gzip files decode the same");
  }
  if (!raw_ok) return 0;
  int64_t total = 1;
  for (const int64_t d : a.dims) total *= d;
  fuzz::check(total == static_cast<int64_t>(a.values.size()), "values match the declared dimensions");
  fuzz::expect_only_errors([&] {
    if (a.dims.size() == 3) fuzz::check(data::read_idx_images(raw).numel() == total, "images keep every byte");
    if (a.dims.size() == 1) fuzz::check(data::read_idx_labels(raw, 10).numel() == total, "labels keep every byte");
  });
  return 0;
}
