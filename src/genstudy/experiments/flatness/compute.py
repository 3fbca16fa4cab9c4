"""E1 flatness, compute: train the MLPs, measure them, write the tables (see the package doc)."""

from pathlib import Path
from typing import Annotated

import pandas as pd
from pydantic import Field

from genstudy import data, measures, models, outputs, params
from genstudy.training import evaluate, fit, make_optimizer

# --- params -----------------------------------------------------------------------------------


class Sharpness(params.Schema):
    eps: params.PositiveFloat                  # box half-width relative to |w_i| + 1
    steps: params.PositiveInt                  # projected sign-gradient ascent steps
    step_size: Annotated[float, Field(gt=0, le=1)]  # per step, fraction of the box half-width


class Params(params.Experiment):
    train_size: params.PositiveInt
    test_size: params.PositiveInt
    hidden: Annotated[list[params.PositiveInt], Field(min_length=1)]  # the MLP's hidden widths
    batch_sizes: Annotated[list[params.PositiveInt], Field(min_length=1)]
    epochs: params.PositiveInt                 # the cap when training to target_train_loss
    # Train every model until its training loss (running mean over the epoch) is at most this,
    # so the batch sizes are compared at a matched training loss; null: exactly `epochs` epochs.
    target_train_loss: params.PositiveFloat | None
    optimizer: params.Optimizer
    lr: params.PositiveFloat
    fused: bool                                # one-kernel optimizer step (sgd/adam)
    threads: params.PositiveInt | None         # torch CPU threads (set by stages.configure); null: torch's default
    sharpness: Sharpness


# --- run --------------------------------------------------------------------------------------

def run(p: Params, out: Path, models_dir: Path) -> None:
    device = params.resolve_device(p.device)
    train_all, test_all = data.load(p.dataset)
    train, test = train_all.head(p.train_size).to(device), test_all.head(p.test_size).to(device)
    curves = outputs.Curves()
    rows, sens_rows = [], []
    for bs in p.batch_sizes:
        for seed in p.seeds:
            tag = f"bs{bs}_s{seed}"
            model = models.seeded(seed, models.mlp, [784, *p.hidden, 10]).to(device)
            opt = make_optimizer(model.parameters(), p.optimizer, p.lr, fused=p.fused)
            until = None if p.target_train_loss is None else \
                (lambda m: m["train_loss"] <= p.target_train_loss)
            res = fit(model, train, epochs=p.epochs, batch_size=bs, optimizer=opt, seed=seed,
                      eval_sets={"test": test}, desc=tag, callbacks=[curves.callback(tag)],
                      until=until)
            train_loss, train_acc = evaluate(model, train)
            test_loss, test_acc = evaluate(model, test)
            sens = measures.input_sensitivity(model, test).cpu()
            sharp = measures.keskar_sharpness(model, train, eps=p.sharpness.eps,
                                              steps=p.sharpness.steps, step_size=p.sharpness.step_size)
            sens_rows += [{"batch_size": bs, "seed": seed, "index": i, "sensitivity": float(v)}
                          for i, v in enumerate(sens)]
            reached = p.target_train_loss is not None and bool(res.history) and \
                res.history[-1]["train_loss"] <= p.target_train_loss
            rows.append({"batch_size": bs, "seed": seed, "epochs": len(res.history),
                         "reached_target": reached, "diverged": res.diverged, "diverged_reason": res.diverged_reason,
                         "train_loss": train_loss, "train_acc": train_acc,
                         "test_loss": test_loss, "test_acc": test_acc,
                         "gap": train_acc - test_acc, "loss_gap": test_loss - train_loss,
                         "sensitivity_mean": sens.mean().item(), "sensitivity_median": sens.median().item(),
                         "sensitivity_std": sens.std().item() if len(sens) > 1 else 0.0,
                         "sharpness": sharp, "wall_time": res.wall_time,
                         "epoch_time": sum(res.epoch_times) / max(len(res.epoch_times), 1)})
            print(f"flatness: {tag} test_acc={test_acc:.4f} gap={train_acc - test_acc:+.4f} "
                  f"sensitivity={sens.mean():.3f} sharpness={sharp:.3f} ({res.wall_time:.0f}s)")
    curves.write(out / "curves.csv")
    df, sens_df = pd.DataFrame(rows), pd.DataFrame(sens_rows)
    outputs.write_results(out, df, ["batch_size", "seed"])
    outputs.write_table(out / "sensitivity.csv", sens_df)
    ok = outputs.converged(df)  # the runs the report uses
    ends = ok.groupby("batch_size")[["test_acc", "sharpness"]].mean().reindex(
        [min(p.batch_sizes), max(p.batch_sizes)])
    outputs.write_json(out / "metrics.json", {  # headline numbers only: what dvc metrics diff shows
        **{f"{c}_batch{bs}": ends.loc[bs, c] for bs in ends.index for c in ends.columns},
        "diverged_runs": len(df) - len(ok)})
