#include "data/npz.h"

#include <zip.h>

#include <torch/torch.h>

#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/files.h"

namespace bulwark::data {
namespace {

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
using ZipPtr = std::unique_ptr<zip_t, ZipCloser>;

ZipPtr open_zip(const std::string& path) {
  if (!file_exists(path)) throw not_found(path + ": no such .npz file");
  int error = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_RDONLY, &error);
  if (z == nullptr) {
    zip_error_t e;
    zip_error_init_with_code(&e, error);
    const std::string why = zip_error_strerror(&e);
    zip_error_fini(&e);
    throw data_format(path + ": not a readable .npz (zip) archive: " + why);
  }
  return ZipPtr(z);
}

// The value text after `'key':` in a .npy header dict.
std::string header_field(const std::string& header, const std::string& key, const std::string& where) {
  const auto at = header.find("'" + key + "'");
  if (at == std::string::npos) throw data_format(where + ": .npy header has no '" + key + "'");
  auto colon = header.find(':', at);
  if (colon == std::string::npos) throw data_format(where + ": .npy header is malformed");
  auto start = header.find_first_not_of(' ', colon + 1);
  if (start == std::string::npos) throw data_format(where + ": .npy header is malformed");
  if (header[start] == '(') {
    const auto end = header.find(')', start);
    if (end == std::string::npos) throw data_format(where + ": .npy header shape is malformed");
    return header.substr(start, end - start + 1);
  }
  if (header[start] == '\'') {
    const auto end = header.find('\'', start + 1);
    if (end == std::string::npos) throw data_format(where + ": .npy header is malformed");
    return header.substr(start + 1, end - start - 1);
  }
  const auto end = header.find_first_of(",}", start);
  return header.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

int64_t dtype_size(const std::string& dtype) {
  if (dtype.size() < 3) return 0;
  const char kind = dtype[1];
  if (kind != 'u' && kind != 'i' && kind != 'f' && kind != 'b') return 0;
  const std::string digits = dtype.substr(2);
  if (digits != "1" && digits != "2" && digits != "4" && digits != "8") return 0;
  return std::stoll(digits);
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

}  // namespace

NpyArray parse_npy(const std::string& bytes, const std::string& where) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0) {
    throw data_format(where + ": not a .npy array (no \\x93NUMPY magic)");
  }
  const auto major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw data_format(where + ": .npy header is truncated");
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    throw data_format(where + ": .npy format version " + std::to_string(major) + " is not supported (1-3)");
  }
  if (header_len > 1 << 20 || offset + header_len > bytes.size()) throw data_format(where + ": .npy header is truncated");
  const std::string header = bytes.substr(offset, header_len);
  NpyArray a;
  a.dtype = header_field(header, "descr", where);
  if (header_field(header, "fortran_order", where) != "False") {
    throw data_format(where + ": is in Fortran order; save it with numpy.ascontiguousarray first");
  }
  const std::string shape = header_field(header, "shape", where);
  std::string digits;
  for (size_t i = 1; i < shape.size(); ++i) {
    const char c = shape[i];
    if (c >= '0' && c <= '9') {
      digits.push_back(c);
    } else if (c == ',' || c == ')') {
      if (!digits.empty()) {
        if (digits.size() > 12) throw data_format(where + ": .npy shape is too large");
        a.shape.push_back(std::stoll(digits));
        digits.clear();
      }
    } else if (c != ' ' && c != 'L') {
      throw data_format(where + ": .npy shape " + shape + " is malformed");
    }
  }
  const int64_t item = dtype_size(a.dtype);
  if (item == 0 || (a.dtype[0] == '>' && item > 1)) {
    throw data_format(where + ": dtype '" + a.dtype + "' is not supported (little-endian numbers only)");
  }
  int64_t count = 1;
  for (const int64_t d : a.shape) {
    if (d < 0 || (d > 0 && count > (int64_t{1} << 40) / d)) throw data_format(where + ": .npy shape is too large");
    count *= d;
  }
  const auto payload = static_cast<int64_t>(bytes.size() - offset - header_len);
  if (payload != count * item) {
    throw data_format(where + ": holds " + std::to_string(payload) + " bytes of data, shape " + shape_text(a.shape) +
                      " of '" + a.dtype + "' needs " + std::to_string(count * item));
  }
  a.bytes = bytes.substr(offset + header_len);
  return a;
}

std::vector<std::string> npz_array_names(const std::string& path) {
  auto z = open_zip(path);
  std::vector<std::string> names;
  const zip_int64_t n = zip_get_num_entries(z.get(), 0);
  for (zip_int64_t i = 0; i < n; ++i) {
    const char* raw = zip_get_name(z.get(), static_cast<zip_uint64_t>(i), 0);
    if (raw == nullptr) throw data_format(path + ": a zip entry has no readable name");
    std::string name = raw;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0) names.push_back(name.substr(0, name.size() - 4));
  }
  return names;
}

NpyArray read_npz_array(const std::string& path, const std::string& name, int64_t max_bytes) {
  auto z = open_zip(path);
  const std::string where = path + ": array '" + name + "'";
  const zip_int64_t index = zip_name_locate(z.get(), (name + ".npy").c_str(), 0);
  if (index < 0) throw data_format(path + ": has no array '" + name + "'");
  zip_stat_t st;
  if (zip_stat_index(z.get(), static_cast<zip_uint64_t>(index), 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
    throw data_format(where + ": size unknown");
  }
  if (max_bytes < 0 || st.size > static_cast<zip_uint64_t>(max_bytes)) {
    throw invalid_argument(where + ": " + std::to_string(st.size) + " bytes exceed the memory bound of " +
                           std::to_string(max_bytes) + " bytes (--max-memory)");
  }
  zip_file_t* f = zip_fopen_index(z.get(), static_cast<zip_uint64_t>(index), 0);
  if (f == nullptr) throw data_format(where + ": cannot be opened (" + std::string(zip_strerror(z.get())) + ")");
  // Read in chunks as the data arrives: a declared size is a claim, not an allocation.
  std::string bytes;
  char chunk[1 << 16];
  for (;;) {
    const zip_int64_t got = zip_fread(f, chunk, sizeof chunk);
    if (got < 0) {
      zip_fclose(f);
      throw data_format(where + ": is corrupt (" + std::string(zip_strerror(z.get())) + ")");
    }
    if (got == 0) break;
    if (bytes.size() + static_cast<size_t>(got) > st.size) {
      zip_fclose(f);
      throw data_format(where + ": holds more bytes than its zip entry declares");
    }
    bytes.append(chunk, static_cast<size_t>(got));
  }
  zip_fclose(f);
  if (bytes.size() != st.size) throw data_format(where + ": is truncated or corrupt");
  return parse_npy(bytes, where);
}

void write_npz(const std::string& path, const torch::Tensor& x, const torch::Tensor& y) {
  auto npy = [](const std::string& dtype, at::IntArrayRef shape, const void* data, size_t n) {
    std::string dims;  // Python's tuple repr: "(3, 4)", "(5,)"
    for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
    if (shape.size() == 1) dims += ",";
    std::string header = "{'descr': '" + dtype + "', 'fortran_order': False, 'shape': (" + dims + "), }";
    while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
    header.push_back('\n');
    std::string out("\x93NUMPY\x01\x00", 8);
    out.push_back(static_cast<char>(header.size() & 0xff));
    out.push_back(static_cast<char>(header.size() >> 8));
    return out + header + std::string(static_cast<const char*>(data), n);
  };
  const auto xs = x.to(torch::kUInt8).contiguous();
  const auto ys = y.to(torch::kInt64).contiguous();
  const std::string xb = npy("|u1", xs.sizes(), xs.data_ptr(), static_cast<size_t>(xs.numel()));
  const std::string yb = npy("<i8", ys.sizes(), ys.data_ptr(), static_cast<size_t>(ys.numel()) * 8);
  const std::string tmp = path + ".tmp";
  int error = 0;
  zip_t* z = zip_open(tmp.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
  if (z == nullptr) throw io_error(tmp + ": cannot create");
  for (const auto& [name, bytes] : {std::pair<std::string, const std::string*>{"x.npy", &xb}, {"y.npy", &yb}}) {
    zip_source_t* src = zip_source_buffer(z, bytes->data(), bytes->size(), 0);
    if (src == nullptr || zip_file_add(z, name.c_str(), src, ZIP_FL_OVERWRITE) < 0) {
      if (src != nullptr) zip_source_free(src);
      zip_discard(z);
      throw io_error(tmp + ": cannot add " + name);
    }
  }
  if (zip_close(z) != 0) {
    zip_discard(z);
    throw io_error(tmp + ": cannot write");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw io_error(path + ": cannot rename into place");
}

torch::Tensor npy_images(const NpyArray& a, const std::string& where) {
  if (a.dtype != "|u1") {
    throw data_format(where + ": images must be uint8 ('|u1'), got '" + a.dtype +
                      "' (convert with (x * 255).round().astype(numpy.uint8) for floats in [0, 1])");
  }
  std::vector<int64_t> s = a.shape;
  if (s.size() == 3) s.push_back(1);  // [N, H, W]: one channel, channels last
  if (s.size() != 4 || s[0] == 0) {
    throw data_format(where + ": images must be [N, H, W, C] or [N, C, H, W], got " + shape_text(a.shape));
  }
  auto is_c = [](int64_t c) { return c == 1 || c == 3 || c == 4; };
  const bool last = is_c(s[3]), first = is_c(s[1]);
  if (last && first && a.shape.size() == 4) {
    throw data_format(where + ": shape " + shape_text(a.shape) +
                      " reads as both [N, H, W, C] and [N, C, H, W]; save it as [N, C, H, W] with a spatial size "
                      "that is not 1, 3 or 4, or as [N, H, W, C] with numpy.transpose");
  }
  if (!last && !first) {
    throw data_format(where + ": shape " + shape_text(a.shape) + " has no channel axis of 1, 3 or 4");
  }
  auto t = torch::from_blob(const_cast<char*>(a.bytes.data()), s, torch::kUInt8).clone();
  if (last) t = t.permute({0, 3, 1, 2}).contiguous();
  if (t.size(1) == 4) {
    throw data_format(where + ": 4-channel (RGBA) arrays are not converted; drop alpha with x[..., :3]");
  }
  return t;
}

torch::Tensor npy_labels(const NpyArray& a, const std::string& where) {
  if (a.shape.size() != 1) throw data_format(where + ": labels must be [N], got " + shape_text(a.shape));
  const std::string& d = a.dtype;
  const int64_t n = a.shape[0];
  auto* p = const_cast<char*>(a.bytes.data());
  torch::Tensor t;
  if (d == "|u1") t = torch::from_blob(p, {n}, torch::kUInt8);
  else if (d == "|i1") t = torch::from_blob(p, {n}, torch::kInt8);
  else if (d == "<i2") t = torch::from_blob(p, {n}, torch::kInt16);
  else if (d == "<i4") t = torch::from_blob(p, {n}, torch::kInt32);
  else if (d == "<i8") t = torch::from_blob(p, {n}, torch::kInt64);
  else if (d == "<u2" || d == "<u4" || d == "<u8") {
    const int64_t item = dtype_size(d);
    std::vector<int64_t> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      uint64_t x = 0;
      std::memcpy(&x, p + i * item, static_cast<size_t>(item));
      if (x > static_cast<uint64_t>(INT64_MAX)) throw data_format(where + ": label at index " + std::to_string(i) + " is too large");
      v[static_cast<size_t>(i)] = static_cast<int64_t>(x);
    }
    return torch::tensor(v, torch::kInt64);
  } else {
    throw data_format(where + ": labels must be integers, got dtype '" + d + "'");
  }
  return t.to(torch::kInt64, /*non_blocking=*/false, /*copy=*/true);  // never a view of the file's bytes
}

}  // namespace bulwark::data
