#!/usr/bin/env python3
"""Reads an OMS v1.0 Sigstore bundle without Bulwark code (stdlib only), for cli_test.cpp.

Usage: oms_extract.py BUNDLE_JSON OUT_DIR

Writes OUT_DIR/pae.bin (the DSSE v1 pre-authentication encoding that was signed),
OUT_DIR/pae-tampered.bin (the same with one payload byte flipped) and OUT_DIR/sig.der (the
signature, DER), for `openssl dgst -sha256 -verify`. Prints a JSON summary of the statement:
its subject and the root digest recomputed here as SHA-256 over the resources' raw digests in
name order, as the OMS spec defines it.
"""
import base64
import hashlib
import json
import os
import sys


def pae(payload_type: bytes, payload: bytes) -> bytes:
    # DSSE v1: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, lengths in ASCII decimal.
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(payload), payload)


def main() -> None:
    bundle_path, out_dir = sys.argv[1], sys.argv[2]
    with open(bundle_path, "rb") as f:
        bundle = json.load(f)
    envelope = bundle["dsseEnvelope"]
    payload_type = envelope["payloadType"].encode()
    payload = base64.b64decode(envelope["payload"], validate=True)
    signatures = envelope["signatures"]
    sig = base64.b64decode(signatures[0]["sig"], validate=True)

    tampered = bytearray(payload)
    tampered[len(tampered) // 2] ^= 0x01
    for name, data in (("pae.bin", pae(payload_type, payload)),
                       ("pae-tampered.bin", pae(payload_type, bytes(tampered))),
                       ("sig.der", sig)):
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)

    statement = json.loads(payload)
    resources = statement["predicate"]["resources"]
    in_order = sorted(resources, key=lambda r: r["name"])
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in in_order)).hexdigest()
    subject = statement["subject"]
    print(json.dumps({
        "payload_type": envelope["payloadType"],
        "signatures": len(signatures),
        "key_hint": bundle["verificationMaterial"]["publicKey"]["hint"],
        "statement_type": statement["_type"],
        "predicate_type": statement["predicateType"],
        "subjects": len(subject),
        "subject_name": subject[0]["name"],
        "subject_sha256": subject[0]["digest"]["sha256"],
        "computed_root_sha256": root,
        "resources_sorted": [r["name"] for r in resources] == [r["name"] for r in in_order],
        "resources": {r["name"]: r["digest"] for r in resources},
        "algorithms": sorted({r["algorithm"] for r in resources}),
    }))


if __name__ == "__main__":
    main()
