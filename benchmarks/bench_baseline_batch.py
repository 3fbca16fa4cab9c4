"""Benchmark: one cross-entropy epoch of E2's convnet at the notebook's batch 32 vs the study's 100.

The notebook's `baseline_model.fit` named no batch size (Keras' default 32) while its gradient-loss
arm used 100; the study trains both at 100. This measures what batch 32 would cost: the same model
(same initial weights), data, optimizer and loop (training.fit), in one process, interleaved
(32, 100, 32, 100, ...) so that machine load affects both alike. Prints the median seconds per
epoch of each and the ratio 32 / 100.

    python benchmarks/bench_baseline_batch.py [--train-size 6000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from genstudy import data, models, params
from genstudy.training import fit, make_optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=6000, help="images per epoch (default 6000)")
    ap.add_argument("--repeats", type=int, default=3, help="epochs timed per batch size (median reported)")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()

    device = params.resolve_device(a.device)
    torch.set_flush_denormal(True)  # as every stage runs (stages.configure)
    train = data.load("fashion_mnist")[0].head(a.train_size).to(device)
    batches = (32, 100)
    times: dict[int, list[float]] = {b: [] for b in batches}
    state = models.seeded(0, models.convnet_e2).state_dict()
    for rep in range(a.repeats + 1):  # the first round warms up and is dropped
        for b in batches:
            model = models.convnet_e2().to(device)
            model.load_state_dict(state)
            res = fit(model, train, epochs=1, batch_size=b, seed=rep, progress=False,
                      optimizer=make_optimizer(model.parameters(), "adam", 1e-3))
            if rep > 0:
                times[b].append(res.epoch_times[0])
    print(f"device={device} threads={torch.get_num_threads()} train_size={a.train_size} repeats={a.repeats}")
    med = {b: statistics.median(t) for b, t in times.items()}
    for b, t in med.items():
        print(f"batch {b:>3}: {t:.3f} s/epoch (all: {', '.join(f'{x:.3f}' for x in times[b])}); "
              f"a 60,000-image epoch ~{t * 60000 / a.train_size:.0f} s")
    print(f"ratio batch 32 / batch 100 per epoch: {med[32] / med[100]:.2f}x")


if __name__ == "__main__":
    main()
