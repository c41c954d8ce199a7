#include "cli/data_flags.h"

#include "data/disk_tensor.h"

#include <torch/torch.h>

#include <iostream>

#include "core/error.h"
#include "data/classes.h"
#include "model/model.h"

namespace bulwark::cli {
void add_data_options(CLI::App* cmd, DataFlags& flags) {
  cmd->add_option("--data", flags.data,
                  "fashion-mnist, an IDX directory, a CIFAR-10/100 binary directory or file, a .npz (x, y), or an "
                  "image folder (root/<class>/<image>, or root/{train,test|val}/...); docs/data.md")
      ->capture_default_str();
  cmd->add_flag("--skip-bad", flags.skip_bad,
                "Image folders: count files that do not decode (and say how many) instead of failing on the first");
  cmd->add_option("--max-memory", flags.max_memory,
                  "Bound on the decoded dataset in memory (e.g. 512M, 4G); an image folder over it is held in a "
                  "scratch file ($BULWARK_SCRATCH_DIR, $TMPDIR or /tmp)")
      ->capture_default_str();
}

void add_augment_options(CLI::App* cmd, DataFlags& flags) {
  auto* on = cmd->add_flag("--augment", flags.augment,
                           "Random crop (padding 4) + horizontal flip of training batches (default: on for RGB data)");
  auto* off = cmd->add_flag("--no-augment", flags.no_augment, "No augmentation, also for RGB data");
  on->excludes(off);
}

bool augment_for(const DataFlags& flags, int64_t channels) {
  if (flags.augment) return true;
  if (flags.no_augment) return false;
  return channels == 3;
}

int64_t parse_memory(const std::string& text) {
  if (text.empty()) throw invalid_argument("--max-memory is empty (e.g. 512M, 4G)");
  int64_t unit = 1;
  std::string digits = text;
  switch (text.back()) {
    case 'K': case 'k': unit = int64_t{1} << 10; digits.pop_back(); break;
    case 'M': case 'm': unit = int64_t{1} << 20; digits.pop_back(); break;
    case 'G': case 'g': unit = int64_t{1} << 30; digits.pop_back(); break;
    default: break;
  }
  if (digits.empty() || digits.size() > 12 || digits.find_first_not_of("0123456789") != std::string::npos) {
    throw invalid_argument("--max-memory '" + text + "' must be a whole number of bytes, or with K, M or G");
  }
  const int64_t v = std::stoll(digits);
  if (v <= 0 || v > (int64_t{1} << 50) / unit) {
    throw invalid_argument("--max-memory '" + text + "' must be between 1 byte and 1 PiB");
  }
  return v * unit;
}

data::LoadOptions load_options(const DataFlags& flags, const model::Model* model, bool progress) {
  data::LoadOptions o;
  if (model != nullptr) o.shape = model->spec().input_shape;
  o.skip_bad = flags.skip_bad;
  o.max_memory_bytes = parse_memory(flags.max_memory);
  o.progress = progress;
  return o;
}

data::Dataset load_for_model(const DataFlags& flags, data::Split split, const model::Model& model, bool progress) {
  auto d = data::load_dataset(flags.data, split, load_options(flags, &model, progress));
  data::check_classes(d, model.spec().class_names);
  if (d.ignored_files > 0) {
    std::cerr << "note: " << d.name << ": " << d.ignored_files
              << " files without an image extension are not part of the set (as torchvision's ImageFolder)\n";
  }
  if (d.on_disk()) {
    std::cerr << "note: " << d.name << ": " << d.size() << " images are over --max-memory and are held in a scratch "
              << "file in " << data::scratch_dir() << " (docs/data.md)\n";
  }
  if (d.refused_files > 0) {
    std::cerr << "note: " << d.name << ": " << d.refused_files << " files did not decode and were left out (--skip-bad)\n";
  }
  return d;
}

}  // namespace bulwark::cli
