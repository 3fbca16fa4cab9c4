"""Figure 8's 129 probes: stacked (one batched matmul per feature count) vs one small layer each.

The same frozen deep skip MLP (figure 8's: 128 layers of 128 units, skip to layer 64), the same
data, the same epochs (no early stopping), all activations cached, in one process, alternating
(stacked, one each, stacked, ...) so machine load affects both alike. Prints each way's median
time, their test errors' largest difference (the same training up to float rounding) and the
ratio. The issue's target: >= 3x.

    python benchmarks/bench_probes_stacked.py [--n 2048] [--epochs 3] [--repeats 2]
"""

import argparse
import statistics
import time

import torch

from genstudy import data, models
from genstudy.probes import ProbeConfig, train_probes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048, help="probe training images (1/6 validation)")
    ap.add_argument("--test", type=int, default=1024, help="test images")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_flush_denormal(True)  # as every stage runs (stages.configure)
    train, test = data.load("fashion_mnist")
    train, test = train.head(a.n), test.head(a.test)
    model = models.seeded(0, models.DeepSkipMLP, depth=128, width=128, skip_layer=64, init="he_normal")
    points = models.deep_mlp_points(128)
    cfg = {s: ProbeConfig(epochs=a.epochs, patience=a.epochs + 1, batch_size=128, lr=0.01, lr_features=784,
                          cache_bytes=2**30, stack=s) for s in (True, False)}
    times: dict[bool, list[float]] = {True: [], False: []}
    rows = {}
    for _ in range(a.repeats):
        for stack in (True, False):
            t0 = time.perf_counter()
            rows[stack] = train_probes(model, points, train, test, cfg[stack], 0, progress=False)
            times[stack].append(time.perf_counter() - t0)
    med = {s: statistics.median(t) for s, t in times.items()}
    diff = max(abs(x["test_error"] - y["test_error"]) for x, y in zip(rows[True], rows[False]))
    print(f"threads={torch.get_num_threads()} probes={len(points)} n={a.n} epochs={a.epochs} repeats={a.repeats}")
    print(f"stacked:  {med[True]:.1f} s (all: {', '.join(f'{t:.1f}' for t in times[True])})")
    print(f"one each: {med[False]:.1f} s (all: {', '.join(f'{t:.1f}' for t in times[False])})")
    print(f"largest test-error difference: {diff:.4f}")
    print(f"RATIO stacked vs one each: {med[False] / med[True]:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
