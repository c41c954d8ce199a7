#!/usr/bin/python3
"""The out-of-distribution query set of bench/extraction: notMNIST-style glyph images, 28 x 28 grey,
white on black like Fashion-MNIST, in the MNIST IDX layout (so data::load_dataset reads the folder).

No second natural image set is packaged in Debian (apt-cache search mnist / dataset finds only
dataset-fashion-mnist), and the network reaches only package registries, so the Knockoff-style
attacker's "natural images from another distribution" are rendered: letters, digits and symbols
from the 35 TrueType fonts of Debian's fonts-dejavu-core/-extra and fonts-lyx (serif, sans, mono,
TeX math, fraktur, script), each at a random size (14-26 px), rotation (+-25 deg), position, stroke
(0-1 px extra) and blur (radius 0-1), a third of them with a second glyph overlaid. Labels are the
character's index mod 10 (unused: the attacker labels with the server's answers).

usage: make_glyphs.py OUT_DIR [train=20000] [test=2000] [seed=0]   (Debian's python3-pil, python3-numpy)
"""
import gzip
import os
import random
import struct
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIRS = ["/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/lyx"]
CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789&@#%$?!*+=<>{}[]()"


def fonts():
    out = []
    for d in FONT_DIRS:
        if os.path.isdir(d):
            out += sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".ttf"))
    if not out:
        sys.exit("no fonts under " + ", ".join(FONT_DIRS))
    return out


def glyph(rng, font_paths, cache):
    path = rng.choice(font_paths)
    size = rng.randint(14, 26)
    key = (path, size)
    if key not in cache:
        cache[key] = ImageFont.truetype(path, size)
    ch = rng.choice(CHARS)
    img = Image.new("L", (56, 56), 0)
    d = ImageDraw.Draw(img)
    d.text((28, 28), ch, fill=255, font=cache[key], anchor="mm", stroke_width=rng.randint(0, 1), stroke_fill=255)
    img = img.rotate(rng.uniform(-25, 25), resample=Image.BILINEAR)
    dx, dy = rng.randint(-4, 4), rng.randint(-4, 4)
    img = img.crop((14 + dx, 14 + dy, 42 + dx, 42 + dy))
    return img, CHARS.index(ch) % 10


def make(n, rng, font_paths, cache):
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    labels = np.zeros(n, dtype=np.uint8)
    i = 0
    while i < n:
        img, label = glyph(rng, font_paths, cache)
        if rng.random() < 1 / 3:
            second, _ = glyph(rng, font_paths, cache)
            img = Image.fromarray(np.maximum(np.asarray(img), np.asarray(second)))
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1)))
        a = np.asarray(img)
        if a.max() < 64 or (a > 32).sum() < 20:  # a font without the glyph, or a clipped sliver
            continue
        images[i], labels[i] = a, label
        i += 1
    return images, labels


def write_idx(path, array):
    with gzip.open(path, "wb", compresslevel=6) as f:
        if array.ndim == 3:
            f.write(struct.pack(">IIII", 0x803, *array.shape))
        else:
            f.write(struct.pack(">II", 0x801, array.shape[0]))
        f.write(array.tobytes())


def main():
    out = sys.argv[1]
    n_train = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    n_test = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    rng = random.Random(seed)
    font_paths, cache = fonts(), {}
    os.makedirs(out, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images, labels = make(n, rng, font_paths, cache)
        write_idx(os.path.join(out, f"{split}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(out, f"{split}-labels-idx1-ubyte.gz"), labels)
    print(f"{out}: {n_train} + {n_test} glyph images from {len(font_paths)} fonts, seed {seed}")


if __name__ == "__main__":
    main()
