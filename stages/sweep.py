"""sweep (E5): learning rate x batch size, MLP 784-512-10, SGD with momentum.

Three sweeps over the configured seeds on a fixed training subset (the first
``train_size`` train images), evaluated on the test set: lr at a fixed batch,
batch at a fixed lr, and the full lr x batch grid. Every model trains in a
stack (genstudy.sweeps.fit_stack); runs shared by two sweeps train once and each
sweep reads its own number of epochs (genstudy.lrbatch). Writes the tidy table
(one row per sweep x run), headline metrics, per-epoch curves and the figures.
"""

from pathlib import Path
from typing import Annotated

import pandas as pd
from pydantic import Field

from genstudy import data, figures, lrbatch, models, outputs, params, sweep_figures
from genstudy.cli import run_stage

LrList = Annotated[list[params.PositiveFloat], Field(min_length=1)]
BatchList = Annotated[list[params.PositiveInt], Field(min_length=1)]


class LrSweep(params.Section):
    batch_size: params.PositiveInt
    epochs: params.PositiveInt


class BatchSweep(params.Section):
    lr: params.PositiveFloat
    epochs: params.PositiveInt


class SweepParams(params.Experiment):
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


OUT = Path("reports/sweep")


def main() -> None:
    p = params.load("sweep", SweepParams)
    device = params.resolve_device(p.device)
    train_all, test = data.load(p.dataset)
    train, test = train_all.head(p.train_size).to(device), test.head(p.test_size).to(device)
    sizes = [train.x[0].numel(), *p.hidden, 10]
    sweeps = [
        lrbatch.Sweep("lr", [(lr, p.lr_sweep.batch_size, s) for lr in p.lrs for s in p.seeds],
                      p.lr_sweep.epochs),
        lrbatch.Sweep("batch", [(p.batch_sweep.lr, b, s) for b in p.batch_sizes for s in p.seeds],
                      p.batch_sweep.epochs),
        lrbatch.Sweep("grid", [(lr, b, s) for lr in p.lrs for b in p.batch_sizes for s in p.seeds],
                      p.grid_epochs),
    ]
    runs = lrbatch.plan(sweeps, p.eval_every)
    print(f"sweep: {sum(len(s.runs) for s in sweeps)} rows from {len(runs)} distinct runs "
          f"on {len(train)} train / {len(test)} test images")
    live = outputs.open_live(OUT / "live")
    log = outputs.live_callback

    def callback(key, epoch, metrics):
        log(live, f"lr{key[0]:g}_b{key[1]}_s{key[2]}")(epoch, metrics)

    results, _ = lrbatch.train_runs(runs, lambda seed: models.seeded(seed, models.mlp, sizes).to(device),
                                    train, test, momentum=p.momentum, callback=callback)
    live.end()
    df = pd.DataFrame([lrbatch.row(sw.name, key, sw.epochs, results[key])
                       for sw in sweeps for key in sw.runs])
    outputs.write_table(OUT / "results.csv", df)

    grid = df[df["sweep"] == "grid"]
    cell = grid.groupby(["lr", "batch"])["final_test_acc"].mean()
    best_lr, best_batch = cell.idxmax() if cell.notna().any() else (float("nan"), 0)
    per_sweep = {}
    for name, d in df.groupby("sweep", sort=False):
        by = "lr" if name == "lr" else "batch" if name == "batch" else None
        keyed = d.assign(config=d[by].map(lambda v: f"{by}={v:g}")) if by else \
            d.assign(config=[f"lr={a:g},batch={b}" for a, b in zip(d["lr"], d["batch"])])
        per_sweep[name] = outputs.summary_dict(keyed, "config", ["final_train_acc", "final_test_acc"])
    outputs.write_json(OUT / "metrics.json", lrbatch.finite_or_none({
        "grid_best": {"lr": best_lr, "batch": int(best_batch), "test_acc_mean": cell.max(),
                      "epochs": p.grid_epochs},
        "diverged_runs": sum(r.diverged for r in results.values()),
        "train_time_total": float(sum(r.wall_time for r in results.values())),
        "sweeps": per_sweep,
    }))

    figures.setup()
    fig_dir = OUT / "figures"
    sweep_figures.sweep_heatmaps(grid, fig_dir)
    sweep_figures.noise_scale_lines(grid, fig_dir)
    sweep_figures.sweeps_1d(df, fig_dir)
    print(f"sweep: grid best test acc {cell.max():.4f} at lr {best_lr:g}, batch {best_batch}")


if __name__ == "__main__":
    run_stage(main)
