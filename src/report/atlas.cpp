#include "report/atlas.h"

#include <yaml-cpp/yaml.h>

#include <regex>

#include "core/error.h"
#include "report/detail/assets.h"

namespace bulwark::report {
namespace {

std::string text_of(const YAML::Node& node, const char* key, const std::string& where, bool required = true) {
  const YAML::Node v = node[key];
  if (!v) {
    if (required) throw data_format(where + ": '" + key + "' is missing");
    return "";
  }
  if (!v.IsScalar()) throw data_format(where + ": '" + key + "' must be text");
  return v.as<std::string>();
}

}  // namespace

AtlasCatalog AtlasCatalog::parse(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw data_format(source + ": not YAML: " + e.what());
  }
  if (!root.IsMap()) throw data_format(source + ": expected a map with 'version' and 'matrices'");
  AtlasCatalog c;
  c.version_ = text_of(root, "version", source);
  const YAML::Node matrices = root["matrices"];
  if (!matrices || !matrices.IsSequence()) throw data_format(source + ": 'matrices' must be a list");
  try {
    for (size_t m = 0; m < matrices.size(); ++m) {
      const std::string mwhere = source + ": matrices[" + std::to_string(m) + "]";
      const YAML::Node techniques = matrices[m]["techniques"], mitigations = matrices[m]["mitigations"];
      if (!techniques || !techniques.IsSequence()) throw data_format(mwhere + ": 'techniques' must be a list");
      if (mitigations && !mitigations.IsSequence()) throw data_format(mwhere + ": 'mitigations' must be a list");
      for (size_t i = 0; i < techniques.size(); ++i) {
        const std::string where = mwhere + ".techniques[" + std::to_string(i) + "]";
        AtlasTechnique t;
        t.id = text_of(techniques[i], "id", where);
        t.name = text_of(techniques[i], "name", where + " (" + t.id + ")");
        t.description = text_of(techniques[i], "description", where + " (" + t.id + ")", false);
        t.parent = text_of(techniques[i], "subtechnique-of", where + " (" + t.id + ")", false);
        c.techniques_[t.id] = std::move(t);
      }
      for (size_t i = 0; mitigations && i < mitigations.size(); ++i) {
        const std::string where = mwhere + ".mitigations[" + std::to_string(i) + "]";
        AtlasMitigation x;
        x.id = text_of(mitigations[i], "id", where);
        x.name = text_of(mitigations[i], "name", where + " (" + x.id + ")");
        x.description = text_of(mitigations[i], "description", where + " (" + x.id + ")", false);
        const YAML::Node uses = mitigations[i]["techniques"];
        if (uses && !uses.IsSequence()) throw data_format(where + " (" + x.id + "): 'techniques' must be a list");
        for (size_t u = 0; uses && u < uses.size(); ++u) {
          const std::string uwhere = where + " (" + x.id + ").techniques[" + std::to_string(u) + "]";
          x.uses[text_of(uses[u], "id", uwhere)] = text_of(uses[u], "use", uwhere, false);
        }
        c.mitigations_[x.id] = std::move(x);
      }
    }
  } catch (const YAML::Exception& e) {  // a key or value yaml-cpp cannot read as text
    throw data_format(source + ": " + e.what());
  }
  if (c.techniques_.empty()) throw data_format(source + ": no techniques");
  return c;
}

const AtlasCatalog& AtlasCatalog::embedded() {
  static const AtlasCatalog catalog = parse(detail::kAtlasYaml, "the embedded ATLAS.yaml");
  return catalog;
}

const AtlasTechnique* AtlasCatalog::technique(const std::string& id) const {
  const auto it = techniques_.find(id);
  return it == techniques_.end() ? nullptr : &it->second;
}

const AtlasMitigation* AtlasCatalog::mitigation(const std::string& id) const {
  const auto it = mitigations_.find(id);
  return it == mitigations_.end() ? nullptr : &it->second;
}

bool AtlasCatalog::lists(const std::string& mitigation_id, const std::string& technique_id) const {
  const auto* m = mitigation(mitigation_id);
  return m != nullptr && m->uses.count(technique_id) > 0;
}

std::string AtlasCatalog::full_name(const std::string& technique_id) const {
  const auto* t = technique(technique_id);
  if (t == nullptr) return "";
  const auto* parent = t->parent.empty() ? nullptr : technique(t->parent);
  return parent != nullptr ? parent->name + ": " + t->name : t->name;
}

std::string atlas_summary(const std::string& description) {
  std::string first = description.substr(0, description.find("\n\n"));
  static const std::regex link(R"(\[([^\]]*)\]\([^)]*\))");
  first = std::regex_replace(first, link, "$1");
  static const std::regex url(R"(\b[a-zA-Z][a-zA-Z0-9+.-]*://\S*)");
  first = std::regex_replace(first, url, "");
  for (auto& ch : first) {
    if (ch == '\n') ch = ' ';
  }
  return first;
}

}  // namespace bulwark::report
