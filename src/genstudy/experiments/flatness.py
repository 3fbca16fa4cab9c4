"""E1 flatness: does the batch size change flatness, input sensitivity and the gap?

Trains the MLP 784-16-16-10 (Adam) for every batch size and seed on the first
``train_size`` train / ``test_size`` test images, then measures each model:
train/test loss and accuracy, the generalization gap, the input sensitivity
(per-example norm of d loss / d input over the test subset, distribution kept)
and Keskar's epsilon-sharpness on the training subset.
"""

from pathlib import Path
from typing import Annotated

import pandas as pd
import seaborn as sns
import torch
from matplotlib import pyplot as plt
from pydantic import Field

from genstudy import data, figures, measures, models, outputs, params, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_text, verdict
from genstudy.training import evaluate, fit, make_optimizer

# --- params -----------------------------------------------------------------------------------


class Sharpness(params.Schema):
    eps: params.PositiveFloat = 1e-3           # box half-width relative to |w_i| + 1
    steps: params.PositiveInt = 20             # projected sign-gradient ascent steps
    step_size: Annotated[float, Field(gt=0, le=1)] = 0.25  # per step, fraction of the box half-width


class Params(params.Experiment):
    train_size: params.PositiveInt = 3000
    test_size: params.PositiveInt = 1000
    batch_sizes: Annotated[list[params.PositiveInt], Field(min_length=1)] = [8, 64, 128, 512, 1024]
    epochs: params.PositiveInt = 2000          # the cap when training to target_train_loss
    # Train every model until its training loss (running mean over the epoch) is at most this,
    # so the batch sizes are compared at a matched training loss; null: exactly `epochs` epochs.
    target_train_loss: params.PositiveFloat | None = 0.1
    optimizer: params.Optimizer = "adam"
    lr: params.PositiveFloat = 1e-3
    fused: bool = True                         # one-kernel optimizer step (sgd/adam)
    threads: params.PositiveInt | None = 1     # torch CPU threads; null: torch's default
    sharpness: Sharpness = Sharpness()


# --- run --------------------------------------------------------------------------------------

def run(p: Params, out: Path, models_dir: Path) -> None:
    if p.threads:
        torch.set_num_threads(p.threads)
    device = params.resolve_device(p.device)
    train_all, test_all = data.load(p.dataset)
    train, test = train_all.head(p.train_size).to(device), test_all.head(p.test_size).to(device)
    curves = outputs.Curves()
    rows, sens_rows = [], []
    for bs in p.batch_sizes:
        for seed in p.seeds:
            tag = f"bs{bs}_s{seed}"
            model = models.seeded(seed, models.mlp, [784, 16, 16, 10]).to(device)
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
    curves_df = pd.read_csv(out / "curves.csv")
    if len(curves_df):
        curves_df[["batch_size", "seed"]] = curves_df.run.str.extract(r"bs(\d+)_s(\d+)").astype(int)
    outputs.write_results(out, df, ["batch_size", "seed"])
    outputs.write_table(out / "sensitivity.csv", sens_df)
    ends = df.groupby("batch_size")[["test_acc", "sharpness"]].mean().iloc[[0, -1]]
    outputs.write_json(out / "metrics.json", {  # headline numbers only: what dvc metrics diff shows
        f"{c}_batch{bs}": ends.loc[bs, c] for bs in ends.index for c in ends.columns})
    draw(df, sens_df, curves_df, out / "figures")


# --- figures ----------------------------------------------------------------------------------

def draw(df: pd.DataFrame, sens: pd.DataFrame, curves: pd.DataFrame, out: Path) -> None:
    figures.setup()
    if curves.empty:  # every run diverged in its first epoch: no curve to draw
        return
    long = curves.melt(id_vars=["batch_size", "seed", "epoch"], value_vars=["train_acc", "test_acc"],
                       var_name="set", value_name="accuracy")
    long["set"] = long["set"].map({"train_acc": "train", "test_acc": "test"})
    g = sns.relplot(long, x="epoch", y="accuracy", hue="batch_size", col="set", kind="line",
                    errorbar="sd", palette="viridis", height=3.6, aspect=1.2,
                    hue_norm=plt.matplotlib.colors.LogNorm())
    g.set(xscale="log")  # to a matched loss, batch 8 takes tens of epochs, batch 1024 hundreds
    g.set_axis_labels("epoch (log scale)", "accuracy (mean ± sd over seeds)")
    g.legend.set_title("batch size")
    g.figure.suptitle("MLP 784-16-16-10: accuracy per epoch by batch size", y=1.03)
    figures.save(g.figure, out, "accuracy_curves")

    panels = [("sensitivity_mean", "input sensitivity\n(mean ||d loss/d x||, test)"),
              ("sharpness", "Keskar sharpness (%)"), ("test_acc", "test accuracy"),
              ("gap", "generalization gap\n(train acc - test acc)")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (col, label) in zip(axes.flat, panels):
        sns.pointplot(df, x="batch_size", y=col, errorbar="sd", ax=ax, color="C0", capsize=0.15)
        sns.stripplot(df, x="batch_size", y=col, ax=ax, color="0.4", size=4, alpha=0.6)
        ax.set(xlabel="batch size", ylabel=label)
    fig.suptitle("Flatness and sensitivity vs batch size (mean ± sd over seeds, dots = seeds)", y=1.03)
    fig.tight_layout()
    figures.save(fig, out, "measures_vs_batch_size")

    fig, ax = plt.subplots(figsize=(7, 4))
    sns.boxenplot(sens.assign(sensitivity=sens.sensitivity.clip(lower=1e-8)), x="batch_size",
                  y="sensitivity", ax=ax, log_scale=True, color="C0")
    ax.set(xlabel="batch size", ylabel="per-example ||d loss / d x|| (log scale)",
           title="Input sensitivity on the test subset, all seeds pooled")
    figures.save(fig, out, "sensitivity_distribution")


# --- report -----------------------------------------------------------------------------------

def section(out: Outputs, refs: dict) -> Section:
    ok = out.table()  # the runs that did not diverge
    p = out.params
    rows = []
    for bs, g in ok.groupby("batch_size"):
        ref = {ok.batch_size.min(): "keskar_sharpness_small_batch",
               ok.batch_size.max(): "keskar_sharpness_large_batch"}.get(bs)
        rows += [Row(f"batch {bs}: epochs trained / final training loss",
                     f"{fmt_series(g.epochs, 0)} / {fmt_series(g.train_loss, 3)}"),
                 Row(f"batch {bs}: test accuracy / generalization gap",
                     f"{fmt_series(g.test_acc, 3)} / {fmt_series(g.gap, 3)}"),
                 Row(f"batch {bs}: input sensitivity (mean ‖∂L/∂x‖ over the evaluation set)",
                     fmt_series(g.sensitivity_mean, 3)),
                 Row(f"batch {bs}: Keskar sharpness (eps {p['sharpness']['eps']:g})", fmt_series(g.sharpness, 2),
                     ref_text(refs, "flatness", ref) + " (Keskar's F1 on MNIST)" if ref else "")]
    # Keskar et al.'s claim, read on the notebook's small MLP: the larger the batch, the sharper
    # the minimum and the larger the gap; tested as rank trends over every (batch size, seed).
    parts = [(f"{name} vs batch size", verdicts.judge_trend(stats.spearman(ok.batch_size, ok[col]), +1))
             for name, col in (("sharpness", "sharpness"), ("generalization gap", "gap"),
                               ("input sensitivity", "sensitivity_mean"))]
    target = p.get("target_train_loss")  # absent: a run from before matched-loss training
    if target is None:
        match = (f"Models trained a fixed {p['epochs']} epochs and are not at a matched training loss "
                 f"(final training loss {ok.train_loss.min():.3f} to {ok.train_loss.max():.3f}).")
    else:
        match = (f"Every model trained until its training loss was at most {target:g} (cap {p['epochs']} "
                 f"epochs): {int(ok.reached_target.sum())} of {len(ok)} reached it; final training loss "
                 f"{ok.train_loss.min():.3f} to {ok.train_loss.max():.3f}.")
    return Section(
        "flatness", "E1 Flatness vs generalization and batch size (the notebook's MLP)",
        "Do large batches find sharp minima that generalize worse (Keskar et al. 2017)? The notebook's "
        f"version: an MLP 784-16-16-10 trained with each batch size on {p['train_size']:,} "
        f"{p['dataset']} images (the paper and the notebook used MNIST); for every model we measure the "
        "generalization gap, the input sensitivity and Keskar's epsilon-sharpness (projected ascent, "
        "a lower bound).", rows, verdict(parts, match))
