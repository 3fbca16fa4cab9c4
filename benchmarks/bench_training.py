"""One epoch of MLP 784-512-10 (batch 128, SGD) on the full Fashion-MNIST train set, three ways in one run.

  ours      : genstudy.training.fit on the data held as tensors
  textbook  : torchvision dataset + ToTensor() + DataLoader, as in the PyTorch MNIST example
  matmul    : the machine's float32 matrix-multiply rate (large square matmul), the ceiling
  floor     : the epoch's own matmuls alone (same shapes, no autograd, optimizer or batching):
              the most any training loop could reach at this batch size on this machine

Prints seconds per epoch, the speed-up over the textbook loop (target >= 5x) and the
epoch's arithmetic rate as a share of the matmul rate (target >= 70%).
Run from the repo root after `dvc repro fetch`:  python benchmarks/bench_training.py
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from genstudy import data, models
from genstudy.training import fit, make_optimizer

BATCH, LR = 128, 0.01


def epoch_flops(n: int, sizes=(784, 512, 10)) -> float:
    """Matmul FLOPs of one epoch: forward, weight gradients, and input gradients below the first layer."""
    macs = sum(a * b for a, b in zip(sizes, sizes[1:]))
    fwd = 2 * n * macs
    wgrad = 2 * n * macs
    igrad = 2 * n * sum(a * b for a, b in zip(sizes[1:-1], sizes[2:]))  # not for the input layer
    return fwd + wgrad + igrad


def ours(train: data.Tensors) -> float:
    model = models.seeded(0, models.mlp, [784, 512, 10])
    opt = make_optimizer(model.parameters(), "sgd", LR, momentum=0.9)
    t = time.perf_counter()
    fit(model, train, epochs=1, batch_size=BATCH, optimizer=opt, seed=0, progress=False)
    return time.perf_counter() - t


def textbook(root: str) -> float:
    ds = datasets.FashionMNIST(root, train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True)
    model = models.seeded(0, models.mlp, [784, 512, 10])
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    t = time.perf_counter()
    for x, y in loader:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return time.perf_counter() - t


def matmul_rate(n: int = 2048, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return reps * 2 * n ** 3 / (time.perf_counter() - t)


def matmuls_only(n: int, sizes=(784, 512, 10)) -> float:
    """Seconds for just the matmuls that :func:`epoch_flops` counts, at the epoch's shapes."""
    x = torch.randn(BATCH, sizes[0])
    ws = [torch.randn(o, i) for i, o in zip(sizes, sizes[1:])]
    g_out = torch.randn(BATCH, sizes[-1])
    t = time.perf_counter()
    for _ in range(0, n, BATCH):
        hs = [x]
        for w in ws:
            hs.append(hs[-1] @ w.t())
        g = g_out
        for i in reversed(range(len(ws))):
            g.t() @ hs[i]          # weight gradient
            if i > 0:
                g = g @ ws[i]      # input gradient, not for the input layer
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="data/raw")
    ap.add_argument("--repeats", type=int, default=3, help="best of N epochs for each way")
    args = ap.parse_args()
    train, _ = data.load("fashion_mnist", args.root)
    ours(train.head(2048))  # warm-up
    t_ours = min(ours(train) for _ in range(args.repeats))
    t_text = min(textbook(args.root) for _ in range(max(1, args.repeats - 1)))
    peak = max(matmul_rate() for _ in range(3))
    t_floor = min(matmuls_only(len(train)) for _ in range(args.repeats))
    rate = epoch_flops(len(train)) / t_ours
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"ours      : {t_ours:6.2f} s/epoch  ({rate / 1e9:6.1f} GFLOP/s)")
    print(f"textbook  : {t_text:6.2f} s/epoch")
    print(f"matmul    : {peak / 1e9:6.1f} GFLOP/s (2048x2048 float32)")
    print(f"floor     : {t_floor:6.2f} s/epoch  ({epoch_flops(len(train)) / t_floor / peak:5.1%} of the "
          "matmul rate; the epoch's matmuls alone)")
    print(f"speed-up over textbook: {t_text / t_ours:5.1f}x   (target >= 5x)")
    print(f"share of matmul rate  : {rate / peak:5.1%}   (target >= 70%)")


if __name__ == "__main__":
    main()
