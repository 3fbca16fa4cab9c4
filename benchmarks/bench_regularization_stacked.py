"""E3's trainings: stacked (stacked.fit_stack_autograd) vs one model at a time (training.fit).

E3's MLP 784-300-100-10, Nadam at batch 32, on the first ``--n`` Fashion-MNIST training images,
one epoch (a pass over ``--n // 4`` test images after it, as the stage evaluates each epoch),
in one process, alternating the ways so machine load affects them alike. Two groups, as the stage
stacks them: ``penalties`` (ReLU, no dropout: L1/L2 strengths x seeds, the stage's 30 models)
and ``dropout`` (SELU + AlphaDropout, max-norm on some: the per-member dropout draws cost most);
members cycle through seeds 0-2, and without input dropout a stack holds one seed (its members
share their batches, so the first layer is one matmul).
Prints the median seconds per member-epoch of each way and each stack size, the largest
difference in accuracy between the ways and the ratios. The runs are the same to float
rounding at first (tests/test_stacked.py); over an epoch of hundreds of Nadam steps rounding
differences grow, as between any two matmul kernels, to a few images in a thousand for some
members. The issue's target: >= 3x per member-epoch.

    python benchmarks/bench_regularization_stacked.py [--n 6400] [--members 30] [--stacks 6 12] [--repeats 2]
"""

import argparse
import statistics
import time

import torch

from genstudy import data, models
from genstudy.objectives import max_norm, penalized
from genstudy.stacked import Member, fit_stack_autograd
from genstudy.training import fit, make_optimizer

SIZES = [784, 300, 100, 10]
GROUPS = {  # build kwargs, and the members' settings cycled through
    "penalties": ({}, [dict(l1=1e-4), dict(l2=1e-3), dict(), dict(l1=1e-2, l2=1e-2), dict(l1=1e-5)]),
    "dropout": ({"activation": "selu", "init": "lecun_normal", "dropout": 0.2, "alpha_dropout": True},
                [dict(), dict(max_norm=3.0)]),
}


def members(group: str, k: int) -> list[Member]:
    settings = GROUPS[group][1]
    return [Member(seed=i % 3, **settings[i % len(settings)]) for i in range(k)]


def alone(group, ms, train, val):
    kw = GROUPS[group][0]
    accs = []
    for m in ms:
        model = models.seeded(m.seed, models.mlp, SIZES, init=kw.get("init", "he_normal"),
                              **{k: v for k, v in kw.items() if k != "init"})
        res = fit(model, train, epochs=1, batch_size=32, seed=m.seed, eval_sets={"val": val},
                  optimizer=make_optimizer(model.parameters(), "nadam", 1e-3),
                  objective=penalized(m.l1, m.l2), progress=False,
                  constraints=[max_norm(m.max_norm, ["fc1", "fc2"])] if m.max_norm else [])
        accs.append(res.final["val_acc"])
    return accs


def stacked(group, ms, train, val, size):
    kw = GROUPS[group][0]
    ms_models = [models.seeded(m.seed, models.mlp, SIZES, init=kw.get("init", "he_normal"),
                               **{k: v for k, v in kw.items() if k != "init"}) for m in ms]
    res = fit_stack_autograd(ms_models, train, epochs=1, batch_size=32, optimizer="nadam", lr=1e-3,
                             members=ms, eval_sets={"val": val}, max_stack=size, progress=False)
    return [r.final["val_acc"] for r in res]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6400, help="training images (one epoch)")
    ap.add_argument("--members", type=int, default=30, help="models per group")
    ap.add_argument("--stacks", type=int, nargs="+", default=[6, 12], help="stack sizes to time")
    ap.add_argument("--groups", nargs="+", default=list(GROUPS))
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    torch.set_flush_denormal(True)  # as every stage runs (stages.configure)
    train_all, test = data.load("fashion_mnist")
    train, val = data.standardize(train_all, test)
    train, val = train.head(a.n), val.head(a.n // 4)
    print(f"threads={torch.get_num_threads()} n={a.n} members={a.members} repeats={a.repeats}")
    for group in a.groups:
        ms = members(group, a.members)
        ways = {"alone": lambda: alone(group, ms, train, val)}
        ways.update({f"stack {s}": (lambda s=s: stacked(group, ms, train, val, s)) for s in a.stacks})
        times = {w: [] for w in ways}
        accs = {}
        for _ in range(a.repeats):
            for w, f in ways.items():
                t0 = time.perf_counter()
                accs[w] = f()
                times[w].append((time.perf_counter() - t0) / len(ms))
        med = {w: statistics.median(t) for w, t in times.items()}
        for w in ways:
            diff = max(abs(x - y) for x, y in zip(accs[w], accs["alone"]))
            ratio = med["alone"] / med[w]
            print(f"{group:9s} {w:8s} {med[w]:.3f} s per member-epoch (all: "
                  f"{', '.join(f'{t:.3f}' for t in times[w])}); val-acc diff {diff:.1e}; "
                  f"RATIO {ratio:.2f}x")


if __name__ == "__main__":
    main()
