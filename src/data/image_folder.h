// data/image_folder.h — torchvision's ImageFolder layout (root/<class>/<file>): classes are the
// sub-folders sorted by name, each class's files found as torchvision finds them (os.walk sorted,
// nested folders included, files sorted), decoded in parallel (data/image_codec.h).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "data/dataset.h"

namespace bulwark::data {

struct ImageFolderScan {
  std::vector<std::string> classes;                   // index = label
  std::vector<std::pair<std::string, int64_t>> files;  // path, label; torchvision's order
  int64_t ignored_files = 0;                           // no image extension: not part of the set
};

// The extensions torchvision's ImageFolder takes (IMG_EXTENSIONS), compared case-insensitively.
// Bulwark decodes PNG and JPEG; a file with another of them (.bmp, .webp, ...) is a bad file.
bool has_image_extension(const std::string& name);

// Lists `root` in torchvision's order. A root with no class folder, or a class with no image, is an
// error naming it.
ImageFolderScan scan_image_folder(const std::string& root);

// Whether `dir` looks like one ImageFolder split: at least one sub-folder, no IDX/CIFAR/.npz files.
bool is_image_folder(const std::string& dir);

// Reads the images: converted to options.shape[0] channels (3 when no shape is given, as
// torchvision's default loader converts to RGB), resized + centre-cropped to the shape's H, W when
// given (resize_center_crop), else all of one size. Bad files are errors naming the file, or counted
// with options.skip_bad.
Dataset read_image_folder(const std::string& root, const LoadOptions& options);

// uint8 [C, h, w] -> uint8 [C, H, W]: torchvision's Resize(max(H, W)) (the shorter side to that
// size, the longer side scaled and truncated, bilinear with antialias, rounded half to even) then
// CenterCrop((H, W)); unchanged when already H x W.
torch::Tensor resize_center_crop(const torch::Tensor& image, int64_t height, int64_t width);

}  // namespace bulwark::data
