"""E5 sweep: learning rate x batch size, MLP 784-512-10, SGD with momentum.

Three sweeps over the configured seeds on a fixed training subset (the first
``train_size`` train images), evaluated on the test set: lr at a fixed batch,
batch at a fixed lr, and the full lr x batch grid. Every model trains in a
stack (genstudy.stacked.fit_stack); runs shared by two sweeps train once and each
sweep reads its own number of epochs (genstudy.lr_batch). Writes the tidy table
(one row per sweep x run), headline metrics, per-epoch curves and the figures.
"""

from pathlib import Path
from typing import Annotated

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from pydantic import Field

from genstudy import data, figures, lr_batch, models, outputs, params, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_text, ref_value, verdict

# --- params -----------------------------------------------------------------------------------

LrList = Annotated[list[params.PositiveFloat], Field(min_length=1)]
BatchList = Annotated[list[params.PositiveInt], Field(min_length=1)]


class LrSweep(params.Schema):
    batch_size: params.PositiveInt
    epochs: params.PositiveInt


class BatchSweep(params.Schema):
    lr: params.PositiveFloat
    epochs: params.PositiveInt


class Params(params.Experiment):
    train_size: params.PositiveInt          # first N train images: the fixed training subset
    test_size: params.PositiveInt | None = None  # first N test images; null: all 10,000
    hidden: Annotated[list[params.PositiveInt], Field(min_length=1)] = [512]
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    lrs: LrList                             # the lr axis (lr sweep and grid)
    batch_sizes: BatchList                  # the batch axis (batch sweep and grid)
    lr_sweep: LrSweep
    batch_sweep: BatchSweep
    grid_epochs: params.PositiveInt
    eval_every: params.PositiveInt          # test-set evaluation every N epochs (and at each sweep's end)


# --- run --------------------------------------------------------------------------------------

def run(p: Params, out: Path, models_dir: Path) -> None:
    device = params.resolve_device(p.device)
    train_all, test = data.load(p.dataset)
    train, test = train_all.head(p.train_size).to(device), test.head(p.test_size).to(device)
    sizes = [train.x[0].numel(), *p.hidden, 10]
    sweeps = [
        lr_batch.Sweep("lr", [(lr, p.lr_sweep.batch_size, s) for lr in p.lrs for s in p.seeds],
                      p.lr_sweep.epochs),
        lr_batch.Sweep("batch", [(p.batch_sweep.lr, b, s) for b in p.batch_sizes for s in p.seeds],
                      p.batch_sweep.epochs),
        lr_batch.Sweep("grid", [(lr, b, s) for lr in p.lrs for b in p.batch_sizes for s in p.seeds],
                      p.grid_epochs),
    ]
    runs = lr_batch.plan(sweeps, p.eval_every)
    print(f"sweep: {sum(len(s.runs) for s in sweeps)} rows from {len(runs)} distinct runs "
          f"on {len(train)} train / {len(test)} test images")
    curves = outputs.Curves()
    def callback(key, epoch, metrics):
        curves.callback(f"lr{key[0]:g}_b{key[1]}_s{key[2]}")(epoch, metrics)

    results, _ = lr_batch.train_runs(runs, lambda seed: models.seeded(seed, models.mlp, sizes).to(device),
                                    train, test, momentum=p.momentum, callback=callback)
    curves.write(out / "curves.csv")
    df = pd.DataFrame([lr_batch.row(sw.name, key, sw.epochs, results[key])
                       for sw in sweeps for key in sw.runs])
    outputs.write_results(out, df, ["sweep", "lr", "batch", "seed"])

    grid = df[df["sweep"] == "grid"]
    cell = grid.groupby(["lr", "batch"])["final_test_acc"].mean()
    outputs.write_json(out / "metrics.json", {  # headline numbers only: what dvc metrics diff shows
        "grid_best_test_acc": cell.max(), "diverged_runs": sum(r.diverged for r in results.values())})

    figures.setup()
    fig_dir = out / "figures"
    sweep_heatmaps(grid, fig_dir)
    noise_scale_lines(grid, fig_dir)
    sweeps_1d(df, fig_dir)
    if cell.notna().any():
        print(f"sweep: grid best test acc {cell.max():.4f} at (lr, batch) {cell.idxmax()}")


# --- figures ----------------------------------------------------------------------------------

METRIC_LABEL = {"final_train_acc": "train accuracy", "final_test_acc": "test accuracy"}


def sweep_heatmaps(grid: pd.DataFrame, out: Path) -> None:
    epochs = int(grid["epochs"].iloc[0])
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    for ax, value in zip(axes, ("final_train_acc", "final_test_acc")):
        figures.lr_batch_heatmap(ax, grid, value, METRIC_LABEL[value])
        ax.set_title(f"final {METRIC_LABEL[value]} after {epochs} epochs")
    fig.text(0.5, -0.03, f"mean over {grid['seed'].nunique()} seed(s); hatched red: a seed's loss "
             "turned NaN/inf (diverged); 'NaN': every seed diverged", ha="center", fontsize=9)
    figures.save(fig, out, "heatmap_accuracy")


def noise_scale_lines(grid: pd.DataFrame, out: Path) -> None:
    """Accuracy vs lr / batch, one line per batch size (mean and sd over seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    order = [str(b) for b in sorted(grid["batch"].unique())]
    d = grid.assign(batch=grid["batch"].astype(str))
    for ax, value in zip(axes, ("final_train_acc", "final_test_acc")):
        sns.lineplot(d, x="noise_scale", y=value, hue="batch", hue_order=order, marker="o",
                     errorbar="sd", palette=sns.color_palette("viridis", len(order)), ax=ax)
        ax.set_xscale("log")
        ax.set_xlabel("SGD noise scale: learning rate / batch size (per example)")
        ax.set_ylabel(METRIC_LABEL[value])
        ax.set_title(f"{METRIC_LABEL[value]} vs noise scale ({int(grid['epochs'].iloc[0])} epochs)")
        ax.legend(title="batch size", fontsize=8, ncols=2)
    figures.save(fig, out, "accuracy_vs_noise_scale")


def sweeps_1d(df: pd.DataFrame, out: Path) -> None:
    """The 1-D sweeps: accuracy vs lr (fixed batch) and vs batch (fixed lr)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    for ax, (sweep, x, fixed) in zip(axes, (("lr", "lr", "batch"), ("batch", "batch", "lr"))):
        d = df[df["sweep"] == sweep]
        if d.empty:
            ax.set_visible(False)
            continue
        long = d.melt(id_vars=[x, "seed"], value_vars=["final_train_acc", "final_test_acc"],
                      var_name="split", value_name="accuracy")
        long["split"] = long["split"].map(METRIC_LABEL)
        sns.lineplot(long, x=x, y="accuracy", hue="split", marker="o", errorbar="sd", ax=ax)
        ax.set_xscale("log", base=2 if x == "batch" else 10)
        if x == "batch":
            ax.set_xticks(sorted(d["batch"].unique()), [str(b) for b in sorted(d["batch"].unique())])
        ax.set_xlabel("learning rate" if x == "lr" else "batch size (examples)")
        ax.set_title(f"{x} sweep at {fixed} {d[fixed].iloc[0]:g}, {int(d['epochs'].iloc[0])} epochs")
        n_div = int(d["diverged"].sum())
        if n_div:
            ax.text(0.02, 0.02, f"{n_div} run(s) diverged (NaN, not drawn)", transform=ax.transAxes,
                    color="red", fontsize=8)
    figures.save(fig, out, "sweeps_1d")


# --- report -----------------------------------------------------------------------------------

def section(out: Outputs, refs: dict) -> Section:
    df = out.table()
    p = out.params
    nb = refs["sweep"]
    ref = lambda key: ref_text(refs, "sweep", key)  # noqa: E731
    lrs, bt, grid = (df[df.sweep == s] for s in ("lr", "batch", "grid"))
    at_lr = lambda lr: lrs[np.isclose(lrs.lr, lr)].set_index("seed").final_test_acc  # noqa: E731
    by_lr = lrs.groupby("lr").final_train_acc.mean()
    rows, parts = [], []
    if len(by_lr):
        rows.append(Row(f"lr sweep (batch {p['lr_sweep']['batch_size']}, {p['lr_sweep']['epochs']} epochs): "
                        "best final train accuracy (at lr)", f"{by_lr.max():.3f} (lr {by_lr.idxmax():g})",
                        f"{ref('lr_sweep_best_final_train_acc')} (lr {nb['lr_sweep_best_final_train_acc']['lr']})"))
    lo, hi = (nb[k]["lr"] for k in ("lr_sweep_test_acc_lr0.1", "lr_sweep_test_acc_lr0.5"))
    for v, key in ((lo, "lr_sweep_test_acc_lr0.1"), (hi, "lr_sweep_test_acc_lr0.5")):
        if len(at_lr(v)):  # the notebook's lr is in this run's sweep
            rows.append(Row(f"lr sweep: final test accuracy at lr {v:g}", fmt_series(at_lr(v), 3), ref(key)))
    if len(at_lr(lo)) and len(at_lr(hi)):
        parts.append((f"lr {hi:g} worse than lr {lo:g} (test accuracy difference)",
                      verdicts.judge(stats.paired(at_lr(hi), at_lr(lo)), -1, ref_value(refs, "sweep", "min_effect"))))
    small = bt[bt.batch <= nb["batch_sweep_acc_batch2to8"]["batch_max"]]
    if len(small):
        rows.append(Row(f"batch sweep (lr {p['batch_sweep']['lr']:g}): test accuracy at batch "
                        f"{small.batch.min()}-{small.batch.max()}", fmt_series(small.final_test_acc, 3),
                        ref("batch_sweep_acc_batch2to8")))
        chance = nb["batch_sweep_acc_batch2to8"]["value"]
        parts.append((f"batch {small.batch.min()}-{small.batch.max()} do not train (test accuracy − {chance:g})",
                      verdicts.judge_equal(stats.versus(small.final_test_acc, chance),
                                        ref_value(refs, "sweep", "no_training_margin"))))
    if len(grid):
        cells = grid.groupby(["lr", "batch"]).final_test_acc
        blr, bb = cells.mean().idxmax()
        best = grid[(grid.lr == blr) & (grid.batch == bb)].final_test_acc
        g = nb["grid_best_test_acc"]
        rows += [Row(f"grid ({p['grid_epochs']} epochs): best cell's test accuracy (lr, batch)",
                     f"{fmt_series(best, 3)} (lr {blr:g}, batch {bb})", f"{ref('grid_best_test_acc')} "
                     f"(lr {g['lr']:g}, batch {g['batch']})"),
                 Row("grid: runs diverged", f"{int(grid.diverged.sum())} of {len(grid)}")]
        parts.append((f"the grid's best cell (the best of {cells.ngroups}, so biased upward) − {g['value']:g}",
                      verdicts.judge_equal(stats.versus(best, g["value"]), ref_value(refs, "sweep", "grid_best_margin"))))
    return Section(
        "sweep", "E5 Learning rate x batch size",
        f"How do the learning rate and the batch size of SGD shape what an MLP "
        f"784-{'-'.join(map(str, p['hidden']))}-10 learns on {p['train_size']:,} images? Runs with the "
        "same ratio lr/batch (the SGD noise scale) should behave alike.", rows, verdict(parts))
