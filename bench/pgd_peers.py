#!/usr/bin/python3
"""torchattacks' and ART's PGD on a TorchScript model and the first N images of a CIFAR-format
test_batch.bin, in the setting bench/pgd_peers.cpp runs Bulwark's: L∞ eps, 20 steps of eps/4, one
random start, cross-entropy, batches of BATCH, THREADS torch threads. One JSON line per library:
seconds, robust accuracy (the last iterate, as both return it), points.

usage: /usr/bin/python3 bench/pgd_peers.py TORCHATTACKS_DIR ART_DIR MODEL.pt DATA_DIR [N=1000] [EPS=8/255] [BATCH=256] [THREADS=2]

TORCHATTACKS_DIR and ART_DIR are checkouts of github.com/Harry24k/adversarial-attacks-pytorch and
github.com/Trusted-AI/adversarial-robustness-toolbox (the directories holding torchattacks/ and art/);
ART needs Debian's python3-scipy, python3-sklearn and python3-tqdm. Nothing is downloaded.
"""
import json
import os
import sys
import time
from fractions import Fraction

import numpy as np
import torch


def main(ta_dir, art_dir, model_path, data, n=1000, eps="8/255", batch=256, threads=2):
    n, batch, eps = int(n), int(batch), float(Fraction(eps))
    torch.set_num_threads(int(threads))
    sys.path[:0] = [ta_dir, art_dir]
    import torchattacks
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    raw = np.fromfile(os.path.join(data, "test_batch.bin"), dtype=np.uint8).reshape(-1, 1 + 3 * 32 * 32)[:n]
    x = torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    y = torch.from_numpy(raw[:, 0].astype(np.int64))
    model = torch.jit.load(model_path).eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def accuracy(xs):
        with torch.no_grad():
            return 100.0 * sum((model(xs[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
                               for i in range(0, len(xs), batch)) / len(xs)

    print(json.dumps({"library": "clean (python)", "accuracy": accuracy(x), "n": n}), flush=True)

    torch.manual_seed(0)
    pgd = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=True)
    t0 = time.perf_counter()
    adv = torch.cat([pgd(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)])
    s = time.perf_counter() - t0
    print(json.dumps({"library": f"torchattacks {torchattacks.__version__}", "seconds": s,
                      "robust_accuracy": accuracy(adv), "n": n, "threads": torch.get_num_threads()}), flush=True)

    import art
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
                            clip_values=(0.0, 1.0), device_type="cpu")
    attack = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=20,
                                             num_random_init=1, batch_size=batch, verbose=False)
    np.random.seed(0)
    t0 = time.perf_counter()
    adv = attack.generate(x.numpy(), y=y.numpy())
    s = time.perf_counter() - t0
    print(json.dumps({"library": f"ART {art.__version__}", "seconds": s,
                      "robust_accuracy": accuracy(torch.from_numpy(adv)), "n": n,
                      "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
