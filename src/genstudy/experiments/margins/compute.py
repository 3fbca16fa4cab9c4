"""E6 margins, compute: train the MLPs as stacks, run DeepFool on each, write the tables (see the package doc)."""

import math
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
from pydantic import Field, model_validator

from genstudy import data, deepfool, lr_batch, models, outputs, params
from genstudy.training import evaluate

# --- params -----------------------------------------------------------------------------------


class DeepFoolParams(params.Schema):
    n_examples: params.PositiveInt        # the first N images of the training subset
    overshoot: Annotated[float, Field(ge=0)]
    max_iter: params.PositiveInt


class Params(params.Experiment):
    train_size: params.PositiveInt        # first N train images: the fixed training subset
    test_size: params.PositiveInt | None  # first N test images; null: all 10,000
    hidden: Annotated[list[params.PositiveInt], Field(min_length=1)]  # the MLP's hidden widths
    momentum: Annotated[float, Field(ge=0, lt=1)]  # SGD's momentum
    lrs: Annotated[list[params.PositiveFloat], Field(min_length=1)]
    batch_sizes: Annotated[list[params.PositiveInt], Field(min_length=1)]
    epochs: params.PositiveInt
    eval_every: params.PositiveInt        # test-set evaluation every N epochs (curves only)
    # a model "fits" its training set at this train accuracy or more; E6 compares those
    fitted_train_acc: Annotated[float, Field(gt=0, le=1)]
    deepfool: DeepFoolParams

    @model_validator(mode="after")
    def _examples_within_subset(self):
        if self.deepfool.n_examples > self.train_size:
            raise ValueError(f"deepfool.n_examples ({self.deepfool.n_examples}) must not exceed "
                             f"train_size ({self.train_size}): DeepFool runs on training images")
        return self


# --- run --------------------------------------------------------------------------------------

def run(p: Params, out: Path, models_dir: Path) -> None:
    device = params.resolve_device(p.device)
    train_all, test = data.load(p.dataset)
    train, test = train_all.head(p.train_size).to(device), test.head(p.test_size).to(device)
    sizes = [train.x[0].numel(), *p.hidden, 10]
    sweep = lr_batch.Sweep("margins", [(lr, b, s) for lr in p.lrs for b in p.batch_sizes
                                      for s in p.seeds], p.epochs)
    runs = lr_batch.plan([sweep], p.eval_every)
    curves = outputs.Curves()

    def callback(key, epoch, metrics):
        curves.callback(f"lr{key[0]:g}_b{key[1]}_s{key[2]}")(epoch, metrics)

    results, trained = lr_batch.train_runs(
        runs, lambda seed: models.seeded(seed, models.mlp, sizes).to(device), train, test,
        momentum=p.momentum, callback=callback)
    curves.write(out / "curves.csv")

    x = train.x[:p.deepfool.n_examples]
    rows = []
    for key in sweep.runs:
        res, model = results[key], trained[key]
        row = lr_batch.row("margins", key, p.epochs, res)
        train_loss, train_acc = evaluate(model, train)  # the accuracy reached, after training
        test_loss, test_acc = evaluate(model, test)
        row.update(train_acc=train_acc, train_loss=train_loss, test_acc=test_acc, test_loss=test_loss,
                   fitted=bool(train_acc >= p.fitted_train_acc))
        if res.diverged:
            row.update(margin_mean=math.nan, margin_median=math.nan, rho=math.nan,
                       flipped_share=math.nan, iterations_mean=math.nan, iterations_max=0,
                       deepfool_time=0.0)
        else:
            t0 = time.perf_counter()
            found = deepfool.deepfool(model, x, overshoot=p.deepfool.overshoot,
                                      max_iter=p.deepfool.max_iter, batch_size=1000)
            row.update(deepfool.margin_summary(model, x, found),
                       deepfool_time=time.perf_counter() - t0)
        rows.append(row)
        print(f"margins: lr {key[0]:g} batch {key[1]} seed {key[2]}: train_acc {row['train_acc']:.4f} "
              f"test_acc {test_acc:.4f} margin {row['margin_mean']:.4f} rho {row['rho']:.4f} "
              f"flipped {row['flipped_share']:.3f}")
    df = pd.DataFrame(rows)
    outputs.write_results(out, df, ["lr", "batch", "seed"])
    outputs.write_json(out / "metrics.json", headline(df))
    # how far each metric may move on another machine (.ci/reproduce.py)
    outputs.write_json(out / "tolerance.json", outputs.seed_tolerance(
        df, headline, sums=("models_fitted", "diverged_runs")))


def headline(df: pd.DataFrame) -> dict:
    """The headline numbers (what dvc metrics diff shows), over the fitted models that did not
    diverge."""
    ok = outputs.converged(df)
    fitted = ok[ok["fitted"] & ok["margin_mean"].notna()]
    return {"models_fitted": len(fitted), "margin_min": fitted["margin_mean"].min(),
            "margin_max": fitted["margin_mean"].max(),
            "corr_margin_test_acc": fitted["margin_mean"].corr(fitted["test_acc"]) if len(fitted) > 2 else None,
            "diverged_runs": len(df) - len(ok)}
