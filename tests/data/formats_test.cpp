// Datasets in the formats users bring (issue 30): image folders held bit for bit to torchvision's
// ImageFolder + ToTensor, CIFAR binary files, NumPy .npz, and each kind of bad input refused by name.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <fstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/files.h"
#include "data/data.h"
#include "test_util.h"

namespace bulwark::data {
namespace {

using testing::TempDir;
namespace fs = std::filesystem;

// What the Python fixture wrote: one run per test binary, the directory kept for every test.
const std::string& fixture_dir() {
  static TempDir dir;
  static const bool made = [] {
    const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR +
                                        "/make_image_folder.py " + dir.path());
    if (r.exit_code != 0) ADD_FAILURE() << r.output;
    return r.exit_code == 0;
  }();
  (void)made;
  static const std::string path = dir.path();
  return path;
}

torch::Tensor read_raw(const std::string& path, std::vector<int64_t> shape, torch::Dtype dtype) {
  const std::string bytes = read_file(path);
  return torch::from_blob(const_cast<char*>(bytes.data()), shape, dtype).clone();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Every pixel, label, class and file order as torchvision reads them (PIL's convert("RGB") /
// convert("L") of RGB, L, RGBA, palette with and without transparency, LA, 1-bit and 16-bit PNGs).
TEST(ImageFolder, EqualsTorchvisionBitForBit) {
  const auto& fx = fixture_dir();
  const auto meta = nlohmann::json::parse(read_file(fx + "/meta.json"));
  const int64_t n = meta["n"].get<int64_t>();
  const auto scan = scan_image_folder(fx + "/folder");
  EXPECT_EQ(scan.classes, meta["classes"].get<std::vector<std::string>>());
  ASSERT_EQ(static_cast<int64_t>(scan.files.size()), n);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(scan.files[static_cast<size_t>(i)].first, fx + "/folder/" + meta["files"][i].get<std::string>()) << i;
  }
  EXPECT_EQ(scan.ignored_files, 1);  // notes.txt

  const auto rgb = load_dataset(fx + "/folder", Split::kTest);
  EXPECT_EQ(rgb.split, "given");
  const auto expected_labels = read_raw(fx + "/labels.bin", {n}, torch::kInt64);
  EXPECT_TRUE(torch::equal(rgb.labels, expected_labels));
  const auto expected_rgb = read_raw(fx + "/rgb.bin", {n, 3, 32, 32}, torch::kFloat32);
  ASSERT_EQ(rgb.images.sizes(), expected_rgb.sizes());
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_TRUE(torch::equal(rgb.inputs(torch::tensor({i})), expected_rgb.narrow(0, i, 1)))
        << meta["files"][i] << ": max diff "
        << (rgb.inputs(torch::tensor({i})) - expected_rgb.narrow(0, i, 1)).abs().max().item<float>();
  }

  LoadOptions gray_options;
  gray_options.shape = {1, 32, 32};
  const auto gray = load_dataset(fx + "/folder", Split::kTest, gray_options);
  const auto expected_gray = read_raw(fx + "/gray.bin", {n, 1, 32, 32}, torch::kFloat32);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_TRUE(torch::equal(gray.inputs(torch::tensor({i})), expected_gray.narrow(0, i, 1)))
        << meta["files"][i] << ": max diff "
        << (gray.inputs(torch::tensor({i})) - expected_gray.narrow(0, i, 1)).abs().max().item<float>() << " first "
        << gray.images[i].flatten().narrow(0, 0, 4) << expected_gray[i].flatten().narrow(0, 0, 4) * 255;
  }
}

// A split root (train/ and val/) serves each split from its folder; decoding on one thread or many
// gives the same tensors.
TEST(ImageFolder, SplitRootAndThreads) {
  const auto& fx = fixture_dir();
  TempDir dir;
  fs::copy(fx + "/folder", dir.file("train"), fs::copy_options::recursive);
  fs::copy(fx + "/folder", dir.file("val"), fs::copy_options::recursive);
  LoadOptions one;
  one.threads = 1;
  const auto train = load_dataset(dir.path(), Split::kTrain, one);
  const auto test = load_dataset(dir.path(), Split::kTest);
  EXPECT_EQ(train.split, "train");
  EXPECT_EQ(test.split, "val");
  EXPECT_TRUE(torch::equal(train.images, test.images));
  EXPECT_EQ(train.class_names, test.class_names);
}

// Resize(32) + CenterCrop(32) as torchvision computes it on uint8 tensors (antialiased bilinear).
TEST(ImageFolder, ResizeAndCenterCropMatchTorchvision) {
  const auto& fx = fixture_dir();
  const auto expected = read_raw(fx + "/resize.bin", {5, 3, 32, 32}, torch::kUInt8);
  for (int64_t i = 0; i < 5; ++i) {
    const std::string path = fx + "/resize/" + std::to_string(i) + ".png";
    const auto img = decode_image(read_file(path), path);
    const auto chw = torch::from_blob(const_cast<uint8_t*>(img.pixels.data()), {img.height, img.width, 3}, torch::kUInt8)
                         .permute({2, 0, 1});
    const auto got = resize_center_crop(chw.contiguous(), 32, 32);
    const auto diff = (got.to(torch::kInt32) - expected[i].to(torch::kInt32)).abs();
    EXPECT_LE(diff.max().item<int>(), 1) << i;
    EXPECT_LT(diff.gt(0).sum().item<int64_t>(), diff.numel() / 100 + 1) << i << ": more than 1% of pixels off by one";
  }
  // A folder of mixed sizes reads once the model's size is known, and is refused without it.
  TempDir dir;
  fs::create_directories(dir.file("c"));
  for (int i = 0; i < 5; ++i) {
    fs::copy(fx + "/resize/" + std::to_string(i) + ".png", dir.file("c/" + std::to_string(i) + ".png"));
  }
  EXPECT_NE(error_of([&] { load_dataset(dir.path(), Split::kTest); }).find("mixed sizes"), std::string::npos);
  LoadOptions sized;
  sized.shape = {3, 32, 32};
  const auto d = load_dataset(dir.path(), Split::kTest, sized);
  EXPECT_EQ(d.images.sizes(), (std::vector<int64_t>{5, 3, 32, 32}));
}

TEST(ImageFolder, BadInputIsNamed) {
  TempDir dir;
  fs::create_directories(dir.file("a"));
  fs::create_directories(dir.file("b"));
  const std::string good = encode_png({4, 4, 3, std::vector<uint8_t>(48, 7)});
  atomic_write_file(dir.file("a/1.png"), good);
  // A class folder with no image.
  EXPECT_NE(error_of([&] { load_dataset(dir.path(), Split::kTest); }).find("'b' has no images"), std::string::npos);
  atomic_write_file(dir.file("b/1.png"), good);
  // A corrupt PNG (truncated) is named; with skip_bad it is counted instead.
  atomic_write_file(dir.file("b/2.png"), good.substr(0, good.size() / 2));
  const std::string corrupt = error_of([&] { load_dataset(dir.path(), Split::kTest); });
  EXPECT_NE(corrupt.find("b/2.png"), std::string::npos) << corrupt;
  LoadOptions skip;
  skip.skip_bad = true;
  const auto d = load_dataset(dir.path(), Split::kTest, skip);
  EXPECT_EQ(d.size(), 2);
  EXPECT_EQ(d.refused_files, 1);
  // Not an image by its bytes; an extension Bulwark does not decode.
  atomic_write_file(dir.file("b/2.png"), "hello");
  EXPECT_NE(error_of([&] { load_dataset(dir.path(), Split::kTest); }).find("neither PNG nor JPEG"), std::string::npos);
  fs::remove(dir.file("b/2.png"));
  atomic_write_file(dir.file("b/3.bmp"), "BM");
  EXPECT_NE(error_of([&] { load_dataset(dir.path(), Split::kTest); }).find("b/3.bmp"), std::string::npos);
  fs::remove(dir.file("b/3.bmp"));
  // Without the model's size the images cannot go to disk: over the bound is refused, naming the fix.
  LoadOptions small;
  small.max_memory_bytes = 50;  // two 4x4 RGB images are 96 bytes
  const std::string bound = error_of([&] { load_dataset(dir.path(), Split::kTest, small); });
  EXPECT_NE(bound.find("--max-memory"), std::string::npos) << bound;
  EXPECT_NE(bound.find("--input-shape"), std::string::npos) << bound;
  // A 4-channel model cannot take an image folder.
  LoadOptions four;
  four.shape = {4, 4, 4};
  EXPECT_NE(error_of([&] { load_dataset(dir.path(), Split::kTest, four); }).find("1 (gray) or 3 (RGB)"),
            std::string::npos);
}

// Process memory that is anonymous (heap, not file pages), from /proc/self/status, in bytes.
int64_t rss_anon_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stoll(line.substr(8)) * 1024;
  }
  ADD_FAILURE() << "no RssAnon in /proc/self/status";
  return 0;
}

// A folder over --max-memory is decoded into a scratch file and read from there: the same tensors as
// a load in memory, selections stay on disk, refused files leave no hole, and the process's own
// memory does not grow by the set's size (it does for a load in memory: the measure can see it).
TEST(ImageFolder, OverTheMemoryBoundIsHeldOnDisk) {
  TempDir dir;
  // The scratch files go under the build tree (a real disk; /tmp may be a tmpfs, which is refused).
  struct Scratch {
    std::string path = (fs::current_path() / ("scratch-" + std::to_string(::getpid()))).string();
    Scratch() {
      fs::create_directories(path);
      ::setenv("BULWARK_SCRATCH_DIR", path.c_str(), 1);
    }
    ~Scratch() {
      ::unsetenv("BULWARK_SCRATCH_DIR");
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } scratch;
  constexpr int kPerClass = 160, kSide = 160;  // 320 images, 24.6 MB decoded
  for (int c = 0; c < 2; ++c) {
    fs::create_directories(dir.file("c" + std::to_string(c)));
    for (int i = 0; i < kPerClass; ++i) {
      DecodedImage img{kSide, kSide, 3, std::vector<uint8_t>(kSide * kSide * 3)};
      for (size_t p = 0; p < img.pixels.size(); ++p) img.pixels[p] = static_cast<uint8_t>((p / 7 + i * 13 + c * 101) % 251);
      atomic_write_file(dir.file("c" + std::to_string(c) + "/" + std::to_string(1000 + i) + ".png"), encode_png(img));
    }
  }
  atomic_write_file(dir.file("c0/1005.png"), "not a png");  // a refused file in the middle (skip_bad)
  LoadOptions o;
  o.shape = {3, kSide, kSide};
  o.skip_bad = true;
  o.progress = false;
  const int64_t set_bytes = 319LL * 3 * kSide * kSide;

  o.max_memory_bytes = 1 << 20;
  const int64_t before_disk = rss_anon_bytes();
  const Dataset on_disk = load_dataset(dir.path(), Split::kTest, o);
  const int64_t grew_disk = rss_anon_bytes() - before_disk;
  o.max_memory_bytes = int64_t{1} << 30;
  const int64_t before_memory = rss_anon_bytes();
  const Dataset in_memory = load_dataset(dir.path(), Split::kTest, o);
  const int64_t grew_memory = rss_anon_bytes() - before_memory;

  std::printf("set %.1f MB: RssAnon grew %.1f MB on disk, %.1f MB in memory\n", set_bytes / 1e6, grew_disk / 1e6,
              grew_memory / 1e6);
  ASSERT_TRUE(on_disk.on_disk());
  ASSERT_FALSE(in_memory.on_disk());
  EXPECT_EQ(on_disk.refused_files, 1);
  ASSERT_EQ(on_disk.size(), 319);
  EXPECT_TRUE(torch::equal(on_disk.images, in_memory.images));
  EXPECT_TRUE(torch::equal(on_disk.labels, in_memory.labels));
  EXPECT_GE(grew_memory, set_bytes * 3 / 4) << "a load in memory should show in RssAnon";
  EXPECT_LT(grew_disk, set_bytes / 4) << "the scratch file's pages are not the process's memory";

  const auto rows = torch::tensor(std::vector<int64_t>{318, 3, 160, 0, 7});
  const Dataset picked = on_disk.select(rows);
  EXPECT_TRUE(picked.on_disk());
  EXPECT_TRUE(torch::equal(picked.images, in_memory.select(rows).images));
  EXPECT_TRUE(torch::equal(on_disk.inputs(rows), in_memory.inputs(rows)));
  EXPECT_TRUE(on_disk.head(10).on_disk());

  // Commands that convert their whole selection at once refuse a set on disk over the bound.
  const std::string whole = error_of([&] { on_disk.require_in_memory(1 << 20, "bulwark attack", "--n"); });
  EXPECT_NE(whole.find("bulwark attack"), std::string::npos) << whole;
  EXPECT_NE(whole.find("at most 3 fit: lower --n"), std::string::npos) << whole;  // 1 MiB: three float 160x160 RGB
  EXPECT_NO_THROW(on_disk.head(3).require_in_memory(1 << 20, "bulwark attack", "--n"));
  EXPECT_NO_THROW(in_memory.require_in_memory(1, "bulwark attack", "--n"));  // in memory already: nothing to refuse
  // Nothing is left in the scratch directory: the files were unlinked as they were made.
  EXPECT_TRUE(fs::is_empty(scratch.path));
}

// JPEG through libjpeg-turbo as PIL decodes it; a JPEG cut short is refused (PIL: "image file is
// truncated"), not padded grey; a 16-bit gray PNG clips at 255 as PIL's convert("L") does.
TEST(ImageCodec, JpegTruncatedAndSixteenBitGrayAsPil) {
  const auto& fx = fixture_dir();
  const auto photo = decode_image(read_file(fx + "/photo.jpg"), "photo.jpg");
  ASSERT_EQ(photo.height, 48);
  ASSERT_EQ(photo.width, 40);
  ASSERT_EQ(photo.channels, 3);
  const auto expected = read_raw(fx + "/photo_rgb.bin", {48, 40, 3}, torch::kUInt8);
  const auto got = torch::from_blob(const_cast<uint8_t*>(photo.pixels.data()), {48, 40, 3}, torch::kUInt8);
  EXPECT_LE((got.to(torch::kInt32) - expected.to(torch::kInt32)).abs().max().item<int>(), 1);
  EXPECT_NE(error_of([&] { decode_image(read_file(fx + "/truncated.jpg"), "truncated.jpg"); }).find("truncated"),
            std::string::npos);
  const auto g16 = convert_channels(decode_image(read_file(fx + "/gray16.png"), "gray16.png"), 1);
  ASSERT_EQ(g16.pixels.size(), 256u);
  const auto g16_expected = read_raw(fx + "/gray16_l.bin", {256}, torch::kUInt8);
  EXPECT_TRUE(torch::equal(torch::from_blob(const_cast<uint8_t*>(g16.pixels.data()), {256}, torch::kUInt8),
                           g16_expected));
}

TEST(Cifar, WrittenFilesReadBack) {
  TempDir dir;
  torch::manual_seed(3);
  std::vector<torch::Tensor> images, labels;
  for (int i = 1; i <= 5; ++i) {
    images.push_back(torch::randint(0, 256, {7, 3, 32, 32}, torch::kUInt8));
    labels.push_back(torch::randint(0, 10, {7}, torch::kInt64));
    write_cifar_file(dir.file("data_batch_" + std::to_string(i) + ".bin"), CifarKind::kCifar10, images.back(),
                     labels.back());
  }
  const auto test_x = torch::randint(0, 256, {9, 3, 32, 32}, torch::kUInt8);
  const auto test_y = torch::randint(0, 10, {9}, torch::kInt64);
  write_cifar_file(dir.file("test_batch.bin"), CifarKind::kCifar10, test_x, test_y);
  atomic_write_file(dir.file("batches.meta.txt"),
                    "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n");
  // The record layout is the published one: label byte, then the red, green, blue planes.
  const std::string raw = read_file(dir.file("test_batch.bin"));
  ASSERT_EQ(raw.size(), 9u * 3073u);
  EXPECT_EQ(static_cast<uint8_t>(raw[0]), test_y[0].item<int64_t>());
  EXPECT_EQ(static_cast<uint8_t>(raw[1 + 1024]), test_x[0][1][0][0].item<uint8_t>());

  const auto train = load_dataset(dir.path(), Split::kTrain);
  EXPECT_TRUE(torch::equal(train.images, torch::cat(images)));
  EXPECT_TRUE(torch::equal(train.labels, torch::cat(labels)));
  EXPECT_EQ(train.class_names[9], "truck");
  const auto test = load_dataset(dir.path(), Split::kTest);
  EXPECT_TRUE(torch::equal(test.images, test_x));
  EXPECT_TRUE(torch::equal(test.labels, test_y));
  // One file given directly.
  EXPECT_TRUE(torch::equal(load_dataset(dir.file("test_batch.bin"), Split::kTest).images, test_x));

  // CIFAR-100: coarse + fine label bytes; the fine label is the class.
  TempDir hundred;
  const auto y100 = torch::tensor({0, 42, 99}, torch::kInt64);
  write_cifar_file(hundred.file("test.bin"), CifarKind::kCifar100, test_x.narrow(0, 0, 3), y100);
  write_cifar_file(hundred.file("train.bin"), CifarKind::kCifar100, test_x.narrow(0, 0, 3), y100);
  const auto c100 = load_dataset(hundred.path(), Split::kTest);
  EXPECT_TRUE(torch::equal(c100.labels, y100));
  EXPECT_EQ(c100.class_names.size(), 100u);
}

TEST(Cifar, BadFilesAreNamed) {
  TempDir dir;
  const auto x = torch::zeros({2, 3, 32, 32}, torch::kUInt8);
  write_cifar_file(dir.file("test_batch.bin"), CifarKind::kCifar10, x, torch::tensor({1, 2}));
  std::string raw = read_file(dir.file("test_batch.bin"));
  atomic_write_file(dir.file("test_batch.bin"), raw.substr(0, raw.size() - 1));
  EXPECT_NE(error_of([&] { load_dataset(dir.file("test_batch.bin"), Split::kTest); }).find("not a whole number"),
            std::string::npos);
  raw[3073] = 10;  // the second record's label
  atomic_write_file(dir.file("test_batch.bin"), raw);
  const std::string label = error_of([&] { load_dataset(dir.file("test_batch.bin"), Split::kTest); });
  EXPECT_NE(label.find("record 1 has label 10"), std::string::npos) << label;
  // A renamed file could be either CIFAR: refused rather than guessed.
  atomic_write_file(dir.file("mine.bin"), raw);
  EXPECT_NE(error_of([&] { load_dataset(dir.file("mine.bin"), Split::kTest); }).find("must keep its name"),
            std::string::npos);
  // Data of another shape than the model's is refused before any work, not converted.
  write_cifar_file(dir.file("test_batch.bin"), CifarKind::kCifar10, x, torch::tensor({1, 2}));
  LoadOptions mnist;
  mnist.shape = {1, 28, 28};
  const std::string shape = error_of([&] { load_dataset(dir.file("test_batch.bin"), Split::kTest, mnist); });
  EXPECT_NE(shape.find("images are 3x32x32 but the model takes 1x28x28"), std::string::npos) << shape;
}

TEST(Npz, ReadsWhatNumpyWrites) {
  const auto& fx = fixture_dir();
  const auto x = read_raw(fx + "/npz_x.bin", {6, 8, 9, 3}, torch::kUInt8).permute({0, 3, 1, 2}).contiguous();
  const auto y = read_raw(fx + "/npz_y.bin", {6}, torch::kInt64);
  for (const char* name : {"nhwc.npz", "nchw.npz"}) {
    const auto d = load_dataset(fx + "/" + name, Split::kTest);
    EXPECT_TRUE(torch::equal(d.images, x)) << name;
    EXPECT_TRUE(torch::equal(d.labels, y)) << name;
    EXPECT_EQ(d.split, "given");
  }
  const auto train = load_dataset(fx + "/keras.npz", Split::kTrain);
  const auto test = load_dataset(fx + "/keras.npz", Split::kTest);
  EXPECT_TRUE(torch::equal(train.images, x.narrow(0, 0, 4)));
  EXPECT_TRUE(torch::equal(test.labels, y.narrow(0, 4, 2)));
  EXPECT_NE(error_of([&] { load_dataset(fx + "/ambiguous.npz", Split::kTest); }).find("reads as both"), std::string::npos);
  EXPECT_NE(error_of([&] { load_dataset(fx + "/fortran.npz", Split::kTest); }).find("Fortran"), std::string::npos);
  EXPECT_NE(error_of([&] { load_dataset(fx + "/floats.npz", Split::kTest); }).find("uint8"), std::string::npos);
  // Our writer's files read back too (numpy.load reads them: the bench's Python side uses them).
  TempDir dir;
  write_npz(dir.file("w.npz"), x, y);
  const auto back = load_dataset(dir.file("w.npz"), Split::kTest);
  EXPECT_TRUE(torch::equal(back.images, x));
  EXPECT_TRUE(torch::equal(back.labels, y));  // int64 labels: a copy, not a view of the freed file bytes
  atomic_write_file(dir.file("bad.npz"), "PK not really");
  EXPECT_NE(error_of([&] { load_dataset(dir.file("bad.npz"), Split::kTest); }).find("bad.npz"), std::string::npos);
}

TEST(Augment, CropFlipIsSeededAndKeepsPixels) {
  torch::manual_seed(0);
  const auto x = torch::rand({16, 3, 8, 8});
  const auto a = crop_flip(x, 5), b = crop_flip(x, 5), c = crop_flip(x, 6);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
  EXPECT_EQ(a.sizes(), x.sizes());
  // With no padding only flips remain: each image is itself or its mirror, and both happen.
  const auto f = crop_flip(x, 7, 0);
  int flipped = 0, same = 0;
  for (int64_t i = 0; i < 16; ++i) {
    if (torch::equal(f[i], x[i])) ++same;
    else if (torch::equal(f[i], x[i].flip({2}))) ++flipped;
  }
  EXPECT_EQ(same + flipped, 16);
  EXPECT_GT(same, 0);
  EXPECT_GT(flipped, 0);
}

}  // namespace
}  // namespace bulwark::data

namespace bulwark::data {
namespace {

// One check for every command and the loop's jobs: labels in range, named classes in the model's order.
TEST(Classes, LabelsAndNamesMustFitTheModel) {
  Dataset d;
  d.name = "set";
  d.images = torch::zeros({3, 1, 2, 2}, torch::kUInt8);
  d.labels = torch::tensor({0, 2, 1}, torch::kInt64);
  d.class_names = {"a", "b", "c"};
  EXPECT_NO_THROW(check_classes(d, {"a", "b", "c"}));
  EXPECT_NO_THROW(check_classes(d, {"0", "1", "2"}));  // numbered: by count only
  EXPECT_THROW(check_classes(d, {"0", "1"}), Error);   // label 2 out of range
  try {
    check_classes(d, {"a", "c", "b"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("class 1 is 'b' but the model's class 1 is 'c'"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(numbered_classes({"0", "1"}));
  EXPECT_FALSE(numbered_classes({"1", "0"}));
}

}  // namespace
}  // namespace bulwark::data
