#!/usr/bin/python3
"""A torchvision resnet18 (10 classes, its ImageNet stem as torchvision builds it) for 3x32x32 images
in CIFAR-10's binary format, with the normalisation inside the module, trained in PyTorch with
Fast-AT (Wong et al. 2020: FGSM from a random start, step 1.25 eps) so that PGD leaves some points
standing, and saved as TorchScript (torch.jit.script). For bench/pgd_peers.sh (issue 30); nothing
downloaded.

usage: /usr/bin/python3 bench/make_resnet18.py DATA_DIR OUT.pt [EPOCHS=1] [TRAIN_N=20000] [EPS=8/255] [THREADS]
"""
import os
import sys
import time
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
import torchvision


def read_cifar(path):
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 1 + 3 * 32 * 32)
    return torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy()), torch.from_numpy(raw[:, 0].astype(np.int64))


class Normalised(torch.nn.Module):
    def __init__(self, net, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


def main(data, out, epochs=1, train_n=20000, eps=8 / 255, threads=None):
    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(int(threads))
    xs, ys = zip(*(read_cifar(os.path.join(data, f"data_batch_{i}.bin")) for i in range(1, 6)))
    x, y = torch.cat(xs)[: int(train_n)].float() / 255, torch.cat(ys)[: int(train_n)]
    mean, std = x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()
    model = Normalised(torchvision.models.resnet18(num_classes=10), mean, std)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = int(epochs) * ((len(x) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    eps, alpha = float(eps), 1.25 * float(eps)
    t0 = time.time()
    for epoch in range(int(epochs)):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            xb, yb = x[perm[i:i + 128]], y[perm[i:i + 128]]
            delta = torch.empty_like(xb).uniform_(-eps, eps).requires_grad_(True)
            loss = F.cross_entropy(model((xb + delta).clamp(0, 1)), yb)
            (g,) = torch.autograd.grad(loss, delta)
            delta = (delta + alpha * g.sign()).clamp(-eps, eps).detach()
            opt.zero_grad()
            F.cross_entropy(model((xb + delta).clamp(0, 1)), yb).backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}: {time.time() - t0:.0f} s", flush=True)
    model.eval()
    scripted = torch.jit.script(model)
    tmp = out + ".tmp"
    scripted.save(tmp)
    os.replace(tmp, out)
    xt, yt = read_cifar(os.path.join(data, "test_batch.bin"))
    with torch.no_grad():
        acc = (model(xt[:1000].float() / 255).argmax(1) == yt[:1000]).float().mean().item()
    print(f"{out}: resnet18, clean accuracy {100 * acc:.1f} % on 1000 test images, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    args = sys.argv[1:]
    if len(args) > 4:
        args[4] = float(Fraction(args[4]))  # "8/255"
    main(*args)
