// A V2 gRPC request of one 1x28x28 FP32 image (every pixel 0.5), for tests that call the gRPC
// frontend with the generated stub.
#pragma once

#include <string>

#include "grpc_predict_v2.grpc.pb.h"

namespace bulwark::testing {

inline inference::ModelInferRequest one_image_request(const std::string& model) {
  inference::ModelInferRequest q;
  q.set_model_name(model);
  auto* in = q.add_inputs();
  in->set_name("input");
  in->set_datatype("FP32");
  for (const int64_t d : {1, 1, 28, 28}) in->add_shape(d);
  for (int i = 0; i < 784; ++i) in->mutable_contents()->add_fp32_contents(0.5f);
  return q;
}

}  // namespace bulwark::testing
