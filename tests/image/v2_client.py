#!/usr/bin/python3
"""An off-the-shelf V2 client for `make image-test`: one Fashion-MNIST test image sent as a UINT8
[1,1,28,28] tensor over REST (urllib) and gRPC (grpcio, with messages protoc generated from
src/serve/proto/grpc_predict_v2.proto into PB_DIR), printing one JSON line per protocol:
{"protocol": ..., "label": ..., "model_version": ...}.

    v2_client.py --url http://127.0.0.1:8080 --grpc 127.0.0.1:8081 --model fashion \
        --token T --index 0 --pb-dir DIR
"""
import argparse
import gzip
import json
import sys
import urllib.request

IMAGES = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"


def pixels(index):
    raw = gzip.open(IMAGES).read()
    if index < 0 or 16 + 784 * (index + 1) > len(raw):
        sys.exit(f"--index {index}: the test set has {(len(raw) - 16) // 784} images")
    return raw[16 + 784 * index:16 + 784 * (index + 1)]


def rest(url, model, token, data):
    body = json.dumps({"id": "image-test", "inputs": [
        {"name": "input", "shape": [1, 1, 28, 28], "datatype": "UINT8", "data": list(data)}]}).encode()
    req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        doc = json.load(r)
    label = next(o for o in doc["outputs"] if o["datatype"] == "BYTES")["data"][0]
    return {"protocol": "rest", "label": label, "model_version": doc.get("model_version")}


def grpc_infer(target, model, token, data, pb_dir):
    sys.path.insert(0, pb_dir)
    import grpc
    import grpc_predict_v2_pb2 as pb

    req = pb.ModelInferRequest(model_name=model, id="image-test")
    tensor = req.inputs.add(name="input", datatype="UINT8", shape=[1, 1, 28, 28])
    tensor.contents.uint_contents.extend(data)
    with grpc.insecure_channel(target) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)
        resp = infer(req, metadata=[("authorization", f"Bearer {token}")], timeout=30)
    for i, out in enumerate(resp.outputs):
        if out.datatype == "BYTES":
            if out.contents.bytes_contents:
                label = out.contents.bytes_contents[0].decode()
            else:  # raw: a 4-byte little-endian length, then the bytes (Triton's layout)
                raw = resp.raw_output_contents[i]
                n = int.from_bytes(raw[:4], "little")
                label = raw[4:4 + n].decode()
            return {"protocol": "grpc", "label": label, "model_version": resp.model_version}
    sys.exit("gRPC answer has no BYTES output")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--grpc", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--pb-dir", required=True)
    a = ap.parse_args()
    data = pixels(a.index)
    print(json.dumps(rest(a.url, a.model, a.token, data)))
    print(json.dumps(grpc_infer(a.grpc, a.model, a.token, data, a.pb_dir)))


if __name__ == "__main__":
    main()
