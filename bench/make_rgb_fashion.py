#!/usr/bin/python3
"""An RGB set in CIFAR-10's binary format, made from Debian's Fashion-MNIST (nothing downloaded):
each 28x28 image padded to 32x32 and coloured with a random foreground and background colour per image
(so colour says nothing about the class), written as data_batch_{1..5}.bin, test_batch.bin and
batches.meta.txt. For the RGB hardening figure in docs/BENCHMARKS.md (issue 30).

usage: /usr/bin/python3 bench/make_rgb_fashion.py OUT [SEED]
"""
import gzip
import os
import sys

import numpy as np

SRC = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(SRC, name)
        if os.path.exists(path):
            data = (gzip.open if name.endswith(".gz") else open)(path, "rb").read()
            ndim = data[3]
            dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    raise SystemExit(f"{SRC}: no {stem}[.gz] (apt-get install dataset-fashion-mnist)")


def colour(images, rng):
    n = images.shape[0]
    a = np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.float32)[:, None] / 255.0  # [N,1,32,32]
    fg = rng.uniform(0.3, 1.0, size=(n, 3, 1, 1))
    bg = rng.uniform(0.0, 0.3, size=(n, 3, 1, 1))
    return np.clip(np.rint((bg + (fg - bg) * a) * 255.0), 0, 255).astype(np.uint8)


def write(path, x, y):
    records = np.concatenate([y.astype(np.uint8)[:, None], x.reshape(x.shape[0], -1)], axis=1)
    tmp = path + ".tmp"
    records.tofile(tmp)
    os.replace(tmp, path)


def main(out, seed=0):
    rng = np.random.default_rng(int(seed))
    os.makedirs(out, exist_ok=True)
    xtr, ytr = colour(read_idx("train-images-idx3-ubyte"), rng), read_idx("train-labels-idx1-ubyte")
    xte, yte = colour(read_idx("t10k-images-idx3-ubyte"), rng), read_idx("t10k-labels-idx1-ubyte")
    for i in range(5):
        s = slice(i * 12000, (i + 1) * 12000)
        write(os.path.join(out, f"data_batch_{i + 1}.bin"), xtr[s], ytr[s])
    write(os.path.join(out, "test_batch.bin"), xte, yte)
    with open(os.path.join(out, "batches.meta.txt"), "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    print(f"{out}: 60000 train + 10000 test 3x32x32 images (CIFAR-10 binary)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
