#include <gtest/gtest.h>

#include <torch/torch.h>

#include "core/error.h"
#include "core/files.h"
#include "data/dataset.h"
#include "model/model.h"
#include "model/zoo.h"
#include "test_util.h"
#include "train/evaluate.h"

namespace bulwark::model {
namespace {

using testing::TempDir;

TEST(Zoo, EveryArchitectureGivesLogitsAndFeatures) {
  const auto x = torch::rand({3, 1, 28, 28});
  for (const auto& arch : zoo_architectures()) {
    const Model m = create_model(arch, default_spec(), 1);
    EXPECT_EQ(m.logits(x).sizes(), (std::vector<int64_t>{3, 10})) << arch;
    ASSERT_TRUE(m.has_features()) << arch;
    EXPECT_EQ(m.features(x).dim(), 2) << arch;
    EXPECT_EQ(m.spec().arch, arch);
  }
}

TEST(Zoo, SeedDeterminesWeights) {
  const auto x = torch::rand({2, 1, 28, 28});
  const Model a = create_model("cnn-small", default_spec(), 5);
  const Model b = create_model("cnn-small", default_spec(), 5);
  const Model c = create_model("cnn-small", default_spec(), 6);
  EXPECT_TRUE(torch::equal(a.logits(x), b.logits(x)));
  EXPECT_FALSE(torch::equal(a.logits(x), c.logits(x)));
}

TEST(Zoo, UnknownArchitectureListsTheZoo) {
  try {
    create_model("resnet", default_spec(), 0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("cnn-small"), std::string::npos) << e.what();
  }
}

TEST(Model, SaveLoadRoundTripKeepsLogitsAndSpec) {
  TempDir dir;
  ModelSpec spec = default_spec();
  spec.dataset = "fashion-mnist";
  spec.class_names[3] = "Dress";
  spec.training = {{"test_accuracy", 0.5}};
  const Model m = create_model("cnn", spec, 3);
  m.save(dir.file("m.pt"));
  const Model back = Model::load(dir.file("m.pt"));
  const auto x = torch::rand({5, 1, 28, 28});
  EXPECT_TRUE(torch::equal(m.logits(x), back.logits(x)));
  EXPECT_TRUE(torch::equal(m.features(x), back.features(x)));
  EXPECT_EQ(back.spec().arch, "cnn");
  EXPECT_EQ(back.spec().class_names[3], "Dress");
  EXPECT_EQ(back.spec().seed, 3u);
  EXPECT_EQ(back.spec().training["test_accuracy"], 0.5);
}

TEST(Model, CheckInputRejectsWrongShape) {
  const Model m = create_model("mlp", default_spec(), 0);
  EXPECT_NO_THROW(m.check_input(torch::zeros({2, 1, 28, 28})));
  EXPECT_THROW(m.check_input(torch::zeros({2, 3, 28, 28})), Error);
  EXPECT_THROW(m.check_input(torch::zeros({28, 28})), Error);
}

TEST(Model, CloneIsIndependent) {
  Model m = create_model("mlp", default_spec(), 0);
  Model copy = m.clone();
  {
    torch::NoGradGuard g;
    m.parameters()[0].add_(1.0);
  }
  const auto x = torch::rand({1, 1, 28, 28});
  EXPECT_FALSE(torch::equal(m.logits(x), copy.logits(x)));
  for (const auto& p : copy.parameters()) {
    EXPECT_TRUE(p.is_leaf()) << "an optimizer cannot own a non-leaf parameter";
    EXPECT_TRUE(p.requires_grad());
  }
}

// set_channels_last gives every conv weight channels-last strides (the one-input-channel conv1 too,
// whose NCHW strides read as NCHW), the logits stay equal to rounding and the convolutions' outputs
// come out channels-last; off restores NCHW strides, and channels_last(x) does the same for inputs.
TEST(Model, ChannelsLastRelayoutsConvWeightsAndKeepsLogits) {
  Model m = create_model("cnn", default_spec(), 2);
  const auto x = torch::rand({8, 1, 28, 28});
  torch::NoGradGuard no_grad;
  const auto before = m.logits(x);
  m.set_channels_last(true);
  int64_t convs = 0;
  for (const auto& p : m.parameters()) {
    if (p.dim() != 4) continue;
    ++convs;
    EXPECT_EQ(p.suggest_memory_format(), at::MemoryFormat::ChannelsLast) << p.sizes();
    EXPECT_TRUE(p.requires_grad()) << "a parameter stays a parameter";
  }
  EXPECT_EQ(convs, 2);
  EXPECT_EQ(m.module().attr("conv1_weight").toTensor().stride(1), 1) << "one input channel: explicit NHWC strides";
  const auto conv1 = torch::conv2d(x, m.module().attr("conv1_weight").toTensor(), m.module().attr("conv1_bias").toTensor(), 1, 1);
  EXPECT_EQ(conv1.suggest_memory_format(), at::MemoryFormat::ChannelsLast);
  const auto during = m.logits(x);
  EXPECT_TRUE(torch::allclose(during, before, 1e-5, 1e-5)) << (during - before).abs().max();
  m.set_channels_last(false);
  for (const auto& p : m.parameters()) {
    if (p.dim() == 4) {
      EXPECT_EQ(p.suggest_memory_format(), at::MemoryFormat::Contiguous) << p.sizes();
    }
  }
  EXPECT_TRUE(torch::equal(m.logits(x), before)) << "back in NCHW, the NCHW sums";

  const auto xc = channels_last(x);
  EXPECT_EQ(xc.suggest_memory_format(), at::MemoryFormat::ChannelsLast);
  EXPECT_TRUE(torch::equal(xc, x));
  EXPECT_TRUE(channels_last(xc).is_same(xc)) << "already channels-last: no copy";
  const auto flat = torch::rand({4, 784});
  EXPECT_TRUE(channels_last(flat).is_same(flat)) << "not 4-D: unchanged";
}

TEST(Model, GarbageFileIsADataFormatErrorNamingThePath) {
  TempDir dir;
  atomic_write_file(dir.file("bad.pt"), "this is not a zip archive");
  try {
    Model::load(dir.file("bad.pt"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kDataFormat);
    EXPECT_NE(std::string(e.what()).find(dir.file("bad.pt")), std::string::npos) << e.what();
  }
}

TEST(Model, TruncatedArchiveIsAnError) {
  TempDir dir;
  create_model("mlp", default_spec(), 0).save(dir.file("m.pt"));
  const std::string bytes = read_file(dir.file("m.pt"));
  atomic_write_file(dir.file("cut.pt"), bytes.substr(0, bytes.size() / 2));
  EXPECT_THROW(Model::load(dir.file("cut.pt")), Error);
}

TEST(Model, MissingFileIsNotFound) {
  try {
    Model::load("/no/such/model.pt");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNotFound);
  }
}

TEST(Spec, MalformedSpecNamesTheField) {
  auto j = default_spec().to_json();
  j["value_range"] = {1.0, 0.0};
  try {
    ModelSpec::from_json(j, "m.pt");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("value_range"), std::string::npos) << e.what();
  }
  j = default_spec().to_json();
  j["input_shape"] = {1, 28};
  EXPECT_THROW(ModelSpec::from_json(j, "m.pt"), Error);
  j = default_spec().to_json();
  j["format"] = "other";
  EXPECT_THROW(ModelSpec::from_json(j, "m.pt"), Error);
  EXPECT_THROW(ModelSpec::from_json(nlohmann::json::array(), "m.pt"), Error);
}

// Found by fuzz/model_spec.cpp: a non-string format escaped as nlohmann's type_error, and numbers
// of the wrong kind were converted silently (1.5 -> 1) or with undefined behaviour (1e300 to an
// integer or to float). Each is a data_format error naming the field.
TEST(Spec, FieldsOfTheWrongTypeAreDataFormatErrors) {
  const std::vector<std::pair<std::string, nlohmann::json>> cases = {
      {"format", 1},
      {"input_shape", {1.5, 28, 28}},
      {"input_shape", {1e300, 28, 28}},
      {"value_range", {0.0, 1e300}},
      {"seed", -1},
      {"seed", 1e30},
  };
  for (const auto& c : cases) {
    auto j = default_spec().to_json();
    j[c.first] = c.second;
    try {
      ModelSpec::from_json(j, "m.pt");
      ADD_FAILURE() << c.first << " = " << c.second.dump() << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kDataFormat) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.first), std::string::npos) << e.what();
    }
  }
}

// --feature-layer NAME: feature detectors read that submodule's output, found in forward's graph
// through the calls on the way (torchvision's _forward_impl; layer4's forward for layer4.1). On a
// torchvision resnet18: avgpool's output is the flattened input of fc (what the automatic choice
// takes), layer4.1 is the last block of layer4 (the same tensor), the choice survives a save, and
// a name forward() never calls is refused naming the submodules there are.
TEST(PyTorchInterop, AFeatureLayerByNameReadsThatSubmodulesOutput) {
  TempDir dir;
  const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR +
                                      "/make_plain_resnet18.py " + dir.file("r18.pt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ModelSpec spec;
  spec.input_shape = {3, 32, 32};
  const auto with_layer = [&](const std::string& layer) {
    ModelSpec s = spec;
    s.feature_layer = layer;
    return Model::import_torchscript(dir.file("r18.pt"), s);
  };
  const Model automatic = Model::import_torchscript(dir.file("r18.pt"), spec);
  const Model avgpool = with_layer("avgpool"), layer4 = with_layer("layer4"), block = with_layer("layer4.1");
  torch::NoGradGuard no_grad;
  const auto x = torch::rand({2, 3, 32, 32});
  const auto fc_input = automatic.features(x);
  EXPECT_EQ(fc_input.sizes(), (std::vector<int64_t>{2, 512}));
  EXPECT_EQ(avgpool.features(x).sizes(), (std::vector<int64_t>{2, 512, 1, 1}));
  EXPECT_TRUE(torch::allclose(avgpool.features(x).flatten(1), fc_input, 1e-5, 1e-5));
  const auto l4 = layer4.features(x);
  EXPECT_EQ(l4.sizes(), (std::vector<int64_t>{2, 512, 1, 1}));  // 32 / 32 = 1 at layer4
  EXPECT_TRUE(torch::allclose(block.features(x), l4, 1e-6, 1e-6));
  const auto l3 = with_layer("layer3").features(x);
  EXPECT_EQ(l3.sizes(), (std::vector<int64_t>{2, 256, 2, 2}));
  EXPECT_TRUE(torch::allclose(block.logits(x), automatic.logits(x), 1e-6, 1e-6)) << "forward() is untouched";

  block.save(dir.file("saved.pt"));
  const Model reloaded = Model::load(dir.file("saved.pt"));
  EXPECT_EQ(reloaded.spec().feature_layer, "layer4.1");
  EXPECT_TRUE(torch::allclose(reloaded.features(x), l4, 1e-6, 1e-6));

  for (const std::string bad : {"layer9", "fc.weight", "layer4.7"}) {
    try {
      with_layer(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("layer1, layer2, layer3, layer4"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(check_feature_layer("../etc", "--feature-layer"), Error);
  auto j = spec.to_json();
  j["class_names"] = {"a", "b", "c"};
  j["feature_layer"] = "layer4..1";
  EXPECT_THROW(ModelSpec::from_json(j, "m.pt"), Error);
}

// A model exported by Debian's python3-torch loads, gives PyTorch's logits, and evaluates.
TEST(PyTorchInterop, TorchScriptFromPythonLoadsAndMatches) {
  TempDir dir;
  const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR +
                                      "/make_torchscript.py " + dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // No spec, no guess: loading names the command that writes one.
  try {
    Model::load(dir.file("pytorch_model.pt"));
    FAIL() << "an archive without a spec loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bulwark import"), std::string::npos) << e.what();
  }
  const Model m = Model::import_torchscript(dir.file("pytorch_model.pt"), ModelSpec{});
  EXPECT_EQ(m.spec().num_classes(), 10);  // from the probe's logits
  // features(): the input of the last linear layer, found in forward's graph (fc's input, the
  // flattened activations), so that its linear layer gives back the logits.
  ASSERT_TRUE(m.has_features());
  {
    torch::NoGradGuard no_grad;
    EvalMode eval(m);
    const auto x = torch::rand({3, 1, 28, 28});
    const auto f = m.features(x);
    EXPECT_EQ(f.sizes(), (std::vector<int64_t>{3, 8 * 14 * 14}));
    auto& module = const_cast<Model&>(m).module();
    const auto fc = module.attr("fc").toModule();
    const auto z = torch::linear(f, fc.attr("weight").toTensor(), fc.attr("bias").toTensor());
    EXPECT_TRUE(torch::allclose(z, m.logits(x), 1e-5, 1e-5));
  }
  const auto x = testing::read_floats(dir.file("input.bin"), {4, 1, 28, 28});
  const auto expected = testing::read_floats(dir.file("logits.bin"), {4, 10});
  EXPECT_TRUE(torch::allclose(m.predict_logits(x), expected, 1e-5, 1e-5));

  const auto test = data::load_dataset("fashion-mnist", data::Split::kTest).head(200);
  const auto result = train::evaluate(m, test);
  EXPECT_EQ(result.n, 200);

  // A sidecar spec beside the archive is picked up.
  ModelSpec spec = default_spec();
  spec.dataset = "fashion-mnist";
  spec.class_names[0] = "T-shirt/top";
  atomic_write_file(dir.file("pytorch_model.pt.json"), spec.to_json().dump());
  const Model with_spec = Model::load(dir.file("pytorch_model.pt"));
  EXPECT_EQ(with_spec.spec().class_names[0], "T-shirt/top");
}

// An archive saved in train mode is probed for its class count in eval mode: importing leaves its
// BatchNorm statistics as they were saved.
TEST(PyTorchInterop, LoadingLeavesBatchNormStatisticsAlone) {
  TempDir dir;
  const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR +
                                      "/make_batchnorm_model.py " + dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Model m = Model::import_torchscript(dir.file("batchnorm_model.pt"), ModelSpec{});
  int64_t checked = 0;
  for (const auto& b : m.module().named_buffers()) {
    if (b.name == "bn.num_batches_tracked") {
      EXPECT_EQ(b.value.item<int64_t>(), 0) << "the probe ran in train mode";
      ++checked;
    } else if (b.name == "bn.running_mean") {
      EXPECT_TRUE(torch::equal(b.value, torch::zeros(4))) << b.value;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2);
  EXPECT_FALSE(m.module().is_training());
}

// What Bulwark saves loads in Python's torch.jit.load with the same logits.
TEST(PyTorchInterop, BulwarkModelLoadsInPythonWithIdenticalLogits) {
  TempDir dir;
  for (const auto& arch : zoo_architectures()) {
    const Model m = create_model(arch, default_spec(), 11);
    m.save(dir.file(arch + ".pt"));
    const auto x = torch::rand({6, 1, 28, 28});
    testing::write_floats(dir.file("x.bin"), x);
    const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR +
                                        "/logits_in_python.py " + dir.file(arch + ".pt") + " " + dir.file("x.bin") +
                                        " 1 28 28 " + dir.file("y.bin"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(arch), std::string::npos) << "spec not readable from Python: " << r.output;
    const auto from_python = testing::read_floats(dir.file("y.bin"), {6, 10});
    EXPECT_TRUE(torch::allclose(m.predict_logits(x), from_python, 1e-6, 1e-6))
        << arch << " max diff " << (m.predict_logits(x) - from_python).abs().max().item<float>();
  }
}

}  // namespace
}  // namespace bulwark::model

namespace bulwark::model {
namespace {

// The spec's normalisation runs before the module, with gradients in pixel space; it travels in the
// archive; a normalisation that does not fit the input is refused by name.
TEST(Normalisation, AppliedBeforeTheModuleAndSaved) {
  ModelSpec spec = default_spec();
  spec.input_shape = {3, 8, 8};
  spec.mean = {0.5f, 0.4f, 0.3f};
  spec.std = {0.2f, 0.25f, 0.5f};
  const Model plain = create_model("mlp", [&] {
    ModelSpec s = spec;
    s.mean.clear();
    s.std.clear();
    return s;
  }(), 3);
  const Model norm(plain.clone().module(), spec);
  torch::manual_seed(1);
  auto x = torch::rand({4, 3, 8, 8}).requires_grad_(true);
  const auto mean = torch::tensor(spec.mean).view({1, 3, 1, 1}), std = torch::tensor(spec.std).view({1, 3, 1, 1});
  EXPECT_TRUE(torch::allclose(norm.logits(x), plain.logits((x - mean) / std), 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(norm.logits(x), plain.logits(x), 1e-3, 1e-3));
  norm.logits(x).sum().backward();
  ASSERT_TRUE(x.grad().defined());  // the attack's gradient reaches the pixels
  TempDir dir;
  norm.save(dir.file("n.pt"));
  const Model back = Model::load(dir.file("n.pt"));
  EXPECT_EQ(back.spec().mean, spec.mean);
  EXPECT_EQ(back.spec().std, spec.std);
  EXPECT_TRUE(torch::allclose(back.logits(x), norm.logits(x)));

  auto j = spec.to_json();
  j["normalize"]["std"] = {0.2, 0.0, 0.5};
  EXPECT_THROW(ModelSpec::from_json(j, "x"), Error);
  j["normalize"]["std"] = {0.2, 0.5};
  try {
    ModelSpec::from_json(j, "x");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("one mean and one std per input channel (3)"), std::string::npos) << e.what();
  }
  j["normalize"] = "imagenet";
  EXPECT_THROW(ModelSpec::from_json(j, "x"), Error);
}

TEST(Normalisation, ShapeAndNumberFlagsParse) {
  EXPECT_EQ(parse_shape("3,32,32", "--input-shape"), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(parse_shape("1x28x28", "--input-shape"), (std::vector<int64_t>{1, 28, 28}));
  for (const char* bad : {"3,32", "3,32,32,1", "3,,32", "a,b,c", "0,32,32", "3,99999,32", ""}) {
    EXPECT_THROW(parse_shape(bad, "--input-shape"), Error) << bad;
  }
  EXPECT_EQ(parse_floats("0.5,-1,2e-1", "--mean"), (std::vector<float>{0.5f, -1.0f, 0.2f}));
  for (const char* bad : {"0.5,", "x", "1e400", "nan", "0.5 0.4"}) EXPECT_THROW(parse_floats(bad, "--mean"), Error) << bad;
}

}  // namespace
}  // namespace bulwark::model

namespace bulwark::model {
namespace {

// The zoo's ResNets compute what the published PyTorch definitions compute with the same weights
// (pytorch-cifar's ResNet18, Rice et al.'s PreActResNet18), after a few training steps have moved the
// BatchNorm statistics off their initial values; and BatchNorm follows train/eval mode.
TEST(ZooResnet, MatchesThePublishedDefinitions) {
  for (const std::string arch : {"resnet18", "preact-resnet18"}) {
    ModelSpec spec = default_spec(10);
    spec.input_shape = {3, 32, 32};
    Model m = create_model(arch, spec, 4);
    EXPECT_TRUE(m.has_features());
    torch::manual_seed(2);
    const auto x = torch::rand({4, 3, 32, 32});
    // Train mode: batch statistics, and the running statistics move.
    m.set_training(true);
    const auto before = m.snapshot().buffers;
    {
      torch::NoGradGuard no_grad;
      m.logits(torch::rand({8, 3, 32, 32}));
    }
    const auto after = m.snapshot().buffers;
    ASSERT_FALSE(before.empty());
    EXPECT_FALSE(torch::equal(before[0], after[0])) << arch << ": running statistics did not move in train mode";
    const auto eval_logits = m.predict_logits(x);
    EXPECT_TRUE(torch::equal(m.snapshot().buffers[0], after[0])) << arch << ": eval mode moved the statistics";
    EXPECT_EQ(eval_logits.sizes(), (std::vector<int64_t>{4, 10}));
    TempDir dir;
    m.save(dir.file("m.pt"));
    testing::write_floats(dir.file("x.bin"), x);
    testing::write_floats(dir.file("logits.bin"), eval_logits);
    const auto r = testing::run_command(std::string(testing::kPython) + " " + BULWARK_FIXTURES_DIR +
                                        "/resnet_reference.py " + arch + " " + dir.file("m.pt") + " " +
                                        dir.file("x.bin") + " " + dir.file("logits.bin"));
    EXPECT_EQ(r.exit_code, 0) << arch << ": " << r.output;
  }
  EXPECT_THROW(create_model("resnet18", [] {
                 ModelSpec s = default_spec();
                 s.input_shape = {3, 4, 4};
                 return s;
               }(), 0),
               Error);
}

}  // namespace
}  // namespace bulwark::model
