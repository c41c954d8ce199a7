// registry/objects.h — the registry's artifact store: files addressed by their SHA-256 under
// <dir>/objects/sha256/<first two hex>/<hex>, made read-only. A put copies into objects/tmp,
// fsyncs, renames into place and fsyncs the directory, so an object path either does not exist or
// holds every byte of its content; a crash leaves at most a temp file, which gc removes.
//
// Thread-safety: stateless apart from the directory; concurrent puts of the same content are safe
// (the rename is atomic and both write the same bytes).
#pragma once

#include <cstdint>
#include <set>
#include <string>

namespace bulwark::registry {

class ObjectStore {
 public:
  // Throws not_found naming <dir>/objects when it is missing.
  explicit ObjectStore(std::string registry_dir);
  static void create(const std::string& registry_dir);

  // Copies `path` in; returns its SHA-256 (hex). Throws not_found / io_error naming the path.
  std::string put(const std::string& path) const;
  std::string path_of(const std::string& sha256_hex) const;
  bool has(const std::string& sha256_hex) const;

  struct GcResult {
    int64_t removed_objects = 0, removed_temp = 0, bytes_freed = 0;
  };
  // Removes objects not in `keep` and the temp files of writers that are gone. Call it under the
  // registry's write lock, so no registration between its put and its commit loses its object.
  GcResult gc(const std::set<std::string>& keep, bool dry_run) const;

 private:
  std::string root_;
};

}  // namespace bulwark::registry
