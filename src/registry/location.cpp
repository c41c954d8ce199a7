#include "registry/location.h"

#include <cctype>
#include <vector>

#include "core/error.h"

namespace bulwark::registry {
namespace {

bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(const std::string& text, const std::string& where) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    const int hi = i + 2 < text.size() ? hex_value(text[i + 1]) : -1;
    const int lo = hi >= 0 ? hex_value(text[i + 2]) : -1;
    if (lo < 0) throw invalid_argument(where + ": bad percent-encoding in '" + text + "'");
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

// "postgresql://user:secret@host/db?password=x" -> "postgresql://user:***@host/db?password=***".
std::string redact_password(std::string url) {
  const size_t start = url.find("://") + 3;
  const size_t end = url.find_first_of("/?", start);
  const size_t at = url.rfind('@', end == std::string::npos ? url.size() : end);
  const size_t colon = url.find(':', start);
  if (at != std::string::npos && at >= start && colon < at) url = url.substr(0, colon + 1) + "***" + url.substr(at);
  for (size_t p = url.find("password=", url.find('?')); p != std::string::npos; p = url.find("password=", p + 1)) {
    if (url[p - 1] != '?' && url[p - 1] != '&') continue;
    const size_t value = p + 9;
    url.replace(value, url.find('&', value) == std::string::npos ? std::string::npos : url.find('&', value) - value,
                "***");
  }
  return url;
}

RegistryLocation parse_postgres(const std::string& text) {
  RegistryLocation loc;
  loc.backend = Backend::kPostgres;
  loc.display = redact_password(text);
  const size_t q = text.find('?');
  std::string base = text.substr(0, q);
  std::vector<std::string> kept;
  bool has_timeout = false;
  if (q != std::string::npos) {
    const std::string query = text.substr(q + 1);
    size_t start = 0;
    while (start <= query.size()) {
      size_t amp = query.find('&', start);
      if (amp == std::string::npos) amp = query.size();
      const std::string param = query.substr(start, amp - start);
      start = amp + 1;
      if (param.empty()) continue;
      if (starts_with(param, "dir=")) {
        loc.dir = percent_decode(param.substr(4), loc.display);
      } else {
        has_timeout = has_timeout || starts_with(param, "connect_timeout=");
        kept.push_back(param);
      }
    }
  }
  if (loc.dir.empty()) {
    throw invalid_argument("--registry " + loc.display +
                           ": add the shared registry directory as ?dir=/path (artifacts, trust list and the audit "
                           "log's key live there; every machine using this database must see the same directory)");
  }
  if (!has_timeout) kept.push_back("connect_timeout=10");
  loc.conninfo = base;
  for (size_t i = 0; i < kept.size(); ++i) loc.conninfo += (i == 0 ? "?" : "&") + kept[i];
  return loc;
}

}  // namespace

const char* to_string(Backend backend) { return backend == Backend::kPostgres ? "postgresql" : "sqlite"; }

RegistryLocation parse_location(const std::string& text) {
  if (text.empty()) throw invalid_argument("--registry: the value is empty (give a directory or a postgresql:// URL)");
  if (starts_with(text, "postgresql://") || starts_with(text, "postgres://")) return parse_postgres(text);
  const size_t scheme = text.find("://");
  if (scheme != std::string::npos && scheme > 0 && text.find('/') == scheme + 1) {
    throw invalid_argument("--registry " + text + ": unknown scheme '" + text.substr(0, scheme) +
                           "' (give a directory or a postgresql:// URL)");
  }
  RegistryLocation loc;
  loc.dir = text;
  loc.display = text;
  return loc;
}

}  // namespace bulwark::registry
