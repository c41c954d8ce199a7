#include <gtest/gtest.h>

#include <filesystem>

#include "core/digest.h"
#include "core/core.h"
#include "test_util.h"

namespace bulwark {
namespace {

TEST(AtomicWrite, ReplacesContentsAndLeavesNoTemporary) {
  testing::TempDir dir;
  const auto path = dir.file("out.bin");
  atomic_write_file(path, "first");
  atomic_write_file(path, "second, longer");
  EXPECT_EQ(read_file(path), "second, longer");
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1) << "a temporary file was left behind";
}

TEST(AtomicWrite, UnwritableDirectoryIsAnIoErrorNamingThePath) {
  try {
    atomic_write_file("/nonexistent-dir/x.pt", "data");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/x.pt"), std::string::npos) << e.what();
  }
}

TEST(ReadFile, MissingFileIsNotFound) {
  try {
    read_file("/no/such/file");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
  }
}

TEST(FormatDuration, Units) {
  EXPECT_EQ(format_duration(5.25), "5.2s");
  EXPECT_EQ(format_duration(65), "1m05s");
  EXPECT_EQ(format_duration(3700), "1h01m");
  EXPECT_EQ(format_duration(-1), "?");
}

}  // namespace
}  // namespace bulwark

namespace bulwark {
namespace {

TEST(Digest, Sha256MatchesTheFipsVectorAndRandomIdsDiffer) {
  // FIPS 180-2, appendix B.1: SHA-256("abc").
  const std::string abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  EXPECT_EQ(sha256_hex("abc"), abc);
  EXPECT_EQ(hex_encode(sha256_raw("abc")), abc);
  EXPECT_EQ(sha256_raw("abc").size(), 32u);
  EXPECT_EQ(hex_encode(std::string("\x00\x0f\xf0\xff", 4)), "000ff0ff");
  const auto a = random_hex(16), b = random_hex(16);
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace bulwark
