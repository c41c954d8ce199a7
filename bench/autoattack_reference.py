#!/usr/bin/python3
"""The AutoAttack reference (Croce & Hein 2020, github.com/fra31/auto-attack), standard version, on
the first N Fashion-MNIST test images, for bench/auto_attack: one JSON line with each attack's
seconds and the robust accuracy after it.

usage: /usr/bin/python3 bench/autoattack_reference.py AUTOATTACK_DIR MODEL.pt N EPS THREADS [BATCH]

AUTOATTACK_DIR is a checkout of the reference (the directory that holds autoattack/). The model is a
TorchScript file (what Bulwark writes) taking [N, 1, 28, 28] images in [0, 1]. BATCH defaults to the
reference's own default (250). Nothing is downloaded.
"""
import gzip
import json
import os
import sys
import time

import numpy as np
import torch


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(directory, stem):
    for name in (stem, stem + ".gz"):
        if os.path.exists(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise SystemExit(f"{directory}: no {stem}[.gz]")


def main():
    if len(sys.argv) < 6:
        raise SystemExit(__doc__)
    aa_dir, model_path, n, eps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    batch = int(sys.argv[6]) if len(sys.argv) > 6 else 250
    sys.path.insert(0, aa_dir)
    from autoattack import AutoAttack

    torch.set_num_threads(threads)
    data_dir = "/usr/share/datasets/fashion-mnist"
    images = read_idx(find(data_dir, "t10k-images-idx3-ubyte"))[:n]
    labels = read_idx(find(data_dir, "t10k-labels-idx1-ubyte"))[:n]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    model = torch.jit.load(model_path).eval()

    adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, verbose=False,
                           device="cpu")
    # Time each attack of the cascade where the reference calls it.
    seconds = {}
    for attr, name in (("apgd", "apgd-ce"), ("apgd_targeted", "apgd-t"), ("fab", "fab-t"), ("square", "square")):
        attack = getattr(adversary, attr)
        inner = attack.perturb

        def timed(*args, _inner=inner, _name=name, **kwargs):
            t0 = time.perf_counter()
            out = _inner(*args, **kwargs)
            seconds[_name] = seconds.get(_name, 0.0) + time.perf_counter() - t0
            return out

        attack.perturb = timed
    t0 = time.perf_counter()
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    x_adv = adversary.run_standard_evaluation(x, y, bs=batch)
    total = time.perf_counter() - t0
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    print(json.dumps({"reference": "autoattack-standard", "n": n, "eps": eps, "threads": threads, "batch": batch,
                      "torch": torch.__version__, "clean_accuracy": clean, "robust_accuracy": robust,
                      "seconds": total, "attack_seconds": seconds}))


if __name__ == "__main__":
    main()
