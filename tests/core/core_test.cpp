#include <dlfcn.h>
#include <gtest/gtest.h>
#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/digest.h"
#include "core/core.h"
#include "core/system.h"
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

// The kind of the bulwark::Error `f` throws; fails the test if it throws none.
template <typename F>
ErrorKind error_kind(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.kind();
  }
  ADD_FAILURE() << "no error thrown";
  return ErrorKind::kInternal;
}

TEST(Digest, HexDecodeTakesBackExactlyWhatHexEncodeWrites) {
  const std::string bytes("\x00\x0f\xf0\xff\x80", 5);
  EXPECT_EQ(hex_decode(hex_encode(bytes)), bytes);
  EXPECT_EQ(hex_decode(""), "");
  EXPECT_EQ(hex_decode(sha256_hex("abc")), sha256_raw("abc"));
  for (const char* bad : {"0", "abc", "0F", "0g", "00:ff", " 00", "00 "}) {
    EXPECT_EQ(error_kind([&] { hex_decode(bad); }), ErrorKind::kDataFormat) << bad;
  }
}

TEST(Digest, Base64IsRfc4648AndOnlyItsCanonicalText) {
  // RFC 4648 section 10's vectors, both ways.
  for (const auto& [plain, text] : std::vector<std::pair<std::string, std::string>>{
           {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
           {"foobar", "Zm9vYmFy"}}) {
    EXPECT_EQ(base64_encode(plain), text);
    EXPECT_EQ(base64_decode(text), plain);
  }
  std::string all;
  for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
  EXPECT_EQ(base64_decode(base64_encode(all)), all);
  // What OpenSSL's decoder alone would let through (ends' whitespace, padding bits) and the rest.
  for (const char* bad : {" Zg==", "Zg== ", "Zh==", "Zm9=", "====", "Z===", "Zm=v", "Zg", "Zg=", "Zm$v", "Zm9v\n"}) {
    EXPECT_EQ(error_kind([&] { base64_decode(bad); }), ErrorKind::kDataFormat) << bad;
  }
}

// keep_freed_memory_for_reuse changes the whole process's malloc: each case runs in a forked child
// (EXPECT_EXIT) and reports through its exit code.
constexpr size_t kActivation = size_t{16} << 20;  // an attack step's activation tensor at batch ~160

// The block an attack step frees and allocates again, pass after pass: heap memory, not a fresh
// mmap (glibc's default above its dynamic threshold), and still mapped after free.
int heap_block_kept_after_free() {
  if (!keep_freed_memory_for_reuse()) return 10;
  const auto before = mallinfo2();
  void* p = std::malloc(kActivation);
  if (p == nullptr) return 11;
  std::memset(p, 1, kActivation);
  const auto during = mallinfo2();
  std::free(p);
  const auto after = mallinfo2();
  if (during.hblks != before.hblks) return 12;  // it was mmapped
  if (after.fordblks < kActivation) return 13;  // it went back to the kernel
  return 0;
}

TEST(KeepFreedMemoryDeathTest, ActivationSizedBlocksComeFromTheHeapAndStayMappedAfterFree) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "ASan replaces malloc: mallopt does nothing there";
#endif
  EXPECT_EXIT(std::_Exit(heap_block_kept_after_free()), ::testing::ExitedWithCode(0), "");
}

int applied_with(const char* name, const char* value) {
  ::setenv(name, value, 1);
  return keep_freed_memory_for_reuse() ? 1 : 0;
}

TEST(KeepFreedMemoryDeathTest, AnEnvironmentThatTunesMallocIsLeftAsItIs) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "ASan replaces malloc: mallopt does nothing there";
#endif
  EXPECT_EXIT(std::_Exit(applied_with("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=4096")),
              ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(std::_Exit(applied_with("MALLOC_TRIM_THRESHOLD_", "4096")), ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(std::_Exit(applied_with("MALLOC_MMAP_THRESHOLD_", "4096")), ::testing::ExitedWithCode(0), "");
  // Tunables of anything else do not count.
  EXPECT_EXIT(std::_Exit(applied_with("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")), ::testing::ExitedWithCode(1),
              "");
}

// single_threaded_blas finds OpenBLAS wherever the loader put it (dlsym, as in a bulwark process
// that loaded it through LibTorch) and leaves it one thread; OPENBLAS_NUM_THREADS wins. Each case
// runs in a child: the setting is process-wide.
int blas_threads_after(const char* env_threads) {
  if (env_threads) ::setenv("OPENBLAS_NUM_THREADS", env_threads, 1);
  else ::unsetenv("OPENBLAS_NUM_THREADS");
  if (dlopen("libopenblas.so.0", RTLD_NOW | RTLD_GLOBAL) == nullptr) return 90;  // Debian's libopenblas0
  using Get = int (*)();
  using Set = void (*)(int);
  auto get = reinterpret_cast<Get>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  auto set = reinterpret_cast<Set>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (!get || !set) return 91;
  set(2);  // as on a 2-core machine, whatever this one has
  const bool applied = single_threaded_blas();
  return (applied ? 10 : 0) + get();
}

TEST(SingleThreadedBlasDeathTest, LeavesOpenBlasOneThreadUnlessTheEnvironmentSaysOtherwise) {
  EXPECT_EXIT(std::_Exit(blas_threads_after(nullptr)), ::testing::ExitedWithCode(11), "");
  EXPECT_EXIT(std::_Exit(blas_threads_after("2")), ::testing::ExitedWithCode(2), "");
}

}  // namespace
}  // namespace bulwark
