"""Stacked training vs one model at a time: the default E5 grid at reduced epochs, same run.

Every (lr, batch) of params.yaml's sweep section, one seed, on the same training
subset: first trained as one stack per batch size (genstudy.stacked.fit_stack), then
one model at a time with genstudy.training.fit. No test evaluation in either.
Prints both times and the ratio (target: stacked at least 4x faster).

    python benchmarks/bench_sweeps.py [--epochs 1] [--seed 0] [--repeat 2]
"""

import argparse
import time
from pathlib import Path

import torch
import yaml

from genstudy import data, models
from genstudy.stacked import fit_stack
from genstudy.training import fit, make_optimizer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each way; the fastest counts")
    args = ap.parse_args()
    cfg = yaml.safe_load((ROOT / "params.yaml").read_text())["sweep"]
    lrs, batches, momentum = cfg["lrs"], cfg["batch_sizes"], cfg["momentum"]
    train = data.load(cfg["dataset"], root=ROOT / "data/raw")[0].head(cfg["train_size"])
    sizes = [784, *cfg["hidden"], 10]
    build = lambda: models.seeded(args.seed, models.mlp, sizes)  # noqa: E731
    print(f"grid: {len(lrs)} lrs x {len(batches)} batch sizes, {args.epochs} epoch(s), "
          f"{len(train)} train images, torch threads {torch.get_num_threads()}")

    def stacked(b):
        ms = [build() for _ in lrs]
        res = fit_stack(ms, train, epochs=args.epochs, batch_size=b, lrs=lrs,
                        seeds=[args.seed] * len(lrs), momentum=momentum, progress=False)
        return [r.final.get("train_acc", float("nan")) for r in res]

    def alone(b):
        accs = []
        for lr in lrs:
            m = build()
            r = fit(m, train, epochs=args.epochs, batch_size=b, seed=args.seed, progress=False,
                    optimizer=make_optimizer(m.parameters(), "sgd", lr, momentum))
            accs.append(r.final.get("train_acc", float("nan")))
        return accs

    # The two ways alternate per batch size and the fastest of --repeat runs counts: the
    # machine is shared, so a slow run says more about the neighbours than about the code.
    t_stack, t_alone, max_diff = {}, {}, 0.0
    for b in batches:
        t_stack[b] = t_alone[b] = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            acc_s = stacked(b)
            t_stack[b] = min(t_stack[b], time.perf_counter() - t0)
            t0 = time.perf_counter()
            acc_a = alone(b)
            t_alone[b] = min(t_alone[b], time.perf_counter() - t0)
        max_diff = max([max_diff] + [abs(a - s) for a, s in zip(acc_a, acc_s) if a == a and s == s])

    print(f"{'batch':>6} {'stacked s':>10} {'alone s':>10} {'ratio':>6}")
    for b in batches:
        print(f"{b:>6} {t_stack[b]:>10.2f} {t_alone[b]:>10.2f} {t_alone[b] / t_stack[b]:>6.1f}")
    ts, ta = sum(t_stack.values()), sum(t_alone.values())
    print(f"total: stacked {ts:.1f}s, one at a time {ta:.1f}s, ratio {ta / ts:.2f}x (target >= 4x)")
    print(f"largest train-accuracy difference stacked vs alone: {max_diff:.4f}")


if __name__ == "__main__":
    main()
