#include "control/manifest.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <functional>
#include <regex>
#include <sstream>

#include "core/error.h"

namespace bulwark::control {
namespace {

// A variable's NAME, ^[A-Z][A-Z0-9_]*$, with Python's `$`, which also matches before one final "\n".
bool is_name(std::string s) {
  if (!s.empty() && s.back() == '\n') s.pop_back();
  if (s.empty() || s[0] < 'A' || s[0] > 'Z') return false;
  for (const char c : s) {
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

// Python's repr() of a str, for the messages that print a list of names.
std::string py_repr(const std::string& s) {
  const char quote = s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
  std::string out(1, quote);
  for (const unsigned char c : s) {
    if (c == '\\' || c == quote) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + quote;
}

std::string py_list(const std::set<std::string>& names) {
  std::string out = "[";
  for (const auto& n : names) out += (out.size() > 1 ? ", " : "") + py_repr(n);
  return out + "]";
}

// One match of PLACEHOLDER (the pattern deploy/render.py used), \$(\$?)\{([^}]*)\}.
struct Placeholder {
  size_t begin = 0, end = 0;  // [begin, end) in the text
  bool escaped = false;       // $${...}
  std::string name;
};

// The matches left to right, as re.finditer finds them.
std::vector<Placeholder> find_placeholders(const std::string& text) {
  std::vector<Placeholder> out;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '$') {
      ++i;
      continue;
    }
    // Greedy `\$?` first, then without it (the regex backtracks the same way).
    for (const bool escaped : {true, false}) {
      const size_t brace = i + (escaped ? 2 : 1);
      if (escaped && (i + 1 >= text.size() || text[i + 1] != '$')) continue;
      if (brace >= text.size() || text[brace] != '{') continue;
      const size_t close = text.find('}', brace + 1);
      if (close == std::string::npos) continue;
      out.push_back({i, close + 1, escaped, text.substr(brace + 1, close - brace - 1)});
      break;
    }
    i = !out.empty() && out.back().begin == i ? out.back().end : i + 1;
  }
  return out;
}

// Whether PyYAML's safe_load reads this scalar as a str: quoted always; plain unless YAML 1.1's
// implicit resolvers make it a bool, int, float, null, timestamp, merge key or value.
bool is_yaml_string(const YAML::Node& node) {
  if (!node.IsScalar()) return false;
  if (node.Tag() != "?") return node.Tag() == "!" || node.Tag() == "tag:yaml.org,2002:str";
  static const std::regex kImplicit(
      "yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"  // bool
      "|[-+]?[0-9][0-9_]*\\.[0-9_]*([eE][-+][0-9]+)?|\\.[0-9][0-9_]*([eE][-+][0-9]+)?"
      "|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\\.[0-9_]*|[-+]?\\.(inf|Inf|INF)|\\.(nan|NaN|NAN)"  // float
      "|[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
      "|[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+"  // int
      "|<<|~|null|Null|NULL|=|"            // merge, null, value
      "|[0-9]{4}-[0-9]{2}-[0-9]{2}"
      "|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt]|[ \\t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\\.[0-9]*)?"
      "([ \\t]*(Z|[-+][0-9]{1,2}(:[0-9]{2})?))?");  // timestamp
  return !std::regex_match(node.Scalar(), kImplicit);
}

// Python's open() in text mode: universal newlines.
std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw not_found("[Errno 2] No such file or directory: " + py_repr(path));
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string raw = ss.str();
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\r') {
      out += '\n';
      if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
    } else {
      out += raw[i];
    }
  }
  return out;
}

std::string strip_newlines(const std::string& s) {
  const auto b = s.find_first_not_of('\n');
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of('\n') - b + 1);
}

}  // namespace

TemplateVariables load_template_variables(const std::string& path) {
  YAML::Node doc;
  try {
    doc = YAML::Load(read_text(path));
  } catch (const YAML::Exception& e) {
    throw invalid_argument(path + ": " + e.what());
  }
  const YAML::Node vars = doc.IsMap() ? doc["variables"] : YAML::Node();
  if (!vars || !vars.IsMap() || vars.size() == 0) throw invalid_argument(path + ": needs a non-empty 'variables' map");
  TemplateVariables out;
  for (const auto& kv : vars) {
    const auto name = kv.first.Scalar();
    const YAML::Node spec = kv.second;
    if (!is_name(name)) throw invalid_argument(path + ": variable name '" + name + "' is not UPPER_SNAKE_CASE");
    if (!spec.IsMap() || !spec["description"] || !is_yaml_string(spec["description"])) {
      throw invalid_argument(path + ": " + name + " needs a description");
    }
    std::set<std::string> unknown;
    for (const auto& k : spec) {
      const auto key = k.first.Scalar();
      if (key != "default" && key != "sample" && key != "description") unknown.insert(key);
    }
    if (!unknown.empty()) throw invalid_argument(path + ": " + name + ": unknown keys " + py_list(unknown));
    if (static_cast<bool>(spec["default"]) == static_cast<bool>(spec["sample"])) {
      throw invalid_argument(path + ": " + name + " needs exactly one of default (optional) or sample (required)");
    }
    TemplateVariable v;
    v.description = spec["description"].Scalar();
    for (const char* key : {"default", "sample"}) {
      if (!spec[key]) continue;
      if (!is_yaml_string(spec[key])) {
        throw invalid_argument(path + ": " + name + "." + key + " must be a string (quote numbers)");
      }
      (std::string(key) == "default" ? v.default_value : v.sample) = spec[key].Scalar();
    }
    out[name] = v;
  }
  return out;
}

std::set<std::string> template_placeholders(const std::string& text) {
  std::set<std::string> out;
  for (const auto& p : find_placeholders(text)) {
    if (!p.escaped) out.insert(p.name);
  }
  return out;
}

std::string substitute_placeholders(const std::string& text, const TemplateValues& values, const std::string& where) {
  std::string out;
  size_t at = 0;
  for (const auto& p : find_placeholders(text)) {
    out.append(text, at, p.begin - at);
    at = p.end;
    if (p.escaped) {
      out += "${" + p.name + "}";
      continue;
    }
    if (!is_name(p.name)) throw invalid_argument(where + ": malformed placeholder '${" + p.name + "}'");
    const auto it = values.find(p.name);
    if (it == values.end()) {
      throw invalid_argument(where + ": unknown placeholder ${" + p.name + "} (declare it in deploy/variables.yaml)");
    }
    out += it->second;
  }
  out.append(text, at, std::string::npos);
  return out;
}

TemplateValues resolve_template_values(const TemplateVariables& variables, const TemplateValues& given, bool use_samples,
                                       const std::set<std::string>* needed) {
  std::set<std::string> unknown;
  for (const auto& kv : given) {
    if (!variables.count(kv.first)) unknown.insert(kv.first);
  }
  if (!unknown.empty()) throw invalid_argument("unknown variables " + py_list(unknown) + " (see deploy/variables.yaml)");
  TemplateValues values;
  std::function<void(const std::string&, std::vector<std::string>)> value = [&](const std::string& name,
                                                                                std::vector<std::string> chain) {
    if (values.count(name)) return;
    if (std::find(chain.begin(), chain.end(), name) != chain.end()) {
      std::string loop;
      for (const auto& c : chain) loop += c + " -> ";
      throw invalid_argument("variables refer to each other in a loop: " + loop + name);
    }
    const auto spec = variables.find(name);
    if (spec == variables.end()) {
      throw invalid_argument("unknown placeholder ${" + name + "} in the default of " + chain.back());
    }
    std::string text;
    if (given.count(name)) {
      text = given.at(name);
    } else if (spec->second.default_value) {
      text = *spec->second.default_value;
    } else if (use_samples) {
      text = *spec->second.sample;
    } else {
      throw invalid_argument(name + " is required: " + spec->second.description + " (--set " + name + "=...)");
    }
    chain.push_back(name);
    for (const auto& ref : template_placeholders(text)) value(ref, chain);
    values[name] = substitute_placeholders(text, values, "variable " + name);
  };
  std::set<std::string> all;
  if (!needed) {
    for (const auto& kv : variables) all.insert(kv.first);
  }
  for (const auto& name : needed ? *needed : all) {
    if (variables.count(name)) value(name, {});  // an undeclared one is reported with its file
  }
  return values;
}

std::string render_manifests(const std::string& variables_file, const std::vector<std::string>& files,
                             const TemplateValues& given, bool use_samples) {
  const auto variables = load_template_variables(variables_file);
  std::vector<std::pair<std::string, std::string>> texts;  // a file named twice is rendered once, as a dict keeps it
  std::set<std::string> needed;
  for (const auto& path : files) {
    const auto text = read_text(path);
    const auto seen = std::find_if(texts.begin(), texts.end(), [&path](const auto& t) { return t.first == path; });
    if (seen == texts.end()) texts.emplace_back(path, text);
    const auto names = template_placeholders(text);
    needed.insert(names.begin(), names.end());
  }
  const auto values = resolve_template_values(variables, given, use_samples, &needed);
  std::string out;
  for (size_t i = 0; i < texts.size(); ++i) {
    if (i > 0) out += "\n---\n";
    out += strip_newlines(substitute_placeholders(texts[i].second, values, texts[i].first));
  }
  return out + "\n";
}

std::string pin_image_digest(const std::string& image, const std::string& digest) {
  static const std::regex kDigest("sha256:[0-9a-f]{64}");
  if (!std::regex_match(digest, kDigest)) {
    throw invalid_argument("image digest '" + digest.substr(0, 80) + "': expected sha256: and 64 lower-case hex digits");
  }
  std::string repo = image.substr(0, image.find('@'));
  const auto colon = repo.rfind(':');
  const auto slash = repo.rfind('/');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) repo.resize(colon);  // the tag
  if (repo.empty() || repo.back() == '/') throw invalid_argument("image '" + image + "' names no repository to pin");
  return repo + "@" + digest;
}

}  // namespace bulwark::control
