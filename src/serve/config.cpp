#include "serve/config.h"

#include "core/error.h"
#include "serve/detail/yaml.h"

namespace bulwark::serve {

std::vector<ConfigEntry> load_config_file(const std::string& path_in, const std::string& section) {
  const YAML::Node file = detail::load_yaml_file(path_in, "--config");
  const std::string path = section.empty() ? path_in : path_in + ": " + section;
  if (!section.empty() && (!file.IsMap() || !file[section])) {
    throw data_format(path_in + ": no '" + section + "' section");
  }
  const YAML::Node root = section.empty() ? file : file[section];  // copies share the node: no assignment
  if (root.IsNull()) return {};
  if (!root.IsMap()) throw data_format(path + ": expected a map of flag names to values");
  std::vector<ConfigEntry> out;
  try {
    for (const auto& kv : root) {
      ConfigEntry e;
      e.key = kv.first.as<std::string>();
      const auto& v = kv.second;
      const std::string where = path + ": " + e.key;
      if ((e.key == "model" || e.key == "calibration") && v.IsMap()) {
        for (const auto& m : v) {
          if (!m.second.IsScalar()) throw data_format(where + "." + m.first.as<std::string>() + " must be a path");
          e.values.push_back(m.first.as<std::string>() + "=" + m.second.as<std::string>());
        }
      } else if (v.IsSequence()) {
        for (const auto& item : v) {
          if (!item.IsScalar()) throw data_format(where + " must be a scalar or a list of scalars");
          e.values.push_back(item.as<std::string>());
        }
      } else if (v.IsScalar()) {
        e.values.push_back(v.as<std::string>());
      } else {
        throw data_format(where + " must be a scalar or a list of scalars");
      }
      out.push_back(std::move(e));
    }
  } catch (const YAML::Exception& e) {  // a key that is not a scalar, a value as<string> refuses
    throw data_format(path + ": " + e.what());
  }
  return out;
}

std::pair<std::string, std::string> parse_model_arg(const std::string& arg) {
  const auto eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size()) {
    throw invalid_argument("--model must be NAME=PATH, got '" + arg + "'");
  }
  return {arg.substr(0, eq), arg.substr(eq + 1)};
}

}  // namespace bulwark::serve
