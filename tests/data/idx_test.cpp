#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "core/error.h"
#include "data/data.h"
#include "test_util.h"

namespace bulwark::data {
namespace {

using testing::idx_bytes;
using testing::TempDir;
using testing::write_bytes;

// Asserts reading `bytes` as an IDX file fails with kind and a message containing the path and `needle`.
void expect_idx_error(const std::vector<uint8_t>& bytes, const std::string& needle, bool gz = false,
                      ErrorKind kind = ErrorKind::kDataFormat) {
  TempDir dir;
  const auto path = dir.file(gz ? "f.gz" : "f");
  write_bytes(path, bytes, gz);
  try {
    read_idx(path);
    FAIL() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "message does not name the file: " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

TEST(Idx, ReadsRawAndGzipIdentically) {
  TempDir dir;
  const std::vector<uint8_t> payload = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  write_bytes(dir.file("raw"), idx_bytes({3, 2, 2}, payload));
  write_bytes(dir.file("z.gz"), idx_bytes({3, 2, 2}, payload), true);
  for (const auto& name : {"raw", "z.gz"}) {
    const IdxArray a = read_idx(dir.file(name));
    EXPECT_EQ(a.dims, (std::vector<int64_t>{3, 2, 2}));
    EXPECT_EQ(a.values, payload);
  }
  const auto images = read_idx_images(dir.file("raw"));
  EXPECT_EQ(images.sizes(), (std::vector<int64_t>{3, 1, 2, 2}));
  EXPECT_EQ(images[2][0][1][1].item<int>(), 12);
}

TEST(Idx, BadMagicNumber) { expect_idx_error({0x1f, 0x00, 0x08, 0x01, 0, 0, 0, 1, 5}, "bad magic number"); }

TEST(Idx, UnsupportedElementType) { expect_idx_error(idx_bytes({1}, {5}, 0x0D), "unsupported IDX element type"); }

TEST(Idx, ZeroDimensions) { expect_idx_error({0, 0, 8, 0}, "number of dimensions 0"); }

TEST(Idx, TooManyDimensions) { expect_idx_error({0, 0, 8, 5}, "number of dimensions 5"); }

TEST(Idx, ZeroSizedDimension) { expect_idx_error(idx_bytes({2, 0}, {}), "dimension 1 is 0"); }

TEST(Idx, HugeDeclaredSize) {
  expect_idx_error(idx_bytes({0xFFFFFFFF, 0xFFFFFFFF}, {}), "more than");
}

// Reads `path` with the address space capped at 1 GiB above what the process holds; the exit code
// says how it went: 0 an Error saying "truncated", 3 any other exception (std::bad_alloc).
int read_idx_with_capped_memory(const std::string& path) {
  size_t pages = 0;
  std::ifstream("/proc/self/statm") >> pages;
  const rlim_t cap = pages * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE)) + (rlim_t{1} << 30);
  const rlimit limit{cap, cap};
  if (::setrlimit(RLIMIT_AS, &limit) != 0) return 5;
  try {
    read_idx(path);
  } catch (const Error& e) {
    return std::string(e.what()).find("truncated") != std::string::npos ? 0 : 2;
  } catch (...) {
    return 3;
  }
  return 4;
}

// Found by fuzz/idx.cpp: 12 bytes declaring 65536 x 32768 elements made the reader allocate the
// declared 2 GiB before it noticed the data was missing. With the address space capped at 1 GiB
// above what the process holds, the file must still fail as truncated, not with std::bad_alloc.
TEST(IdxDeathTest, HugeHeaderOverFewBytesFailsWithoutAllocatingItsSize) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "ASan reserves address space: RLIMIT_AS cannot be capped";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  GTEST_SKIP() << "ASan reserves address space: RLIMIT_AS cannot be capped";
#endif
#endif
  TempDir dir;
  const auto path = dir.file("huge");
  write_bytes(path, idx_bytes({65536, 32768}, {1, 2, 3}));
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(std::_Exit(read_idx_with_capped_memory(path)), ::testing::ExitedWithCode(0), "");
}

TEST(Idx, TruncatedMagic) { expect_idx_error({0, 0}, "truncated"); }

TEST(Idx, TruncatedHeader) { expect_idx_error({0, 0, 8, 3, 0, 0, 0, 2, 0, 0}, "inside the header"); }

TEST(Idx, TruncatedData) { expect_idx_error(idx_bytes({2, 2, 2}, {1, 2, 3}), "declares 8 bytes of data, file has 3"); }

TEST(Idx, TruncatedGzipData) { expect_idx_error(idx_bytes({2, 2, 2}, {1, 2, 3}), "truncated", /*gz=*/true); }

TEST(Idx, TrailingBytes) { expect_idx_error(idx_bytes({2}, {1, 2, 3}), "trailing bytes"); }

TEST(Idx, CorruptGzipStream) {
  // A gzip header followed by garbage deflate data, written as-is (not compressed again).
  TempDir dir;
  const auto path = dir.file("f.gz");
  write_bytes(path, {0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
  try {
    read_idx(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kDataFormat);
    EXPECT_NE(std::string(e.what()).find("corrupt compressed data"), std::string::npos) << e.what();
  }
}

TEST(Idx, MissingFileIsNotFound) {
  try {
    read_idx("/no/such/dir/train-images-idx3-ubyte.gz");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_NE(std::string(e.what()).find("/no/such/dir/train-images-idx3-ubyte.gz"), std::string::npos);
  }
}

TEST(Idx, ImagesNeedThreeDimensions) {
  TempDir dir;
  write_bytes(dir.file("i"), idx_bytes({4}, {1, 2, 3, 4}));
  EXPECT_THROW(read_idx_images(dir.file("i")), Error);
}

TEST(Idx, LabelOutOfRange) {
  TempDir dir;
  write_bytes(dir.file("l"), idx_bytes({3}, {1, 12, 3}));
  try {
    read_idx_labels(dir.file("l"), 10);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("label 12 at index 1"), std::string::npos) << e.what();
  }
}

TEST(Dataset, LabelCountMustMatchImageCount) {
  TempDir dir;
  testing::write_idx_dataset(dir.path(), 20);
  std::vector<uint8_t> labels(19, 1);
  write_bytes(dir.file("train-labels-idx1-ubyte.gz"), idx_bytes({19}, labels), true);
  try {
    load_dataset(dir.path(), Split::kTrain);
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("19 labels"), std::string::npos) << msg;
    EXPECT_NE(msg.find("20 images"), std::string::npos) << msg;
  }
}

TEST(Dataset, MissingFileNamesDirectoryAndStem) {
  TempDir dir;
  try {
    load_dataset(dir.path(), Split::kTest);
    FAIL();
  } catch (const Error& e) {
    // An empty directory: not found, with the layouts Bulwark reads.
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_NE(std::string(e.what()).find("MNIST-layout IDX"), std::string::npos) << e.what();
  }
  testing::write_bytes(dir.file("train-images-idx3-ubyte"), {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0});
  try {
    load_dataset(dir.path(), Split::kTest);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
    EXPECT_NE(std::string(e.what()).find("t10k-images-idx3-ubyte"), std::string::npos) << e.what();
  }
}

TEST(Dataset, UnknownSourceIsNotFound) {
  EXPECT_THROW(load_dataset("cifar-1000", Split::kTrain), Error);
}

TEST(Dataset, RawLayoutLoadsAndScalesToUnitRange) {
  TempDir dir;
  testing::write_idx_dataset(dir.path(), 30, 5, 3, /*gz=*/false);
  const Dataset d = load_dataset(dir.path(), Split::kTrain);
  EXPECT_EQ(d.size(), 30);
  EXPECT_EQ(d.images.sizes(), (std::vector<int64_t>{30, 1, 5, 3}));
  const auto x = d.inputs();
  EXPECT_GE(x.min().item<float>(), 0.0f);
  EXPECT_LE(x.max().item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(x.max().item<float>(), 1.0f);  // 255 appears in the pattern
}

TEST(Dataset, HeadLargerThanDatasetNamesTheFlag) {
  TempDir dir;
  testing::write_idx_dataset(dir.path(), 10);
  const Dataset d = load_dataset(dir.path(), Split::kTrain);
  EXPECT_EQ(d.head(4).size(), 4);
  try {
    d.head(11, "--n");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("--n 11"), std::string::npos) << e.what();
  }
}

TEST(Split, DeterministicDisjointAndComplete) {
  TempDir dir;
  testing::write_idx_dataset(dir.path(), 100);
  const Dataset d = load_dataset(dir.path(), Split::kTrain);
  // Label each image by its index so the split's membership is visible.
  Dataset indexed = d;
  indexed.labels = torch::arange(100);
  const auto a = split_train_validation(indexed, 0.2, 42);
  const auto b = split_train_validation(indexed, 0.2, 42);
  const auto c = split_train_validation(indexed, 0.2, 43);
  EXPECT_EQ(a.train.size(), 80);
  EXPECT_EQ(a.validation.size(), 20);
  EXPECT_TRUE(torch::equal(a.validation.labels, b.validation.labels));
  EXPECT_FALSE(torch::equal(a.validation.labels, c.validation.labels));
  const auto all = std::get<0>(torch::sort(torch::cat({a.train.labels, a.validation.labels})));
  EXPECT_TRUE(torch::equal(all, torch::arange(100)));
  EXPECT_THROW(split_train_validation(indexed, 1.0, 1), Error);
}

TEST(Batches, ShuffledBySeedAndEpochCoveringEveryIndex) {
  const auto a = batch_indices(103, 10, true, 7, 0);
  const auto b = batch_indices(103, 10, true, 7, 0);
  const auto next_epoch = batch_indices(103, 10, true, 7, 1);
  const auto other_seed = batch_indices(103, 10, true, 8, 0);
  ASSERT_EQ(a.size(), 11u);
  EXPECT_EQ(a.back().numel(), 3);
  EXPECT_TRUE(torch::equal(torch::cat(a), torch::cat(b)));
  EXPECT_FALSE(torch::equal(torch::cat(a), torch::cat(next_epoch)));
  EXPECT_FALSE(torch::equal(torch::cat(a), torch::cat(other_seed)));
  EXPECT_TRUE(torch::equal(std::get<0>(torch::sort(torch::cat(a))), torch::arange(103)));
  const auto ordered = batch_indices(25, 10, false, 7);
  EXPECT_TRUE(torch::equal(torch::cat(ordered), torch::arange(25)));
  EXPECT_THROW(batch_indices(10, 0, true, 1), Error);
}

TEST(FashionMnist, PackagedDatasetLoads) {
  const Dataset d = load_dataset("fashion-mnist", Split::kTest);
  EXPECT_EQ(d.size(), 10000);
  EXPECT_EQ(d.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(d.class_names.at(9), "Ankle boot");
}

}  // namespace
}  // namespace bulwark::data
