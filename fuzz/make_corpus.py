#!/usr/bin/env python3
"""fuzz/make_corpus.py — writes the seed corpora under fuzz/corpus/<target>/ from the test cases
(tests/serve/cases/*.json, the unit tests' files) and a few valid inputs per target. Run it again
after changing a format; files it does not write (regression inputs, crash-*) are left alone.

Needs python3-cryptography (to sign the registry seeds with the fuzz key, fuzz/registry_key.h)
and protoc (to encode the gRPC seeds). Not part of the build: its output is checked in.
"""
import base64
import gzip
import hashlib
import json
import pathlib
import re
import struct
import subprocess
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = HERE / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ---------------------------------------------------------------- REST: "<header>\n<body>"
def rest_codec():
    small = {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.5] * 784}
    for case in json.loads((ROOT / "tests/serve/cases/malformed.json").read_text()):
        if case.get("path"):  # other endpoints
            continue
        if "repeat" in case:
            body = case["prefix"] + case["raw"] * 64
        elif "raw" in case:
            body = case["raw"]
        else:
            body = json.dumps(case["json"], separators=(",", ":"))
        header = case.get("headers", {}).get("Inference-Header-Content-Length", "-")
        # Shorten long data arrays: the cases' point survives, the seeds stay small.
        body = body.replace(",".join(["0.5"] * 784), ",".join(["0.5"] * 8))
        write("rest_codec", slug(case["name"]), header + "\n" + body)
    write("rest_codec", "valid-json", "-\n" + json.dumps({"id": "r1", "inputs": [small],
                                                          "outputs": [{"name": "label"}]}))
    write("rest_codec", "valid-json-nested", "-\n" + json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "UINT8",
                     "data": [[[[7] * 28] * 28]]}],
         "parameters": {"binary_data_output": True}}))
    for dtype, raw in (("UINT8", bytes(range(256)) * 3 + bytes(16)),
                       ("FP32", struct.pack("<784f", *([0.25] * 784)))):
        head = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": dtype,
                                       "parameters": {"binary_data_size": len(raw)}}],
                           "outputs": [{"name": "logits", "parameters": {"binary_data": True}},
                                       {"name": "probabilities"}]})
        write("rest_codec", "valid-binary-" + dtype.lower(), f"{len(head)}\n{head}".encode() + raw)


# ---------------------------------------------------------------- gRPC: ModelInferRequest bytes
def grpc_request():
    proto_dir = ROOT / "src/serve/proto"

    def encode(text):
        return subprocess.run(["protoc", "--encode=inference.ModelInferRequest", f"-I{proto_dir}",
                               "grpc_predict_v2.proto"], input=text.encode(), check=True,
                              capture_output=True).stdout

    fp32 = " ".join(f"fp32_contents: {0.5}" for _ in range(784))
    write("grpc_request", "valid-contents", encode(
        f'model_name: "fashion" id: "g1" inputs {{ name: "input" datatype: "FP32" shape: 1 shape: 784 '
        f'contents {{ {fp32} }} }} outputs {{ name: "label" }}'))
    u8 = " ".join(f"uint_contents: {i % 256}" for i in range(784))
    write("grpc_request", "valid-uint8", encode(
        f'model_name: "fashion" inputs {{ name: "input" datatype: "UINT8" shape: 1 shape: 1 shape: 28 '
        f'shape: 28 contents {{ {u8} }} }}'))
    raw = "".join(f"\\{b:03o}" for b in struct.pack("<784f", *([0.25] * 784)))
    write("grpc_request", "valid-raw-fp32", encode(
        f'model_name: "fashion" inputs {{ name: "input" datatype: "FP32" shape: 1 shape: 784 }} '
        f'raw_input_contents: "{raw}" outputs {{ name: "logits" }} outputs {{ name: "probabilities" }}'))
    rawu8 = "".join(f"\\{b:03o}" for b in bytes(784))
    write("grpc_request", "valid-raw-uint8", encode(
        f'model_name: "fashion" inputs {{ name: "input" datatype: "UINT8" shape: 1 shape: 28 shape: 28 }} '
        f'raw_input_contents: "{rawu8}"'))
    bad = {
        "raw-count-mismatch": 'inputs { name: "input" datatype: "FP32" shape: 1 shape: 1 } '
                              'inputs { name: "x" datatype: "FP32" shape: 1 } raw_input_contents: "\\000\\000\\000\\000"',
        "raw-and-contents": 'inputs { name: "input" datatype: "FP32" shape: 1 contents { fp32_contents: 1 } } '
                            'raw_input_contents: "\\000\\000\\000\\000"',
        "huge-shape": 'inputs { name: "input" datatype: "FP32" shape: 4294967296 shape: 4294967296 }',
        "negative-dim": 'inputs { name: "input" datatype: "FP32" shape: -1 shape: 784 }',
        "bytes-datatype": 'inputs { name: "input" datatype: "BYTES" shape: 1 contents { bytes_contents: "a" } }',
        "too-few-values": 'inputs { name: "input" datatype: "FP32" shape: 1 shape: 784 contents { fp32_contents: 1 } }',
        "nan-value": 'inputs { name: "input" datatype: "FP32" shape: 1 shape: 1 contents { fp32_contents: nan } }',
        "uint-out-of-range": 'inputs { name: "input" datatype: "UINT8" shape: 1 shape: 1 contents { uint_contents: 4000000000 } }',
        "unknown-output": f'inputs {{ name: "input" datatype: "FP32" shape: 1 shape: 784 contents {{ {fp32} }} }} '
                          'outputs { name: "secrets" }',
        "long-id": 'id: "' + "x" * 300 + '"',
    }
    for name, text in bad.items():
        write("grpc_request", name, encode('model_name: "fashion" ' + text))


# ---------------------------------------------------------------- IDX files
def idx_bytes(dims, values, type_code=0x08):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(values)


def idx():
    write("idx", "images-3x2x2", idx_bytes([3, 2, 2], range(1, 13)))
    write("idx", "labels-5", idx_bytes([5], [0, 1, 9, 3, 4]))
    write("idx", "labels-out-of-range", idx_bytes([2], [3, 200]))
    write("idx", "four-dims", idx_bytes([1, 2, 2, 2], range(8)))
    write("idx", "gzip-images", gzip.compress(idx_bytes([2, 3, 3], range(18)), mtime=0))
    write("idx", "bad-magic", bytes([0x1f, 0x00, 0x08, 0x01, 0, 0, 0, 1, 5]))
    write("idx", "element-type", idx_bytes([1], [5], 0x0D))
    write("idx", "zero-dims", bytes([0, 0, 8, 0]))
    write("idx", "five-dims", bytes([0, 0, 8, 5]))
    write("idx", "zero-sized-dim", idx_bytes([2, 0], []))
    write("idx", "huge-declared", idx_bytes([0xFFFFFFFF, 0xFFFFFFFF], []))
    write("idx", "truncated-magic", bytes([0, 0]))
    write("idx", "truncated-header", bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0]))
    write("idx", "truncated-data", idx_bytes([2, 2, 2], [1, 2, 3]))
    write("idx", "trailing", idx_bytes([2], [1, 2, 3]))
    write("idx", "corrupt-gzip", bytes([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3] + [0xff] * 6))


# ---------------------------------------------------------------- YAML files
def tokens_yaml():
    h = hashlib.sha256(b"test").hexdigest()
    write("tokens_yaml", "valid", f"tokens:\n  - id: ci\n    sha256: {h}\n    roles: [infer, admin]\n")
    write("tokens_yaml", "valid-rate", f"tokens:\n  - id: dashboard\n    sha256: {h.upper()}\n"
                                       f"    roles: [infer, feedback]\n    rate_per_s: 50\n    burst: 100\n"
                                       f"  - id: ops\n    sha256: {hashlib.sha256(b'x').hexdigest()}\n"
                                       f"    roles:\n      - admin\n")
    write("tokens_yaml", "short-sha", "tokens:\n  - id: x\n    sha256: abc\n    roles: [infer]\n")
    write("tokens_yaml", "unknown-role", f"tokens:\n  - id: x\n    sha256: {h}\n    roles: [root]\n")
    write("tokens_yaml", "no-id", f"tokens:\n  - sha256: {h}\n    roles: [infer]\n")
    write("tokens_yaml", "not-a-list", "tokens: 5\n")
    write("tokens_yaml", "bad-yaml", "tokens: [\n")
    write("tokens_yaml", "duplicate", f"tokens:\n  - {{id: a, sha256: {h}, roles: [infer]}}\n"
                                      f"  - {{id: a, sha256: {h}, roles: [infer]}}\n")
    write("tokens_yaml", "rate-nan", f"tokens:\n  - {{id: a, sha256: {h}, roles: [infer], rate_per_s: .nan}}\n")
    write("tokens_yaml", "anchors", f"base: &b {{sha256: {h}, roles: [infer]}}\ntokens:\n  - <<: *b\n    id: a\n")


def serve_config():
    write("serve_config", "unit-test", "http-port: 9000\nmodel:\n  fashion: /m/a.pt\n  mnist: /m/b.pt\nguard: entropy\n")
    write("serve_config", "nested", "http-port: {a: {b: 1}}\n")
    write("serve_config", "model-list", "model: [fashion=/m/a.pt, mnist=b.pt]\ncalibration: {fashion: c.detect}\n"
                                        "max-batch: 32\nstateful: block\n")
    write("serve_config", "empty", "")
    write("serve_config", "not-a-map", "- a\n- b\n")
    write("serve_config", "bad-model", "model: {fashion: [a, b]}\n")
    write("serve_config", "guard-example", (ROOT / "examples/guard.yaml").read_text())
    write("serve_config", "guard-section", "serve:\n  registry: reg\n  model: {fashion: \"registry:m@production\"}\n"
                                           "  http-port: 0\n  grpc-port: -1\n  access-log: \"off\"\n"
                                           "policy:\n  cooldown_s: 3600\n")


# ---------------------------------------------------------------- model spec (bulwark.json)
def model_spec():
    spec = {"format": "bulwark-model/1", "arch": "mlp", "input_shape": [1, 28, 28], "value_range": [0.0, 1.0],
            "class_names": ["T-shirt", "Trouser"], "dataset": "fashion-mnist", "seed": 7,
            "training": {"epochs": 3}, "hardening": {}}
    write("model_spec", "valid", json.dumps(spec, indent=2))
    minimal = {k: spec[k] for k in ("format", "arch", "input_shape", "value_range", "class_names")}
    write("model_spec", "minimal", json.dumps(minimal))
    for name, change in {
        "wrong-format": {"format": "other"}, "format-number": {"format": 1},
        "shape-2d": {"input_shape": [28, 28]}, "shape-zero": {"input_shape": [0, 28, 28]},
        "shape-float": {"input_shape": [1.5, 28, 28]}, "shape-huge-float": {"input_shape": [1e300, 1, 1]},
        "range-reversed": {"value_range": [1, 0]}, "range-three": {"value_range": [0, 1, 2]},
        "no-classes": {"class_names": []}, "class-number": {"class_names": [1]},
        "seed-negative": {"seed": -1}, "seed-float": {"seed": 1e30}, "training-array": {"training": [1]},
    }.items():
        write("model_spec", name, json.dumps({**spec, **change}))
    write("model_spec", "not-json", "{oops")
    write("model_spec", "array", "[]")


# ---------------------------------------------------------------- registry
KEY_PEM = re.search(r'kFuzzKeyPem =\n(.*?);', (HERE / "registry_key.h").read_text(), re.S).group(1)
KEY_PEM = "".join(re.findall(r'"(.*)"', KEY_PEM)).replace("\\n", "\n").encode()
KEY = serialization.load_pem_private_key(KEY_PEM, None)
PUB_PEM = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
KEY_ID = hashlib.sha256(PUB_PEM).hexdigest()
PAYLOAD_TYPE = "application/vnd.in-toto+json"


def sign(message):
    return KEY.sign(message, ec.ECDSA(hashes.SHA256()))


def statement(name, files):
    files = sorted(files)
    root = hashlib.sha256(b"".join(bytes.fromhex(d) for _, d in files)).hexdigest()
    return json.dumps({"_type": "https://in-toto.io/Statement/v1",
                       "subject": [{"name": name, "digest": {"sha256": root}}],
                       "predicateType": "https://model_signing/signature/v1.0",
                       "predicate": {"serialization": {"method": "files", "hash_type": "sha256",
                                                       "allow_symlinks": False, "ignore_paths": []},
                                     "resources": [{"name": n, "algorithm": "sha256", "digest": d}
                                                   for n, d in files]}}, separators=(",", ":"))


def bundle(stmt, payload_type=PAYLOAD_TYPE, key_id=KEY_ID):
    pae = f"DSSEv1 {len(payload_type)} {payload_type} {len(stmt.encode())} ".encode() + stmt.encode()
    return {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": key_id}, "tlogEntries": []},
            "dsseEnvelope": {"payload": base64.b64encode(stmt.encode()).decode(), "payloadType": payload_type,
                             "signatures": [{"sig": base64.b64encode(sign(pae)).decode(), "keyid": ""}]}}


def registry():
    for text in ["fashion", "fashion@3", "fashion@latest", "fashion@production", "registry:m@staging",
                 "m@none", "m@archived", "m@0", "m@999999999999", "m@9999999999999", "Fashion", "a@b@c",
                 "-x", "m@", "registry:", "m.v1_2-3@00001"]:
        write("registry_reference", slug(text) or "empty", text)

    files = [("model.pt", hashlib.sha256(b"model").hexdigest()), ("model.pt.json", hashlib.sha256(b"spec").hexdigest())]
    good = statement("fashion", files)
    write("registry_statement", "valid", good)
    write("registry_statement", "one-file", statement("m", files[:1]))
    s = json.loads(good)
    for name, mutate in {
        "wrong-type": lambda s: s.update({"_type": "x"}),
        "two-subjects": lambda s: s.update({"subject": s["subject"] * 2}),
        "root-mismatch": lambda s: s["subject"][0]["digest"].update({"sha256": "0" * 64}),
        "dotdot": lambda s: s["predicate"]["resources"][0].update({"name": "../etc/passwd"}),
        "absolute": lambda s: s["predicate"]["resources"][0].update({"name": "/abs"}),
        "md5": lambda s: s["predicate"]["resources"][0].update({"algorithm": "md5"}),
        "duplicate": lambda s: s["predicate"].update({"resources": s["predicate"]["resources"][:1] * 2}),
        "method-shards": lambda s: s["predicate"]["serialization"].update({"method": "shards"}),
    }.items():
        t = json.loads(good)
        mutate(t)
        write("registry_statement", name, json.dumps(t))
    write("registry_statement", "not-json", "{")

    b = bundle(good)
    write("registry_bundle", "valid", json.dumps(b, indent=2) + "\n")
    write("registry_bundle", "valid-compact", json.dumps(bundle(statement("m", files[:1]))))
    write("registry_bundle", "bad-statement", json.dumps(bundle(json.dumps({**s, "_type": "x"}))))
    for name, mutate in {
        "untrusted": lambda t: t["verificationMaterial"]["publicKey"].update({"hint": "ab" * 32}),
        "flipped-payload": lambda t: t["dsseEnvelope"].update(
            {"payload": base64.b64encode(good.replace("fashion", "fashiom").encode()).decode()}),
        "two-sigs": lambda t: t["dsseEnvelope"].update({"signatures": t["dsseEnvelope"]["signatures"] * 2}),
        "no-hint": lambda t: t["verificationMaterial"]["publicKey"].pop("hint"),
        "bad-base64": lambda t: t["dsseEnvelope"].update({"payload": "@@@"}),
        "media-type": lambda t: t.update({"mediaType": "application/json"}),
        "payload-type": lambda t: t["dsseEnvelope"].update({"payloadType": "text/plain"}),
    }.items():
        t = json.loads(json.dumps(b))
        mutate(t)
        write("registry_bundle", name, json.dumps(t))
    write("registry_bundle", "not-json", "{not json")

    pub_der = KEY.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    hint = hashlib.sha256(pub_der).digest()[:4]

    def note(body, name="fuzz.example/log"):
        return body + "\n" + "\u2014 " + name + " " + base64.b64encode(hint + sign(body.encode())).decode() + "\n"

    root = base64.b64encode(hashlib.sha256(b"").digest()).decode()
    body = f"fuzz.example/log\n12\n{root}\n"
    write("registry_checkpoint", "valid-note", note(body))
    write("registry_checkpoint", "two-signers", note(body) + "\u2014 other.example/log " +
          base64.b64encode(b"abcd" + b"x" * 70).decode() + "\n")
    write("registry_checkpoint", "body", body)
    write("registry_checkpoint", "body-extension", f"fuzz.example/log\n0\n{root}\nextra line\n")
    write("registry_checkpoint", "size-negative", f"fuzz.example/log\n-1\n{root}\n")
    write("registry_checkpoint", "size-huge", f"fuzz.example/log\n99999999999999999999\n{root}\n")
    write("registry_checkpoint", "altered", note(body).replace("\n12\n", "\n13\n"))
    write("registry_checkpoint", "no-signature", body + "\n")
    write("registry_checkpoint", "base64", "YWJj")
    write("registry_checkpoint", "base64-padding", "YQ==")


def main():
    targets = {f.__name__: f for f in (rest_codec, grpc_request, idx, tokens_yaml, serve_config, model_spec)}
    targets["registry"] = registry
    for name in sys.argv[1:] or targets:
        targets[name]()


if __name__ == "__main__":
    main()
