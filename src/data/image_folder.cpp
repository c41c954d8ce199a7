#include "data/image_folder.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <exception>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "core/files.h"
#include "core/progress.h"
#include "core/system.h"
#include "data/disk_tensor.h"
#include "data/image_codec.h"

namespace bulwark::data {
namespace fs = std::filesystem;
namespace {

// Whether `name` ends with one of `extensions`, compared case-insensitively.
bool has_extension(const std::string& name, std::initializer_list<const char*> extensions) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* ext : extensions) {
    const std::string e = ext;
    if (lower.size() >= e.size() && lower.compare(lower.size() - e.size(), e.size(), e) == 0) return true;
  }
  return false;
}

bool decodable(const std::string& name) { return has_extension(name, {".png", ".jpg", ".jpeg"}); }

torch::Tensor to_chw(const DecodedImage& image) {
  return torch::from_blob(const_cast<uint8_t*>(image.pixels.data()), {image.height, image.width, image.channels},
                          torch::kUInt8)
      .permute({2, 0, 1})
      .clone(at::MemoryFormat::Contiguous);  // a copy: contiguous() returns the borrowed view for one channel
}

std::string size_text(const torch::Tensor& chw) {
  return std::to_string(chw.size(2)) + "x" + std::to_string(chw.size(1));
}

}  // namespace

bool has_image_extension(const std::string& name) {
  return has_extension(name, {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"});
}

ImageFolderScan scan_image_folder(const std::string& root) {
  if (!directory_exists(root)) throw not_found(root + ": no such directory");
  ImageFolderScan scan;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory()) scan.classes.push_back(entry.path().filename().string());
  }
  std::sort(scan.classes.begin(), scan.classes.end());
  if (scan.classes.empty()) {
    throw data_format(root + ": has no class folders (ImageFolder layout: " + root + "/<class>/<image>)");
  }
  for (size_t label = 0; label < scan.classes.size(); ++label) {
    const std::string class_dir = root + "/" + scan.classes[label];
    // os.walk(class_dir, followlinks=True), sorted by each folder's path, files sorted within it.
    std::vector<std::string> dirs{class_dir};
    for (auto it = fs::recursive_directory_iterator(class_dir, fs::directory_options::follow_directory_symlink);
         it != fs::recursive_directory_iterator(); ++it) {
      if (it.depth() > 32) throw data_format(class_dir + ": folders nested deeper than 32 levels (a link loop?)");
      if (it->is_directory()) dirs.push_back(it->path().string());
    }
    std::sort(dirs.begin(), dirs.end());
    int64_t found = 0;
    for (const auto& dir : dirs) {
      std::vector<std::string> names;
      for (const auto& entry : fs::directory_iterator(dir)) {
        if (!entry.is_directory()) names.push_back(entry.path().filename().string());
      }
      std::sort(names.begin(), names.end());
      for (const auto& name : names) {
        if (!has_image_extension(name)) {
          ++scan.ignored_files;
          continue;
        }
        scan.files.emplace_back(dir + "/" + name, static_cast<int64_t>(label));
        ++found;
      }
    }
    if (found == 0) {
      throw data_format(class_dir + ": class folder '" + scan.classes[label] + "' has no images (.png, .jpg, .jpeg)");
    }
  }
  return scan;
}

bool is_image_folder(const std::string& dir) {
  if (!directory_exists(dir)) return false;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_directory()) return true;
  }
  return false;
}

torch::Tensor resize_center_crop(const torch::Tensor& image, int64_t height, int64_t width) {
  const int64_t h = image.size(1), w = image.size(2);
  if (h == height && w == width) return image;
  // torchvision.transforms.functional.resize with an int size: the shorter side becomes `size`.
  const int64_t size = std::max(height, width);
  int64_t new_h = size, new_w = size;
  if (h < w) new_w = static_cast<int64_t>(static_cast<double>(size) * static_cast<double>(w) / static_cast<double>(h));
  if (w < h) new_h = static_cast<int64_t>(static_cast<double>(size) * static_cast<double>(h) / static_cast<double>(w));
  torch::Tensor x = image;
  if (new_h != h || new_w != w) {
    x = torch::nn::functional::interpolate(
            image.unsqueeze(0).to(torch::kFloat32),
            torch::nn::functional::InterpolateFuncOptions()
                .size(std::vector<int64_t>{new_h, new_w})
                .mode(torch::kBilinear)
                .align_corners(false)
                .antialias(true))
            .squeeze(0)
            .round_()
            .clamp_(0, 255)
            .to(torch::kUInt8);
  }
  // CenterCrop: top = int(round((h - H) / 2.0)), Python's round (half to even).
  const auto top = static_cast<int64_t>(std::nearbyint(static_cast<double>(new_h - height) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint(static_cast<double>(new_w - width) / 2.0));
  return x.narrow(1, top, height).narrow(2, left, width).contiguous();
}

Dataset read_image_folder(const std::string& root, const LoadOptions& options) {
  const ImageFolderScan scan = scan_image_folder(root);
  const bool sized = !options.shape.empty();
  const int channels = sized ? static_cast<int>(options.shape[0]) : 3;
  if (channels != 1 && channels != 3) {
    throw invalid_argument(root + ": image folders are read as 1 (gray) or 3 (RGB) channels; the model takes " +
                           std::to_string(channels));
  }
  const auto n = static_cast<int64_t>(scan.files.size());
  // Over the memory bound, the decoded images go to a scratch file (data/disk_tensor.h) as they are
  // decoded: each worker holds one image at a time. That needs the size, so only with a model's.
  torch::Tensor disk;
  int64_t decoded_bytes = n;
  for (const int64_t s : options.shape) {
    if (__builtin_mul_overflow(decoded_bytes, s, &decoded_bytes)) decoded_bytes = INT64_MAX;
  }
  if (sized && decoded_bytes > options.max_memory_bytes) {
    disk = disk_tensor({n, options.shape[0], options.shape[1], options.shape[2]},
                       root + ": " + std::to_string(n) + " images of " + std::to_string(options.shape[0]) + "x" +
                           std::to_string(options.shape[1]) + "x" + std::to_string(options.shape[2]));
  }
  const bool streamed = disk.defined();
  std::vector<torch::Tensor> images(static_cast<size_t>(n));
  std::vector<char> refused(static_cast<size_t>(n), 0);
  std::atomic<int64_t> next{0}, done{0}, held_bytes{0};
  std::atomic<bool> stop{false};
  std::mutex error_mutex;
  int64_t error_index = n;
  std::exception_ptr error;  // the first failing file's error, rethrown as it was (its kind decides the exit code)
  auto fail = [&](int64_t i, std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (i < error_index) {
      error_index = i;
      error = std::move(e);
    }
    stop = true;
  };
  auto work = [&] {
    for (int64_t i; !stop && (i = next++) < n;) {
      const std::string& path = scan.files[static_cast<size_t>(i)].first;
      try {
        if (!decodable(path)) throw data_format(path + ": Bulwark decodes PNG and JPEG images only");
        const DecodedImage img = convert_channels(decode_image(read_file(path), path), channels);
        torch::Tensor chw = to_chw(img);
        if (sized) chw = resize_center_crop(chw, options.shape[1], options.shape[2]);
        if (streamed) {
          disk[i].copy_(chw);
          ++done;
          continue;
        }
        if ((held_bytes += chw.numel()) > options.max_memory_bytes) {
          fail(i, std::make_exception_ptr(invalid_argument(root + ": the decoded images exceed the memory bound of " +
                                                           std::to_string(options.max_memory_bytes >> 20) +
                                                           " MiB (--max-memory); with a fixed size (a model, "
                                                           "or `train --input-shape`) they are held on disk")));
        }
        images[static_cast<size_t>(i)] = std::move(chw);
      } catch (const Error& e) {
        if (options.skip_bad && (e.kind() == ErrorKind::kDataFormat || e.kind() == ErrorKind::kIo)) {
          refused[static_cast<size_t>(i)] = 1;
        } else {
          fail(i, std::current_exception());
        }
      } catch (const std::exception& e) {
        fail(i, std::make_exception_ptr(internal_error(path + ": " + e.what())));
      }
      ++done;
    }
  };
  const int threads = static_cast<int>(std::clamp<int64_t>(
      options.threads > 0 ? options.threads : hardware_threads(), 1, std::max<int64_t>(n, 1)));
  {
    // Joins the workers however this scope ends (a thread that failed to start, a throwing bar).
    struct Pool {
      std::vector<std::thread> threads;
      std::atomic<bool>& stop;
      ~Pool() {
        if (std::any_of(threads.begin(), threads.end(), [](const std::thread& t) { return t.joinable(); })) {
          stop = true;
          for (auto& t : threads) {
            if (t.joinable()) t.join();
          }
        }
      }
    } pool{{}, stop};
    for (int t = 0; t < threads; ++t) pool.threads.emplace_back(work);
    ProgressBar bar("decode " + root, n, options.progress && n >= 5000);
    while (done < n && !stop) {
      bar.update(done);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (auto& t : pool.threads) t.join();
    if (!stop) bar.finish(std::to_string(n) + " images");
  }
  if (error) std::rethrow_exception(error);

  Dataset d;
  d.name = root;
  d.class_names = scan.classes;
  d.ignored_files = scan.ignored_files;
  std::vector<torch::Tensor> kept;
  std::vector<int64_t> labels;
  if (streamed) {
    // Refused files leave holes: the kept rows move down over them, in order.
    int64_t k = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (refused[static_cast<size_t>(i)]) {
        ++d.refused_files;
        continue;
      }
      if (k != i) disk[k].copy_(disk[i]);
      labels.push_back(scan.files[static_cast<size_t>(i)].second);
      ++k;
    }
    if (k == 0) throw data_format(root + ": no image decoded (" + std::to_string(d.refused_files) + " refused)");
    d.images = disk.narrow(0, 0, k);
    d.labels = torch::tensor(labels, torch::kInt64);
    return d;
  }
  int64_t first_kept = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (refused[static_cast<size_t>(i)]) {
      ++d.refused_files;
      continue;
    }
    const auto& img = images[static_cast<size_t>(i)];
    if (first_kept < 0) {
      first_kept = i;
    } else if (!img.sizes().equals(images[static_cast<size_t>(first_kept)].sizes())) {
      throw data_format(scan.files[static_cast<size_t>(i)].first + ": is " + size_text(img) + " but " +
                        scan.files[static_cast<size_t>(first_kept)].first + " is " +
                        size_text(images[static_cast<size_t>(first_kept)]) +
                        "; images of mixed sizes need the model's input size to resize to (give --model, or "
                        "resize the folder)");
    }
    kept.push_back(img);
    labels.push_back(scan.files[static_cast<size_t>(i)].second);
  }
  if (kept.empty()) throw data_format(root + ": no image decoded (" + std::to_string(d.refused_files) + " refused)");
  d.images = torch::stack(kept);
  d.labels = torch::tensor(labels, torch::kInt64);
  return d;
}

}  // namespace bulwark::data
