// Bring your own model and data (issue 30), end to end through the real binary: a torchvision
// resnet18 trained in Python on an RGB image folder is refused until imported, then evaluated image
// for image as PyTorch does (normalisation inside the module, or outside it with --mean/--std), and
// served with UINT8 input as image clients send it.
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/files.h"
#include "model/model.h"
#include "server_fixture.h"
#include "server_process.h"

namespace bulwark::testing {
namespace {

using nlohmann::json;

const char* kMean = "0.4914,0.4822,0.4465";
const char* kStd = "0.2470,0.2435,0.2616";

// The Python side (tests/fixtures/make_resnet18.py), made once for this binary.
const std::string& resnet_dir() {
  static TempDir dir;
  static const bool made = [] {
    const auto r = run_command(std::string(kPython) + " " + BULWARK_FIXTURES_DIR + "/make_resnet18.py " + dir.path());
    if (r.exit_code != 0) ADD_FAILURE() << r.output;
    return r.exit_code == 0;
  }();
  (void)made;
  static const std::string path = dir.path();
  return path;
}

CommandResult bulwark(const std::string& args) { return run_command(std::string(BULWARK_BIN) + " " + args); }

std::vector<int64_t> lines_of(const std::string& text) {
  std::vector<int64_t> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(std::stoll(line));
  }
  return out;
}

std::vector<int64_t> predictions_csv(const std::string& path) {
  std::vector<int64_t> out;
  std::istringstream in(read_file(path));
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) out.push_back(std::stoll(line.substr(line.rfind(',') + 1)));
  return out;
}

TEST(ByoModel, ArchiveWithoutSpecIsRefusedByEveryCommand) {
  const auto& rn = resnet_dir();
  const std::string model = rn + "/outside.pt", data = rn + "/data";
  for (const std::string& args :
       {"eval --model " + model + " --data " + data, "attack --model " + model + " --data " + data + " --attacks pgd",
        "harden --model " + model + " --data " + data + " --out /dev/null/x.pt",
        "detect calibrate --model " + model + " --data " + data + " --out /dev/null/x.detect",
        "serve --allow-unsigned --http-port 0 --grpc-port -1 --model m=" + model, "info " + model}) {
    const auto r = bulwark(args);
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.output;
    EXPECT_NE(r.output.find("bulwark import"), std::string::npos) << args << "\n" << r.output;
  }
}

TEST(ByoModel, ImportedResnetEvaluatesImageForImageAsPyTorch) {
  const auto& rn = resnet_dir();
  TempDir dir;
  const auto expected = lines_of(read_file(rn + "/preds.txt"));
  ASSERT_EQ(expected.size(), 36u);
  // Not a constant: a model that predicts one class could not show a wrong normalisation.
  ASSERT_GT(std::set<int64_t>(expected.begin(), expected.end()).size(), 1u);

  // Normalisation inside the module; class names from the data.
  auto r = bulwark("import " + rn + "/inside.pt --input-shape 3,32,32 --data " + rn + "/data --out " + dir.file("in.pt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Normalisation outside: Bulwark applies it; class names from a file.
  r = bulwark("import " + rn + "/outside.pt --input-shape 3,32,32 --mean " + kMean + " --std " + kStd + " --classes " +
              rn + "/classes.txt --out " + dir.file("out.pt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* name : {"in.pt", "out.pt"}) {
    r = bulwark("--json eval --model " + dir.file(name) + " --data " + rn + "/data --predictions " + dir.file("p.csv"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(predictions_csv(dir.file("p.csv")), expected) << name;
  }
  // Over --max-memory (36 images of 3 KB against 20 KB) the folder is read from a scratch file: the
  // same predictions, image for image.
  r = testing::run_command("BULWARK_SCRATCH_DIR=" + std::filesystem::current_path().string() + " " +
                           std::string(BULWARK_BIN) + " --json eval --model " + dir.file("out.pt") + " --data " + rn +
                           "/data --max-memory 20K --predictions " + dir.file("p.csv"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("held in a scratch file"), std::string::npos) << r.output;
  EXPECT_EQ(predictions_csv(dir.file("p.csv")), expected) << "streamed";
  // Feature detectors need the penultimate features: found as the input of torchvision's fc (through
  // forward -> _forward_impl -> fc), so fc of them gives the logits.
  {
    const auto m = model::Model::load(dir.file("out.pt"));
    ASSERT_TRUE(m.has_features());
    torch::NoGradGuard no_grad;
    model::EvalMode eval(m);
    const auto x = torch::rand({2, 3, 32, 32});
    const auto f = m.features(x);
    EXPECT_EQ(f.sizes(), (std::vector<int64_t>{2, 512}));
    auto& module = const_cast<model::Model&>(m).module();
    const auto fc = module.attr("fc").toModule();
    EXPECT_TRUE(torch::allclose(torch::linear(f, fc.attr("weight").toTensor(), fc.attr("bias").toTensor()),
                                m.logits(x), 1e-4, 1e-4));
  }
  const auto info = json::parse(bulwark("--json info " + dir.file("out.pt")).output);
  EXPECT_EQ(info["input_shape"], json({3, 32, 32}));
  EXPECT_EQ(info["class_names"][2], "truck");
  EXPECT_EQ(info["normalize"]["std"].size(), 3u);

  // The same archive imported without its normalisation predicts otherwise: the figure above
  // depends on Bulwark applying --mean/--std.
  r = bulwark("import " + rn + "/outside.pt --input-shape 3,32,32 --classes " + rn + "/classes.txt --out " +
              dir.file("raw.pt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = bulwark("eval --model " + dir.file("raw.pt") + " --data " + rn + "/data --predictions " + dir.file("raw.csv"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(predictions_csv(dir.file("raw.csv")), expected);
}

TEST(ByoModel, ImportChecksItsInputsAndDataMustFit) {
  const auto& rn = resnet_dir();
  TempDir dir;
  // Classes that do not match the logits; a normalisation of the wrong length; a bad shape.
  std::ofstream(dir.file("two.txt")) << "a\nb\n";
  auto r = bulwark("import " + rn + "/outside.pt --input-shape 3,32,32 --classes " + dir.file("two.txt") + " --out " +
                   dir.file("x.pt"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("returns 3 logits per image but 2 class names"), std::string::npos) << r.output;
  r = bulwark("import " + rn + "/outside.pt --input-shape 3,32,32 --mean 0.5 --std 0.5 --out " + dir.file("x.pt"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--mean and --std need one value per input channel (3)"), std::string::npos) << r.output;
  r = bulwark("import " + rn + "/outside.pt --input-shape 3,32 --out " + dir.file("x.pt"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--input-shape"), std::string::npos) << r.output;
  EXPECT_FALSE(file_exists(dir.file("x.pt")));

  r = bulwark("import " + rn + "/outside.pt --input-shape 3,32,32 --mean " + std::string(kMean) + " --std " + kStd +
              " --data " + rn + "/data --out " + dir.file("m.pt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Grayscale 28x28 data for an RGB 32x32 model: refused before any work, naming both shapes.
  r = bulwark("attack --model " + dir.file("m.pt") + " --data fashion-mnist --attacks pgd --n 10");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("images are 1x28x28 but the model takes 3x32x32"), std::string::npos) << r.output;
  // An image folder whose classes are not the model's (one class folder missing shifts the labels).
  std::filesystem::copy(rn + "/data/test", dir.file("shifted"), std::filesystem::copy_options::recursive);
  std::filesystem::remove_all(dir.file("shifted/airplane"));
  r = bulwark("eval --model " + dir.file("m.pt") + " --data " + dir.file("shifted"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("class 0 is 'bird' but the model's class 0 is 'airplane'"), std::string::npos) << r.output;
}

TEST(ByoModel, ServedWithUint8InputAnswersAsPyTorch) {
  const auto& rn = resnet_dir();
  TempDir dir;
  auto r = bulwark("import " + rn + "/outside.pt --input-shape 3,32,32 --mean " + std::string(kMean) + " --std " +
                   kStd + " --classes " + rn + "/classes.txt --out " + dir.file("m.pt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ServerProcess p({"--json", "serve", "--allow-unsigned", "--http-port", "0", "--grpc-port", "-1", "--access-log",
                   "off", "--model", "resnet=" + dir.file("m.pt")});
  const auto line = p.first_line();
  ASSERT_FALSE(line.empty()) << "server printed nothing";
  httplib::Client c("127.0.0.1", json::parse(line)["http_port"].get<int>());
  c.set_read_timeout(30, 0);
  const auto meta = json::parse(c.Get("/v2/models/resnet")->body);
  EXPECT_EQ(meta["inputs"][0]["shape"], json({-1, 3, 32, 32})) << meta.dump();

  const auto pixels = read_floats(rn + "/probe.bin", {1, 3, 32, 32});
  std::vector<int> bytes;
  for (int64_t i = 0; i < pixels.numel(); ++i) {
    bytes.push_back(static_cast<int>(std::lround(pixels.view(-1)[i].item<float>() * 255.0f)));
  }
  const json body = {{"inputs", {{{"name", "input"}, {"shape", {1, 3, 32, 32}}, {"datatype", "UINT8"}, {"data", bytes}}}},
                     {"outputs", {{{"name", "label"}}}}};
  const auto res = c.Post("/v2/models/resnet/infer", body.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const std::vector<std::string> classes = {"airplane", "bird", "truck"};
  const auto expected = lines_of(read_file(rn + "/probe_label.txt")).at(0);
  EXPECT_EQ(json::parse(res->body)["outputs"][0]["data"][0], classes.at(static_cast<size_t>(expected)));
  // A 28x28 grayscale request is refused, naming the model's shape.
  const auto bad = c.Post("/v2/models/resnet/infer", infer_body().dump(), "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("[N, 3, 32, 32]"), std::string::npos) << bad->body;
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit(), 0);
}

}  // namespace
}  // namespace bulwark::testing
