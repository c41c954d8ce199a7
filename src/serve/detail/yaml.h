// serve/detail/yaml.h — private: reads a YAML file with errors that name the flag and the file.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

#include "core/error.h"

namespace bulwark::serve::detail {

inline YAML::Node load_yaml_file(const std::string& path, const std::string& flag) {
  try {
    return YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw not_found(flag + ": cannot read " + path);
  } catch (const YAML::Exception& e) {
    throw data_format(path + ": not valid YAML: " + e.what());
  }
}

}  // namespace bulwark::serve::detail
