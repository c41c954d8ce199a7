#include "data/image_codec.h"

#include <png.h>
// jpeglib.h needs FILE and size_t declared before it.
#include <cstdio>
#include <jpeglib.h>
#include <jerror.h>

#include <csetjmp>
#include <cstring>
#include <memory>

#include "core/error.h"

namespace bulwark::data {
namespace {

// ---- PNG -------------------------------------------------------------------------------------

struct PngSource {
  const std::string* bytes;
  size_t offset;
};

struct PngErrorState {
  std::string message;
};

void png_read_from_memory(png_structp png, png_bytep out, png_size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (src->offset + n > src->bytes->size()) png_error(png, "file is truncated");
  std::memcpy(out, src->bytes->data() + src->offset, n);
  src->offset += n;
}

void png_on_error(png_structp png, png_const_charp message) {
  static_cast<PngErrorState*>(png_get_error_ptr(png))->message = message;
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}  // benign chunks (bad iCCP, ...) as PIL ignores them

DecodedImage decode_png(const std::string& bytes, const std::string& where) {
  PngErrorState err;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
  if (png == nullptr) throw internal_error(where + ": libpng could not start");
  png_infop info = png_create_info_struct(png);
  DecodedImage image;
  std::vector<png_bytep> rows;
  PngSource src{&bytes, 0};
  // Nothing with a destructor may be created between setjmp and a longjmp back to it.
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw data_format(where + ": not a valid PNG (" + err.message + ")");
  }
  png_set_read_fn(png, &src, png_read_from_memory);
  png_set_user_limits(png, 1 << 16, 1 << 16);
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  if (static_cast<int64_t>(width) * height > kMaxImagePixels) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw data_format(where + ": " + std::to_string(width) + "x" + std::to_string(height) +
                      " pixels exceed the limit of " + std::to_string(kMaxImagePixels));
  }
  // 16-bit gray without alpha: PIL reads it as 16-bit integers and its conversions to L/RGB clip
  // at 255; everything else 16-bit keeps its high byte, as PIL's RGB/LA modes do.
  const bool gray16 = png_get_bit_depth(png, info) == 16 && png_get_color_type(png, info) == PNG_COLOR_TYPE_GRAY &&
                      !png_get_valid(png, info, PNG_INFO_tRNS);
  png_set_expand(png);  // palette -> RGB, gray < 8 bits -> 8 bits, tRNS -> alpha
  if (gray16) {
    png_set_swap(png);  // little-endian samples in memory
  } else {
    png_set_strip_16(png);
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  image.width = width;
  image.height = height;
  image.channels = png_get_channels(png, info);
  const size_t sample = gray16 ? 2 : 1;
  image.pixels.resize(static_cast<size_t>(width) * height * static_cast<size_t>(image.channels) * sample);
  rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) {
    rows[y] = image.pixels.data() + static_cast<size_t>(y) * width * static_cast<size_t>(image.channels) * sample;
  }
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  if (gray16) {
    const size_t n = static_cast<size_t>(width) * height;
    for (size_t i = 0; i < n; ++i) {
      const unsigned v = image.pixels[2 * i] | (static_cast<unsigned>(image.pixels[2 * i + 1]) << 8);
      image.pixels[i] = static_cast<uint8_t>(v > 255 ? 255 : v);
    }
    image.pixels.resize(n);
  }
  return image;
}

// ---- JPEG ------------------------------------------------------------------------------------

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings on corrupt data: libjpeg recovers, as PIL does; except a file that ends early, where
// libjpeg pads the missing rows grey and PIL refuses ("image file is truncated").
void jpeg_on_message(j_common_ptr cinfo, int level) {
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    auto* err = reinterpret_cast<JpegError*>(cinfo->err);
    std::strcpy(err->message, "file is truncated");
    std::longjmp(err->jump, 1);
  }
}

DecodedImage decode_jpeg(const std::string& bytes, const std::string& where) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_on_error;
  err.mgr.emit_message = jpeg_on_message;
  err.message[0] = '\0';
  DecodedImage image;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw data_format(where + ": not a valid JPEG (" + std::string(err.message) + ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  jpeg_read_header(&cinfo, TRUE);
  if (static_cast<int64_t>(cinfo.image_width) * cinfo.image_height > kMaxImagePixels) {
    jpeg_destroy_decompress(&cinfo);
    throw data_format(where + ": " + std::to_string(cinfo.image_width) + "x" + std::to_string(cinfo.image_height) +
                      " pixels exceed the limit of " + std::to_string(kMaxImagePixels));
  }
  // Gray stays gray, everything else (YCbCr, CMYK is refused by libjpeg for RGB output) to RGB.
  cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  image.width = cinfo.output_width;
  image.height = cinfo.output_height;
  image.channels = cinfo.output_components;
  const size_t stride = static_cast<size_t>(image.width) * static_cast<size_t>(image.channels);
  image.pixels.resize(stride * static_cast<size_t>(image.height));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = image.pixels.data() + stride * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return image;
}

void png_write_to_string(png_structp png, png_bytep data, png_size_t n) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), n);
}

}  // namespace

ImageFormat sniff_image_format(const std::string& bytes) {
  static const unsigned char kPngMagic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), kPngMagic, 8) == 0) return ImageFormat::kPng;
  if (bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xff &&
      static_cast<unsigned char>(bytes[1]) == 0xd8 && static_cast<unsigned char>(bytes[2]) == 0xff) {
    return ImageFormat::kJpeg;
  }
  return ImageFormat::kUnknown;
}

DecodedImage decode_image(const std::string& bytes, const std::string& where) {
  switch (sniff_image_format(bytes)) {
    case ImageFormat::kPng: return decode_png(bytes, where);
    case ImageFormat::kJpeg: return decode_jpeg(bytes, where);
    case ImageFormat::kUnknown: break;
  }
  throw data_format(where + ": neither PNG nor JPEG (by its first bytes)");
}

DecodedImage convert_channels(const DecodedImage& image, int channels) {
  if (channels != 1 && channels != 3) {
    throw invalid_argument("image folders convert to 1 (gray) or 3 (RGB) channels, not " + std::to_string(channels));
  }
  if (image.channels == channels) return image;
  DecodedImage out;
  out.height = image.height;
  out.width = image.width;
  out.channels = channels;
  const size_t n = static_cast<size_t>(image.height * image.width);
  out.pixels.resize(n * static_cast<size_t>(channels));
  const uint8_t* in = image.pixels.data();
  const size_t step = static_cast<size_t>(image.channels);
  for (size_t i = 0; i < n; ++i, in += step) {
    if (channels == 3) {
      const bool gray = image.channels <= 2;
      out.pixels[3 * i] = in[0];
      out.pixels[3 * i + 1] = gray ? in[0] : in[1];
      out.pixels[3 * i + 2] = gray ? in[0] : in[2];
    } else if (image.channels <= 2) {
      out.pixels[i] = in[0];
    } else {
      // PIL's L24 macro (libImaging/Convert.c): ITU-R 601-2 luma in 16-bit fixed point, rounded.
      out.pixels[i] = static_cast<uint8_t>((in[0] * 19595u + in[1] * 38470u + in[2] * 7471u + 0x8000u) >> 16);
    }
  }
  return out;
}

std::string encode_png(const DecodedImage& image) {
  int color = 0;
  switch (image.channels) {
    case 1: color = PNG_COLOR_TYPE_GRAY; break;
    case 2: color = PNG_COLOR_TYPE_GRAY_ALPHA; break;
    case 3: color = PNG_COLOR_TYPE_RGB; break;
    case 4: color = PNG_COLOR_TYPE_RGB_ALPHA; break;
    default: throw invalid_argument("encode_png: channels must be 1..4");
  }
  std::string out;
  PngErrorState err;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, png_on_error, png_on_warning);
  png_infop info = png_create_info_struct(png);
  std::vector<png_bytep> rows(static_cast<size_t>(image.height));
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw internal_error("encode_png: " + err.message);
  }
  png_set_write_fn(png, &out, png_write_to_string, nullptr);
  png_set_IHDR(png, info, static_cast<png_uint_32>(image.width), static_cast<png_uint_32>(image.height), 8, color,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (size_t y = 0; y < rows.size(); ++y) {
    rows[y] = const_cast<png_bytep>(image.pixels.data()) +
              y * static_cast<size_t>(image.width) * static_cast<size_t>(image.channels);
  }
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

}  // namespace bulwark::data
