"""E1b Keskar's F1: are large-batch minima sharper than small-batch ones at the paper's scale?

Trains Keskar et al.'s (ICLR 2017) network F1 (784 - 5 x [512, batch norm, ReLU] - 10,
softmax cross-entropy, Adam) with a small batch (SB, 256) and a large batch (LB, a fraction
of the training set, 10 % in the paper), once per seed, each until its training set is
fitted to the same criterion (eval-mode training accuracy) or an epoch cap. Each model
is then measured: train/test loss and accuracy, the generalization gap, and Keskar's
sharpness (Metric 2.1, full space) at every eps, maximised by L-BFGS-B as in the paper
and, as a cross-check, by projected sign-gradient ascent.
"""

import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import seaborn as sns
import torch
from matplotlib import pyplot as plt
from pydantic import Field, field_validator

from genstudy import data, figures, measures, models, outputs, params, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_value, verdict
from genstudy.training import evaluate, fit, make_optimizer, recalibrate_batchnorm

# How a data set is named in prose (the report), by its params name.
DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}
ARMS = ("SB", "LB")


# --- params

class Params(params.Experiment):
    # Keskar et al. report mean +- std over 5 trials; 5 seeds per arm here too.
    seeds: params.Seeds = [0, 1, 2, 3, 4]
    # torch CPU threads (the study's machine has 2 cores); null: torch's default.
    threads: params.PositiveInt | None = 2
    depth: params.PositiveInt = 5          # F1: 5 hidden layers ...
    width: params.PositiveInt = 512        # ... of 512 units
    small_batch: params.PositiveInt = 256  # the paper's SB
    # LB = this fraction of the training set (the paper: 10 %, 6,000 of MNIST's 60,000).
    large_fraction: Annotated[float, Field(gt=0, le=1)] = 0.1
    lr: params.PositiveFloat = 1e-3        # Adam's default; the paper used Adam, lr not stated
    fused: bool = True                     # one-kernel Adam step: same update up to rounding, less overhead
    # Both arms train until the eval-mode accuracy on the (whole) training set reaches
    # target_train_acc, so they are compared at the same fit, not the same epochs (LB takes
    # far fewer steps per epoch); max_epochs caps the cost. See params.yaml for the measured
    # epochs behind the defaults.
    target_train_acc: Annotated[float, Field(gt=0, le=1)] = 0.99
    max_epochs: params.PositiveInt = 40
    # First train_size training images (null: all); the LB batch is large_fraction of them.
    # 10,000, not 60,000: the CPU budget (measured in params.yaml).
    train_size: params.PositiveInt | None = 10000
    test_size: params.PositiveInt | None = None          # null: all test images
    eps: Annotated[list[params.PositiveFloat], Field(min_length=1)] = [1e-3, 5e-4]  # the paper's two
    lbfgs_iterations: params.PositiveInt = 10   # L-BFGS-B iterations per sharpness (a small fixed number)
    ascent_steps: params.PositiveInt = 10       # the sign-ascent cross-check (measures.box_maximum)
    ascent_step_size: Annotated[float, Field(gt=0, le=1)] = 0.25
    # Training images the sharpness loss L is evaluated on (the first ones of the training
    # subset); null: all of it, as the paper. See params.yaml for the cost behind the default.
    sharpness_size: params.PositiveInt | None = None
    sharpness_batch: params.PositiveInt = 4096  # images per forward/backward inside L (memory only)

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
    if p.threads:
        torch.set_num_threads(p.threads)
    device = params.resolve_device(p.device)
    train_all, test_all = data.load(p.dataset)
    train, test = train_all.head(p.train_size).to(device), test_all.head(p.test_size).to(device)
    sharp_set = train.head(p.sharpness_size)
    batches = {"SB": p.small_batch, "LB": max(1, round(p.large_fraction * len(train)))}
    rows = []
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
                s = measures.keskar_sharpness_lbfgsb(model, sharp_set, eps=eps, iterations=p.lbfgs_iterations,
                                                     batch_size=p.sharpness_batch)
                row[f"sharpness_lbfgsb_{k}"], row["base_loss"] = s.value, s.loss  # L(w), the same for every eps
                row[f"lbfgsb_iterations_{k}"], row[f"lbfgsb_evaluations_{k}"] = s.iterations, s.evaluations
                row[f"sharpness_ascent_{k}"] = measures.keskar_sharpness(
                    model, sharp_set, eps=eps, steps=p.ascent_steps, step_size=p.ascent_step_size)
            row["sharpness_time_s"] = time.perf_counter() - t0
            rows.append(row)
            print(f"keskar: {arm} (batch {bs}) seed {seed}: {row['epochs']} epochs, train {train_acc:.4f} "
                  f"test {test_acc:.4f}, sharpness " + ", ".join(
                      f"{_eps_key(e)}: {row[f'sharpness_lbfgsb_{_eps_key(e)}']:.2f}" for e in p.eps) +
                  f" ({res.wall_time:.0f} s + {row['sharpness_time_s']:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    outputs.write_results(out, df, ["arm", "seed"])
    means = df.groupby("arm", sort=False).mean(numeric_only=True)
    k = _eps_key(p.eps[0])
    outputs.write_json(out / "metrics.json", {  # headline numbers only: what dvc metrics diff shows
        f"{arm}_{c}": means.at[arm, col] for arm in means.index
        for c, col in (("test_acc", "test_acc"), (f"sharpness_{k}", f"sharpness_lbfgsb_{k}"))})
    draw(df, out / "figures")


# --- figures

def draw(df: pd.DataFrame, out: Path) -> None:
    figures.setup()
    cols = [c for c in df.columns if c.startswith("sharpness_lbfgsb_") or c.startswith("sharpness_ascent_")]
    long = df.melt(id_vars=["arm", "batch_size", "seed"], value_vars=cols, value_name="sharpness")
    long["method"] = long.variable.str.split("_").str[1].map({"lbfgsb": "L-BFGS-B", "ascent": "sign ascent"})
    long["eps"] = "eps " + long.variable.str.split("_").str[2]
    long["arm"] = long.arm + " (batch " + long.batch_size.astype(str) + ")"
    # log scale: LB and SB may differ by orders of magnitude; 0 (no increase found) drawn at 1e-3
    long["sharpness"] = long.sharpness.clip(lower=1e-3)
    g = sns.catplot(long, x="arm", y="sharpness", hue="method", col="eps", kind="strip", dodge=True,
                    size=6, alpha=0.8, height=4, aspect=1.1, log_scale=True)
    for ax, (_, sub) in zip(g.axes.flat, long.groupby("eps", sort=False)):
        sns.pointplot(sub, x="arm", y="sharpness", hue="method", dodge=0.4, errorbar=None, markers="_",
                      markersize=25, linestyle="none", palette=["0.2", "0.2"], legend=False, ax=ax)
    g.set_titles("{col_name}")
    g.set_axis_labels("", "Keskar sharpness (%, log scale)")
    g.legend.set_title("maximiser")
    g.figure.suptitle("F1: sharpness of small- vs large-batch minima (dots = seeds, bar = mean)", y=1.04)
    figures.save(g.figure, out, "sharpness")


# --- report

def _ref(refs: dict, key: str, digits: int = 2) -> str:
    r = (refs.get("keskar") or {}).get(key)
    if not r or r.get("value") is None:
        return ""
    return f"{r['value']:.{digits}f}" + (f" ± {r['std']:.{digits}f}" if r.get("std") is not None else "")


def section(out: Outputs, refs: dict) -> Section:
    df = out.table()
    first = df.iloc[0]
    name = DATASET_NAMES.get(first.dataset, first.dataset)
    eps_keys = [c.removeprefix("sharpness_lbfgsb_") for c in df.columns if c.startswith("sharpness_lbfgsb_")]
    arms = {a: df[df.arm == a] for a in ARMS}
    rows = []
    for a, g in arms.items():
        lab, low = f"{a} (batch {g.batch_size.iloc[0]:,})", a.lower()
        rows += [Row(f"{lab}: train accuracy (%)", fmt_series(100 * g.train_acc, 2), _ref(refs, f"train_acc_{low}")),
                 Row(f"{lab}: test accuracy (%)", fmt_series(100 * g.test_acc, 2), _ref(refs, f"test_acc_{low}")),
                 Row(f"{lab}: generalization gap (train - test, points)", fmt_series(100 * g.gap, 2)),
                 Row(f"{lab}: epochs to the criterion (reached by {int(g.reached.sum())} of {len(g)})",
                     fmt_series(g.epochs, 1))]
        for k in eps_keys:
            rows += [Row(f"{lab}: sharpness eps {k}, L-BFGS-B", fmt_series(g[f"sharpness_lbfgsb_{k}"], 2),
                         _ref(refs, f"sharpness_{low}_eps{k}")),
                     Row(f"{lab}: sharpness eps {k}, sign ascent (cross-check)",
                         fmt_series(g[f"sharpness_ascent_{k}"], 2))]
    sb, lb = arms["SB"], arms["LB"]
    # The paper's claims, each LB against SB over independent seeds (different batch orders, so
    # the seeds do not pair): LB's minima are sharper, and LB generalizes worse.
    parts = [(f"LB − SB sharpness at eps {k} (L-BFGS-B, %)",
              verdicts.judge(stats.welch(lb[f"sharpness_lbfgsb_{k}"], sb[f"sharpness_lbfgsb_{k}"]), +1,
                          ref_value(refs, "keskar", "min_sharpness_effect"))) for k in eps_keys]
    parts.append(("LB − SB test accuracy", verdicts.judge(stats.welch(lb.test_acc, sb.test_acc), -1,
                                                      ref_value(refs, "keskar", "min_accuracy_effect"))))
    notes = [f"Data set: {name}" + ("" if first.dataset == "mnist" else ", where Keskar et al. used MNIST") +
             f"; {int(first.train_size):,} training images, sharpness evaluated on the first "
             f"{int(first.sharpness_size):,} of them (the paper: the whole training set)."]
    return Section("keskar", "E1b Keskar's F1: sharp minima of large batches",
                   "Do large batches converge to sharper minima than small ones, and generalize worse, "
                   "with Keskar et al.'s own network F1 (5 x 512 with batch norm, Adam, SB 256 vs LB "
                   "10 % of the data), both trained to the same training accuracy?",
                   rows, verdict(parts, " ".join(notes)))
