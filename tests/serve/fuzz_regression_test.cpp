// Inputs the fuzz targets (fuzz/) found mishandled by the serve module's parsers, each kept as a
// test here and as a seed under fuzz/corpus/<target>/regress-*.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "core/error.h"
#include "serve/auth.h"
#include "serve/config.h"
#include "test_util.h"

namespace bulwark::serve {
namespace {

// fuzz/tokens_yaml.cpp: a tokens file whose document is not a map (a scalar, a list) made
// TokenStore::load throw yaml-cpp's BadSubscript instead of a data_format Error naming the file.
TEST(FuzzRegression, TokensFileThatIsNotAMapIsADataFormatError) {
  testing::TempDir dir;
  const auto path = dir.file("tokens.yaml");
  for (const std::string text : {"\x8c\x90\x94\x9a\x91\xdc\xc5\xd5[\n", "just a scalar\n", "- id: a\n- id: b\n"}) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
    try {
      TokenStore::load(path);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kDataFormat) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

// fuzz/serve_config.cpp: a key that is not a string ("? :" is a null key, "? [a, b]" a list) made
// load_config_file throw yaml-cpp's TypedBadConversion instead of a data_format Error.
TEST(FuzzRegression, ConfigKeyThatIsNotAStringIsADataFormatError) {
  testing::TempDir dir;
  const auto path = dir.file("serve.yaml");
  for (const std::string text : {"? :", "? [a, b]\n: c\n", "model: {? [x]: a.pt}\n"}) {
    for (const std::string section : {"", "serve"}) {
      std::ofstream(path, std::ios::trunc) << (section.empty() ? text : "serve:\n  " + text);
      try {
        load_config_file(path, section);
        ADD_FAILURE() << "accepted: " << text;
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::kDataFormat) << e.what();
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace bulwark::serve
