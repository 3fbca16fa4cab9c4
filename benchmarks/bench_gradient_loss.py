"""Benchmark: one training epoch of E2's convnet, cross-entropy vs the gradient loss.

Both arms train the same model (same initial weights), on the same data, with
the same batch size and optimizer, through the same loop (training.fit), in
the same process, interleaved (CE, grad, CE, grad, ...) so that machine load
affects both alike. Prints the median seconds per epoch and per step of each
arm and the ratio gradient / CE (target: <= 2.5; the notebook saw about 2).

    python benchmarks/bench_gradient_loss.py [--train-size 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from genstudy import data, models, params
from genstudy.objectives import gradient_loss
from genstudy.training import fit, make_optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=2000, help="images per epoch (default 2000)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="epochs timed per arm (median reported)")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()

    device = params.resolve_device(a.device)
    train = data.load("fashion_mnist")[0].head(a.train_size).to(device)
    arms = {"cross_entropy": None, "gradient_loss": gradient_loss}
    times: dict[str, list[float]] = {k: [] for k in arms}
    state = models.seeded(0, models.convnet_e2).state_dict()
    for rep in range(a.repeats + 1):  # the first round warms up (allocator, kernels) and is dropped
        for arm, objective in arms.items():
            model = models.convnet_e2().to(device)
            model.load_state_dict(state)
            opt = make_optimizer(model.parameters(), "adam", 1e-3)
            res = fit(model, train, epochs=1, batch_size=a.batch_size, optimizer=opt, seed=rep,
                      objective=objective, progress=False)
            if rep > 0:
                times[arm].append(res.epoch_times[0])
    steps = -(-a.train_size // a.batch_size)
    print(f"device={device} threads={torch.get_num_threads()} train_size={a.train_size} "
          f"batch={a.batch_size} steps/epoch={steps} repeats={a.repeats}")
    med = {arm: statistics.median(t) for arm, t in times.items()}
    for arm, t in med.items():
        print(f"{arm:>14}: {t:.3f} s/epoch  {1e3 * t / steps:.1f} ms/step  "
              f"(all: {', '.join(f'{x:.3f}' for x in times[arm])})")
    ratio = med["gradient_loss"] / med["cross_entropy"]
    print(f"ratio gradient_loss / cross_entropy: {ratio:.2f}x (target <= 2.5x)")


if __name__ == "__main__":
    main()
