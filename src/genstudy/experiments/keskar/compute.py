"""E1b Keskar's F1, compute: train SB and LB per seed, measure their sharpness, write the tables (see the package doc)."""

import time
from pathlib import Path
from typing import Annotated

import pandas as pd
from pydantic import Field, field_validator

from genstudy import data, measures, models, outputs, params
from genstudy.training import evaluate, fit, make_optimizer, recalibrate_batchnorm

# --- params


class Params(params.Experiment):
    # torch CPU threads, set by stages.configure (the study's machine has 2 cores); null: torch's default.
    threads: params.PositiveInt | None
    depth: params.PositiveInt              # F1: 5 hidden layers ...
    width: params.PositiveInt              # ... of 512 units
    small_batch: params.PositiveInt        # the paper's SB
    # LB = this fraction of the training set (the paper: 10 %, 6,000 of MNIST's 60,000).
    large_fraction: Annotated[float, Field(gt=0, le=1)]
    lr: params.PositiveFloat               # the paper used Adam, lr not stated
    fused: bool                            # one-kernel Adam step: same update up to rounding, less overhead
    # Both arms train until the eval-mode accuracy on the (whole) training set reaches
    # target_train_acc, so they are compared at the same fit, not the same epochs (LB takes
    # far fewer steps per epoch); max_epochs caps the cost. See params.yaml for the measured
    # epochs behind the values.
    target_train_acc: Annotated[float, Field(gt=0, le=1)]
    max_epochs: params.PositiveInt
    # First train_size training images (null: all); the LB batch is large_fraction of them.
    train_size: params.PositiveInt | None
    test_size: params.PositiveInt | None                 # null: all test images
    eps: Annotated[list[params.PositiveFloat], Field(min_length=1)]  # the paper's two: 1e-3, 5e-4
    lbfgs_iterations: params.PositiveInt   # L-BFGS-B iterations per sharpness (the paper: 10)
    # How far the maximiser is from converged: for the first seed of each arm, L-BFGS-B's value
    # at eps[0] by the end of each of these iterations (one run of the largest).
    convergence_iterations: Annotated[list[params.PositiveInt], Field(min_length=1)]
    ascent_steps: params.PositiveInt       # the sign-ascent cross-check (measures.box_maximum)
    ascent_step_size: Annotated[float, Field(gt=0, le=1)]
    # Training images the sharpness loss L is evaluated on (the first ones of the training
    # subset); null: all of it, as the paper. See params.yaml for the cost behind the value.
    sharpness_size: params.PositiveInt | None
    sharpness_batch: params.PositiveInt    # images per forward/backward inside L (memory only)

    @field_validator("eps")
    @classmethod
    def _distinct(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"values must be distinct (got {v})")
        return v


def _eps_key(eps: float) -> str:
    """1e-3 -> '1e-3': the suffix of a column and of a reference key."""
    m, e = f"{eps:.0e}".split("e")
    return f"{m}e{int(e)}"


# --- run

def _fitted(model, train: data.Tensors):
    """A fit callback: after each epoch, batch norm's statistics recomputed over the training
    set, then the eval-mode loss and accuracy there (``fit_loss``, ``fit_acc``): the criterion,
    and the network whose sharpness is measured."""
    def callback(epoch: int, m: dict) -> None:
        recalibrate_batchnorm(model, train)
        m["fit_loss"], m["fit_acc"] = evaluate(model, train)
    return callback


def run(p: Params, out: Path, models_dir: Path) -> None:
    device = params.resolve_device(p.device)
    train_all, test_all = data.load(p.dataset)
    train, test = train_all.head(p.train_size).to(device), test_all.head(p.test_size).to(device)
    sharp_set = train.head(p.sharpness_size)
    batches = {"SB": p.small_batch, "LB": max(1, round(p.large_fraction * len(train)))}
    rows, convergence = [], []
    for arm, bs in batches.items():
        for seed in p.seeds:
            model = models.seeded(seed, models.keskar_f1, p.depth, p.width).to(device)
            opt = make_optimizer(model.parameters(), "adam", p.lr, fused=p.fused)
            res = fit(model, train, epochs=p.max_epochs, batch_size=bs, optimizer=opt, seed=seed,
                      callbacks=[_fitted(model, train)], desc=f"{arm} s{seed}",
                      until=lambda m: m["fit_acc"] >= p.target_train_acc)
            recalibrate_batchnorm(model, train)  # already so after a finished epoch; not after a divergence
            train_loss, train_acc = evaluate(model, train)
            test_loss, test_acc = evaluate(model, test)
            row = {"arm": arm, "batch_size": bs, "seed": seed, "dataset": p.dataset,
                   "train_size": len(train), "sharpness_size": len(sharp_set),
                   "epochs": len(res.history), "reached": train_acc >= p.target_train_acc,
                   "diverged": res.diverged, "diverged_reason": res.diverged_reason, "train_loss": train_loss, "train_acc": train_acc,
                   "test_loss": test_loss, "test_acc": test_acc, "gap": train_acc - test_acc,
                   "train_time_s": res.wall_time}
            t0 = time.perf_counter()
            for eps in p.eps:
                k = _eps_key(eps)
                # primary: batch norm with batch statistics, as the paper's network (Keras 1 mode=2);
                # second: eval mode with the running statistics, the value an eval-mode network gives
                s = measures.keskar_sharpness_lbfgsb(model, sharp_set, eps=eps, iterations=p.lbfgs_iterations,
                                                     batch_size=p.sharpness_batch, batch_stats=True)
                row[f"sharpness_lbfgsb_{k}"], row["base_loss"] = s.value, s.loss  # L(w), the same for every eps
                row[f"lbfgsb_iterations_{k}"], row[f"lbfgsb_evaluations_{k}"] = s.iterations, s.evaluations
                row[f"sharpness_lbfgsb_eval_{k}"] = measures.keskar_sharpness_lbfgsb(
                    model, sharp_set, eps=eps, iterations=p.lbfgs_iterations, batch_size=p.sharpness_batch).value
                row[f"sharpness_ascent_{k}"] = measures.keskar_sharpness(
                    model, sharp_set, eps=eps, steps=p.ascent_steps, step_size=p.ascent_step_size, batch_stats=True)
            if seed == p.seeds[0] and not res.diverged:
                trace = measures.keskar_sharpness_lbfgsb(
                    model, sharp_set, eps=p.eps[0], iterations=max(p.convergence_iterations),
                    batch_size=p.sharpness_batch, batch_stats=True).trace
                convergence += [{"arm": arm, "seed": seed, "eps": p.eps[0], "iterations": n,
                                 "iterations_done": min(n, len(trace)), "sharpness": trace[min(n, len(trace)) - 1]}
                                for n in sorted(p.convergence_iterations) if trace]
            row["sharpness_time_s"] = time.perf_counter() - t0
            rows.append(row)
            print(f"keskar: {arm} (batch {bs}) seed {seed}: {row['epochs']} epochs, train {train_acc:.4f} "
                  f"test {test_acc:.4f}, sharpness " + ", ".join(
                      f"{_eps_key(e)}: {row[f'sharpness_lbfgsb_{_eps_key(e)}']:.2f}" for e in p.eps) +
                  f" ({res.wall_time:.0f} s + {row['sharpness_time_s']:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    outputs.write_results(out, df, ["arm", "seed"])
    pd.DataFrame(convergence, columns=["arm", "seed", "eps", "iterations", "iterations_done", "sharpness"]).to_csv(
        out / "convergence.csv", index=False)
    ok = outputs.converged(df)  # the runs the report uses
    means = ok.groupby("arm", sort=False).mean(numeric_only=True).reindex(list(batches))
    k = _eps_key(p.eps[0])
    outputs.write_json(out / "metrics.json", {  # headline numbers only: what dvc metrics diff shows
        **{f"{arm}_{c}": means.at[arm, col] for arm in means.index
           for c, col in (("test_acc", "test_acc"), (f"sharpness_{k}", f"sharpness_lbfgsb_{k}"))},
        "diverged_runs": len(df) - len(ok)})
