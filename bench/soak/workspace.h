// bench/soak/workspace.h — the soak's temp dir: the models it serves and swaps, the tokens file,
// and the server's command line over them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bulwark::soak {

struct Workspace {
  std::string dir;
  std::string infer_token, admin_token, limited_token;
  std::string live() const { return dir + "/good.pt"; }  // what --model names; SIGHUP swaps rewrite it
  std::string file(const std::string& name) const { return dir + "/" + name; }
};

// `model`: the good model's file, or "-" for a zoo cnn with weights from `seed`. Writes good-a.pt,
// good-b.pt (other bytes), the live copy, flaky.pt (throws on some inputs) and tokens.yaml.
Workspace make_workspace(const std::string& model, uint64_t seed);

// `bulwark serve`'s arguments: both models, the tokens, ephemeral ports and the settings in soak.h.
std::vector<std::string> server_args(const Workspace& w);

}  // namespace bulwark::soak
