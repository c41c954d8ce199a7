// report/atlas.h — the MITRE ATLAS catalogue: techniques and mitigations as the vendored data file
// (third_party/atlas/ATLAS.yaml, embedded into the binary at build time) names and describes them,
// and which techniques each mitigation lists. Bulwark's code types only the IDs it maps; every
// name, description and mitigation-to-technique link shown in a threat report comes from here.
//
//   const auto& atlas = report::AtlasCatalog::embedded();
//   atlas.technique("AML.T0043")->name;              // "Craft Adversarial Data"
//   atlas.lists("AML.M0015", "AML.T0043");           // true: ATLAS names M0015 for T0043
//
// Thread-safety: immutable once built; embedded() builds its one copy on first use.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace bulwark::report {

struct AtlasTechnique {
  std::string id, name, description;
  std::string parent;  // "subtechnique-of": AML.T0024 for AML.T0024.000; empty for a technique
};

struct AtlasMitigation {
  std::string id, name, description;
  std::map<std::string, std::string> uses;  // technique id -> how ATLAS says it applies there
};

class AtlasCatalog {
 public:
  // Parses ATLAS.yaml text; throws data_format naming `source` and the entry on a malformed one.
  static AtlasCatalog parse(const std::string& yaml_text, const std::string& source);
  // The data embedded at build time (third_party/atlas/ATLAS.yaml).
  static const AtlasCatalog& embedded();

  const std::string& version() const { return version_; }        // the file's `version:` ("5.6.0")
  const AtlasTechnique* technique(const std::string& id) const;  // null when the data has no such ID
  const AtlasMitigation* mitigation(const std::string& id) const;
  // Whether ATLAS lists `mitigation_id` among the mitigations of `technique_id`.
  bool lists(const std::string& mitigation_id, const std::string& technique_id) const;
  // "AI Supply Chain Compromise: Data" for a sub-technique (parent's name first, as ATLAS shows it).
  std::string full_name(const std::string& technique_id) const;
  size_t technique_count() const { return techniques_.size(); }
  size_t mitigation_count() const { return mitigations_.size(); }

 private:
  std::string version_;
  std::map<std::string, AtlasTechnique> techniques_;
  std::map<std::string, AtlasMitigation> mitigations_;
};

// The first paragraph of an ATLAS description as plain text: markdown links "[text](/x)" become
// "text", so the page carries no link (and no URL) from the data.
std::string atlas_summary(const std::string& description);

}  // namespace bulwark::report
