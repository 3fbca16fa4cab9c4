"""Cost of the keskar stage (E1b, Keskar's F1) on this machine: what its defaults rest on.

  train     : seconds per epoch of F1 (Adam, lr 1e-3) at a batch size, and the epochs until the
              training set is fitted (eval-mode train accuracy >= --target, batch-norm statistics
              recomputed over the training set first, as the stage does), with a time cap
  sharpness : seconds per loss-and-gradient evaluation over N training images, and the whole
              L-BFGS-B sharpness (and the sign-ascent cross-check) at each eps

Run from the repo root after `dvc repro fetch`, e.g.
  python benchmarks/bench_keskar.py train --train-size 60000 --fraction 0.1 --cap-s 300
  python benchmarks/bench_keskar.py sharpness --n 10000 60000
"""

from __future__ import annotations

import argparse
import time

import torch

from genstudy import data, measures, models
from genstudy.training import evaluate, fit, make_optimizer, recalibrate_batchnorm


def train(args, train_set: data.Tensors) -> None:
    n = len(train_set)
    bs = args.batch or max(1, round(args.fraction * n))
    model = models.seeded(args.seed, models.keskar_f1)
    opt = make_optimizer(model.parameters(), "adam", args.lr)
    t0 = time.perf_counter()

    def until(m: dict) -> bool:
        t = time.perf_counter()
        recalibrate_batchnorm(model, train_set)  # as the stage does (see training.recalibrate_batchnorm)
        m["eval_train_loss"], m["eval_train_acc"] = evaluate(model, train_set)
        m["eval_s"] = time.perf_counter() - t
        print(f"  epoch {m['epoch']:3d}: {m['time']:.1f} s train, running acc {m['train_acc']:.4f}, "
              f"eval-mode acc {m['eval_train_acc']:.4f} loss {m['eval_train_loss']:.4f} "
              f"(recalibration + eval {m['eval_s']:.1f} s)", flush=True)
        return m["eval_train_acc"] >= args.target or time.perf_counter() - t0 > args.cap_s

    res = fit(model, train_set, epochs=args.epochs, batch_size=bs, optimizer=opt, seed=args.seed,
              progress=False, until=until)
    t_eval = time.perf_counter()
    evaluate(model, train_set)
    t_eval = time.perf_counter() - t_eval
    ep = res.epoch_times
    print(f"train n={n} batch={bs}: {len(ep)} epochs, {sum(ep) / len(ep):.2f} s/epoch (training), "
          f"eval pass over the train set {t_eval:.2f} s, wall {res.wall_time:.0f} s, "
          f"reached {res.final.get('eval_train_acc', float('nan')):.4f}")
    if args.save:
        torch.save(model.state_dict(), args.save)


def sharpness(args, train_set: data.Tensors) -> None:
    model = models.seeded(args.seed, models.keskar_f1)
    if args.load:
        model.load_state_dict(torch.load(args.load))
        recalibrate_batchnorm(model, train_set)  # as the stage does before measuring
    else:  # a briefly trained model (BN running statistics from real data)
        fit(model, train_set.head(10000), epochs=1, batch_size=256, seed=0, progress=False,
            optimizer=make_optimizer(model.parameters(), "adam", 1e-3))
    for n in args.n:
        sub = train_set.head(n)
        t0 = time.perf_counter()
        measures.keskar_sharpness_lbfgsb(model, sub, eps=1e-3, iterations=0)
        t_eval = time.perf_counter() - t0
        print(f"n={n}: one loss+gradient evaluation {t_eval:.2f} s", flush=True)
        for eps in args.eps:
            t0 = time.perf_counter()
            s = measures.keskar_sharpness_lbfgsb(model, sub, eps=eps, iterations=args.iterations)
            t1 = time.perf_counter()
            a = measures.keskar_sharpness(model, sub, eps=eps, steps=args.steps)
            t2 = time.perf_counter()
            print(f"  eps {eps:g}: L-BFGS-B {s.value:.3f} ({s.iterations} it, {s.evaluations} ev, "
                  f"{t1 - t0:.1f} s); ascent {a:.3f} ({args.steps} steps, {t2 - t1:.1f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["train", "sharpness"])
    ap.add_argument("--train-size", type=int, default=60000)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--cap-s", type=float, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default=None)
    ap.add_argument("--load", default=None)
    ap.add_argument("--n", type=int, nargs="+", default=[10000])
    ap.add_argument("--eps", type=float, nargs="+", default=[1e-3, 5e-4])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train_set, _ = data.load("fashion_mnist")
    train_set = train_set.head(args.train_size)
    (train if args.what == "train" else sharpness)(args, train_set)


if __name__ == "__main__":
    main()
