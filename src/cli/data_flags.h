// cli/data_flags.h — the `--data` flags every command that reads a dataset shares, and loading it for
// a model: converted to (image folders) or checked against (tensor formats) the model's spec before
// any work, labels checked against its classes.
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "data/dataset.h"

namespace bulwark::model {
class Model;
}

namespace bulwark::cli {

struct DataFlags {
  std::string data = "fashion-mnist";
  bool skip_bad = false;
  std::string max_memory = "4G";
  bool augment = false, no_augment = false;  // training commands only (add_augment_options)
};

// --data, --skip-bad, --max-memory.
void add_data_options(CLI::App* cmd, DataFlags& flags);

// --augment / --no-augment (train, harden): random crop + flip, on by default for RGB data.
void add_augment_options(CLI::App* cmd, DataFlags& flags);
// Whether to augment a training set of `channels` channels.
bool augment_for(const DataFlags& flags, int64_t channels);

// "512M", "4G", "1000000" (bytes) -> bytes; errors name --max-memory.
int64_t parse_memory(const std::string& text);

// Options for a dataset read for `model` (its input shape), or as stored when `model` is null.
data::LoadOptions load_options(const DataFlags& flags, const model::Model* model, bool progress = true);

// Loads `split` for `model`; refuses data whose shape, label range or class names do not fit the
// model (data/classes.h), and prints to stderr how many files were ignored or refused.
data::Dataset load_for_model(const DataFlags& flags, data::Split split, const model::Model& model,
                             bool progress = true);

}  // namespace bulwark::cli
