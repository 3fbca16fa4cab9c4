"""margins (E6): DeepFool margins of MLPs 784-100-100-100-10 trained with SGD at lr x batch.

The 16 models (lr x batch, over the configured seeds) train as stacks, one per
batch size (genstudy.sweeps.fit_stack), on a fixed training subset (the first
``train_size`` train images) toward 100% train accuracy; the accuracy reached is
recorded. DeepFool (genstudy.deepfool) then runs on the first ``deepfool.n_examples``
training images of every model, all examples as one batch. Writes one row per
model (margins, rho, share flipped, iterations, train/test accuracy), headline
metrics, per-epoch curves and the figures.
"""

import math
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
from pydantic import Field, model_validator

from genstudy import data, deepfool, figures, lrbatch, models, outputs, params, sweep_figures
from genstudy.cli import run_stage
from genstudy.training import evaluate


class DeepFoolParams(params.Section):
    n_examples: params.PositiveInt        # the first N images of the training subset
    overshoot: Annotated[float, Field(ge=0)] = 0.02
    max_iter: params.PositiveInt = 50


class MarginsParams(params.Experiment):
    train_size: params.PositiveInt        # first N train images: the fixed training subset
    test_size: params.PositiveInt | None = None
    hidden: Annotated[list[params.PositiveInt], Field(min_length=1)] = [100, 100, 100]
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    lrs: Annotated[list[params.PositiveFloat], Field(min_length=1)]
    batch_sizes: Annotated[list[params.PositiveInt], Field(min_length=1)]
    epochs: params.PositiveInt
    eval_every: params.PositiveInt        # test-set evaluation every N epochs (curves only)
    # a model "fits" its training set at this train accuracy or more; E6 compares those
    fitted_train_acc: Annotated[float, Field(gt=0, le=1)] = 0.99
    deepfool: DeepFoolParams

    @model_validator(mode="after")
    def _examples_within_subset(self):
        if self.deepfool.n_examples > self.train_size:
            raise ValueError(f"deepfool.n_examples ({self.deepfool.n_examples}) must not exceed "
                             f"train_size ({self.train_size}): DeepFool runs on training images")
        return self


OUT = Path("reports/margins")


def main() -> None:
    p = params.load("margins", MarginsParams)
    device = params.resolve_device(p.device)
    train_all, test = data.load(p.dataset)
    train, test = train_all.head(p.train_size).to(device), test.head(p.test_size).to(device)
    sizes = [train.x[0].numel(), *p.hidden, 10]
    sweep = lrbatch.Sweep("margins", [(lr, b, s) for lr in p.lrs for b in p.batch_sizes
                                      for s in p.seeds], p.epochs)
    runs = lrbatch.plan([sweep], p.eval_every)
    live = outputs.open_live(OUT / "live")

    def callback(key, epoch, metrics):
        outputs.live_callback(live, f"lr{key[0]:g}_b{key[1]}_s{key[2]}")(epoch, metrics)

    results, trained = lrbatch.train_runs(
        runs, lambda seed: models.seeded(seed, models.mlp, sizes).to(device), train, test,
        momentum=p.momentum, callback=callback)
    live.end()

    x = train.x[:p.deepfool.n_examples]
    rows = []
    for key in sweep.runs:
        res, model = results[key], trained[key]
        row = lrbatch.row("margins", key, p.epochs, res)
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
    outputs.write_table(OUT / "results.csv", df)
    df["config"] = [f"lr={a:g},batch={b}" for a, b in zip(df["lr"], df["batch"])]
    cols = ["margin_mean", "margin_median", "rho", "flipped_share", "train_acc", "test_acc"]
    ok = df[~df["diverged"]]
    outputs.write_json(OUT / "metrics.json", lrbatch.finite_or_none({
        "n_examples": len(x), "epochs": p.epochs,
        "models": len(df), "diverged": int(df["diverged"].sum()),
        "fitted_train_acc": p.fitted_train_acc, "models_fitted": int(df["fitted"].sum()),
        "margin_mean_range": [ok["margin_mean"].min(), ok["margin_mean"].max()],
        "corr_margin_test_acc": ok["margin_mean"].corr(ok["test_acc"]),
        "per_model": outputs.summary_dict(df, "config", cols),
    }))
    figures.setup()
    sweep_figures.margin_figures(df, OUT / "figures")


if __name__ == "__main__":
    run_stage(main)
