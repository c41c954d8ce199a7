// Helpers shared by the tests: temporary directories, IDX file writers, running commands.
#pragma once

#include <zlib.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <torch/types.h>

namespace bulwark::testing {

// A fresh directory under the system temp dir, removed when the object goes.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "bulwark-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes, bool gz = false) {
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
    return;
  }
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                             static_cast<std::streamsize>(bytes.size()));
}

// An IDX byte stream: magic 00 00 08 ndims, big-endian dims, then the payload.
inline std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& payload,
                                      uint8_t type = 0x08) {
  std::vector<uint8_t> out = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(d >> s));
  }
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

// Writes a small MNIST-layout dataset (train and t10k) of n images of h x w into dir.
inline void write_idx_dataset(const std::string& dir, uint32_t n, uint32_t h = 4, uint32_t w = 4, bool gz = true) {
  for (const std::string prefix : {"train", "t10k"}) {
    std::vector<uint8_t> pixels(n * h * w), labels(n);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 37 % 256);
    for (uint32_t i = 0; i < n; ++i) labels[i] = static_cast<uint8_t>(i % 10);
    const std::string ext = gz ? ".gz" : "";
    write_bytes(dir + "/" + prefix + "-images-idx3-ubyte" + ext, idx_bytes({n, h, w}, pixels), gz);
    write_bytes(dir + "/" + prefix + "-labels-idx1-ubyte" + ext, idx_bytes({n}, labels), gz);
  }
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& cmd) {
  CommandResult r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline void write_floats(const std::string& path, const torch::Tensor& t) {
  auto c = t.contiguous().to(torch::kFloat32);
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(c.data_ptr<float>()), static_cast<std::streamsize>(c.numel() * 4));
}

inline torch::Tensor read_floats(const std::string& path, std::vector<int64_t> shape) {
  auto t = torch::empty(shape, torch::kFloat32);
  std::ifstream(path, std::ios::binary)
      .read(reinterpret_cast<char*>(t.data_ptr<float>()), static_cast<std::streamsize>(t.numel() * 4));
  return t;
}

// Debian's PyTorch lives under /usr/bin/python3 (the python3 first on PATH may lack it).
constexpr const char* kPython = "/usr/bin/python3";

}  // namespace bulwark::testing
