// data/image_codec.h — PNG (libpng) and JPEG (libjpeg-turbo) decoding from memory, and the channel
// conversions PIL's Image.convert makes, so an image folder reads as torchvision's ImageFolder +
// ToTensor reads it. Every failure names the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bulwark::data {

// A decoded image: 8-bit samples, rows of width * channels bytes (HWC).
// channels: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA.
struct DecodedImage {
  int64_t height = 0;
  int64_t width = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;
};

// Largest image accepted, in pixels (a decompression bomb is refused before its rows are allocated).
constexpr int64_t kMaxImagePixels = int64_t{1} << 26;  // 64 Mpx, 8192 x 8192

enum class ImageFormat { kPng, kJpeg, kUnknown };

// By the file's magic bytes, not its name.
ImageFormat sniff_image_format(const std::string& bytes);

// Decodes `bytes` (PNG or JPEG, by magic). Palette and low-bit-depth PNGs are expanded to 8 bits,
// 16-bit samples keep their high byte (as PIL does for RGB), transparency becomes an alpha channel.
// `where` names the file in errors.
DecodedImage decode_image(const std::string& bytes, const std::string& where);

// To `channels` (1 or 3) as PIL's convert("L") / convert("RGB") do: alpha is dropped (not
// composited), gray is replicated, RGB to gray is ITU-R 601-2 luma in PIL's fixed point.
DecodedImage convert_channels(const DecodedImage& image, int channels);

// Encodes 8-bit gray/RGB/RGBA as PNG (tests and `bulwark` exports write image folders with it).
std::string encode_png(const DecodedImage& image);

}  // namespace bulwark::data
