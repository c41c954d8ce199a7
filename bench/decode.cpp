// bench/decode — how many images per second the image-folder loader decodes (data::load_dataset on
// an ImageFolder of PNGs), at 32x32 and 224x224 RGB, with 1 and all decode threads; also JPEG-free
// resize cost (224 -> 32), and the same folders held on disk (over --max-memory: decoded into a
// memory-mapped scratch file in $BULWARK_SCRATCH_DIR / $TMPDIR / /tmp). Writes its own folder of
// random PNGs first (not timed).
//
// usage: build/bench/decode [N_SMALL=5000] [N_LARGE=500] [ROUNDS=3]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>

#include <unistd.h>

#include "core/files.h"
#include "core/system.h"
#include "data/data.h"

namespace fs = std::filesystem;
using bulwark::data::DecodedImage;

namespace {

std::string make_folder(const std::string& root, int64_t n, int64_t size) {
  std::mt19937 rng(7);
  for (int64_t i = 0; i < n; ++i) {
    const std::string dir = root + "/c" + std::to_string(i % 10);
    fs::create_directories(dir);
    DecodedImage img{size, size, 3, std::vector<uint8_t>(static_cast<size_t>(size * size * 3))};
    // Smooth content (a photo compresses like this more than like noise): a gradient plus noise.
    for (size_t k = 0; k < img.pixels.size(); ++k) img.pixels[k] = static_cast<uint8_t>((k / 3 % size) + rng() % 32);
    bulwark::atomic_write_file(dir + "/" + std::to_string(i) + ".png", bulwark::data::encode_png(img));
  }
  return root;
}

double time_load(const std::string& root, int threads, std::vector<int64_t> shape, bool on_disk) {
  bulwark::data::LoadOptions o;
  if (on_disk) o.max_memory_bytes = 1 << 20;
  o.threads = threads;
  o.progress = false;
  o.shape = std::move(shape);
  const auto t0 = std::chrono::steady_clock::now();
  const auto d = bulwark::data::load_dataset(root, bulwark::data::Split::kTest, o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(d.size()) / s;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n_small = argc > 1 ? std::atoll(argv[1]) : 5000;
  const int64_t n_large = argc > 2 ? std::atoll(argv[2]) : 500;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  const std::string tmp = fs::temp_directory_path() / ("bulwark-decode-" + std::to_string(::getpid()));
  const auto small = make_folder(tmp + "/s32", n_small, 32);
  const auto large = make_folder(tmp + "/s224", n_large, 224);
  const int all = bulwark::hardware_threads();
  std::printf("%-28s %8s %12s (best of %d)\n", "case", "threads", "images/s", rounds);
  struct Case {
    const char* name;
    std::string root;
    std::vector<int64_t> shape;
    bool on_disk;
  };
  for (const Case& c : {Case{"png 32x32", small, {}, false}, Case{"png 224x224", large, {}, false},
                        Case{"png 224x224 -> 3x32x32", large, {3, 32, 32}, false},
                        Case{"png 32x32 on disk", small, {3, 32, 32}, true},
                        Case{"png 224x224 on disk", large, {3, 224, 224}, true}}) {
    for (const int threads : {1, all}) {
      double best = 0;
      for (int r = 0; r < rounds; ++r) best = std::max(best, time_load(c.root, threads, c.shape, c.on_disk));
      std::printf("%-28s %8d %12.0f\n", c.name, threads, best);
    }
  }
  fs::remove_all(tmp);
  return 0;
}
