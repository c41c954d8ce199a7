// serve/config.h — `bulwark serve --config serve.yaml`: a YAML map whose keys are the command's
// flag names without dashes, so every flag is settable there and nothing has two names:
//   http-port: 8000
//   max-batch: 32
//   model: {fashion: build/demo/baseline.pt}   # or a list of NAME=PATH strings
//   tokens: deploy/tokens.yaml
//   calibration: {fashion: build/demo/baseline.detect}   # NAME=FILE, like model
//   stateful: block
//   extraction: block                                   # and extraction-delta, extraction-confidence, ...
// Flags given on the command line win over the file.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace bulwark::serve {

struct ConfigEntry {
  std::string key;                  // flag name without the leading "--"
  std::vector<std::string> values;  // one per occurrence (lists give several)
};

// Throws naming the file and key: unreadable file, not a map, nested values, "model" not a map/list.
// `section` non-empty: the flags are the map under that top-level key (guard.yaml's `serve:`), and
// the file's other keys are someone else's.
std::vector<ConfigEntry> load_config_file(const std::string& path, const std::string& section = "");

// "NAME=PATH" -> {NAME, PATH}; throws invalid_argument naming --model.
std::pair<std::string, std::string> parse_model_arg(const std::string& arg);

}  // namespace bulwark::serve
