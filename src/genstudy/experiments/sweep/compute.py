"""E5 sweep, compute: train the lr x batch sweeps as stacks, write the tables (see the package doc)."""

from pathlib import Path
from typing import Annotated

import pandas as pd
from pydantic import Field

from genstudy import data, lr_batch, models, outputs, params

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
    test_size: params.PositiveInt | None    # first N test images; null: all 10,000
    hidden: Annotated[list[params.PositiveInt], Field(min_length=1)]  # the MLP's hidden widths
    momentum: Annotated[float, Field(ge=0, lt=1)]  # SGD's momentum
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

    outputs.write_json(out / "metrics.json", headline(df))
    # how far each metric may move on another machine (.ci/reproduce.py)
    outputs.write_json(out / "tolerance.json", outputs.seed_tolerance(df, headline, sums=("diverged_runs",)))
    cell = outputs.converged(df).query("sweep == 'grid'").groupby(["lr", "batch"])["final_test_acc"].mean()
    if cell.notna().any():
        print(f"sweep: grid best test acc {cell.max():.4f} at (lr, batch) {cell.idxmax()}")


def headline(df: pd.DataFrame) -> dict:
    """The headline numbers (what dvc metrics diff shows), over the runs that did not diverge."""
    ok = outputs.converged(df)
    cell = ok[ok["sweep"] == "grid"].groupby(["lr", "batch"])["final_test_acc"].mean()
    # A distinct run (lr, batch, seed) that diverged: its row of the longest sweep holding it,
    # which reads it to the end, says so (a shorter sweep's row may read it before it diverged).
    diverged = df[df["diverged"]][["lr", "batch", "seed"]].drop_duplicates()
    return {"grid_best_test_acc": cell.max(), "diverged_runs": len(diverged)}
