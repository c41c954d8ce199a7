#include <gtest/gtest.h>

#include <filesystem>

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
