#include "serve/outputs.h"

#include <torch/torch.h>

namespace bulwark::serve {
namespace {

InferOutput fp32_output(const std::string& name, const torch::Tensor& t, bool binary) {
  InferOutput o;
  o.name = name;
  o.datatype = "FP32";
  o.shape = t.sizes().vec();
  const auto c = t.contiguous().to(torch::kFloat);
  o.fp32.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  o.binary = binary;
  return o;
}

InferOutput label_output(const torch::Tensor& logits, const model::ModelSpec& spec, bool binary) {
  InferOutput lab;
  lab.name = "label";
  lab.datatype = "BYTES";
  lab.binary = binary;
  const auto idx = logits.argmax(1).contiguous();
  const int64_t* top = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < idx.size(0); ++i) {
    const auto c = top[i];
    lab.bytes.push_back(c < spec.num_classes() ? spec.class_names[c] : std::to_string(c));
  }
  lab.shape = {static_cast<int64_t>(lab.bytes.size())};
  return lab;
}

}  // namespace

std::vector<InferOutput> build_outputs(const InferRequest& r, const at::Tensor& logits, const model::ModelSpec& spec) {
  auto requested = r.outputs;
  if (requested.empty()) requested = {{"logits", false}, {"probabilities", false}, {"label", false}};
  std::vector<InferOutput> out;
  for (const auto& o : requested) {
    const bool binary = o.binary || r.binary_outputs;
    if (o.name == "logits") out.push_back(fp32_output("logits", logits, binary));
    else if (o.name == "probabilities") out.push_back(fp32_output("probabilities", torch::softmax(logits, 1), binary));
    else out.push_back(label_output(logits, spec, binary));
  }
  return out;
}

}  // namespace bulwark::serve
