"""E1 flatness, presentation: figures and report section from the compute stage's tables."""

import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt

from genstudy import figures, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_value, verdict

# --- figures ----------------------------------------------------------------------------------

def draw(outputs: Outputs, refs: dict) -> None:
    df, sens = outputs.table(diverged=True), outputs.table("sensitivity.csv")
    curves, out = outputs.table("curves.csv"), outputs.dir / "figures"
    if curves.empty:  # every run diverged in its first epoch: no curve to draw
        return
    curves[["batch_size", "seed"]] = curves.run.str.extract(r"bs(\d+)_s(\d+)").astype(int)
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

MEASURES = (("sharpness", "sharpness"), ("generalization gap", "gap"), ("input sensitivity", "sensitivity_mean"))


def _extreme_level(df: pd.DataFrame, x: str, y: str):
    """The level of ``x`` whose mean ``y`` lies farthest from the median of the level means: the one
    a trend may rest on alone."""
    means = df.groupby(x)[y].mean()
    return (means - means.median()).abs().idxmax()


def section(out: Outputs, refs: dict) -> Section:
    ok = out.table()  # the runs that did not diverge
    p = out.params
    min_rho = ref_value(refs, "flatness", "min_rho")
    rows = []
    for bs, g in ok.groupby("batch_size"):
        rows += [Row(f"batch {bs}: epochs trained / final training loss",
                     f"{fmt_series(g.epochs, 0)} / {fmt_series(g.train_loss, 3)}"),
                 Row(f"batch {bs}: test accuracy / generalization gap",
                     f"{fmt_series(g.test_acc, 3)} / {fmt_series(g.gap, 3)}"),
                 Row(f"batch {bs}: input sensitivity (mean ‖∂L/∂x‖ over the evaluation set)",
                     fmt_series(g.sensitivity_mean, 3)),
                 Row(f"batch {bs}: Keskar sharpness (eps {p['sharpness']['eps']:g})", fmt_series(g.sharpness, 2))]
    # Keskar et al.'s claim, read on the notebook's small MLP: the larger the batch, the sharper
    # the minimum and the larger the gap. Tested at the unit of replication: one rank correlation
    # per seed over the batch sizes, then a t over the seeds. Two other readings as rows: on the
    # batch-size means, and without the level the trend may rest on alone.
    claims = []
    for name, col in MEASURES:
        claims.append((f"{name} vs batch size (mean per-seed Spearman rho)",
                       verdicts.effect(stats.trend_over_seeds(ok, "batch_size", col), +1, min_rho, digits=2)))
        if ok.batch_size.nunique() < 4:
            continue
        means = ok.groupby("batch_size")[col].mean()
        drop = _extreme_level(ok, "batch_size", col)
        rows += [Row(f"{name} vs batch size, Spearman rho over the {len(means)} batch-size means",
                     stats.spearman(means.index, means.values).text("rho", unit="means").partition(": ")[2]),
                 Row(f"{name} vs batch size without batch {drop} (its most extreme level): mean per-seed rho",
                     stats.trend_over_seeds(ok[ok.batch_size != drop], "batch_size", col).text("rho", 2)
                     .partition(": ")[2])]
    target = p.get("target_train_loss")  # absent: a run from before matched-loss training
    if target is None:
        match = (f"Models trained a fixed {p['epochs']} epochs and are not at a matched training loss "
                 f"(final training loss {ok.train_loss.min():.3f} to {ok.train_loss.max():.3f}).")
    else:
        match = (f"Every model trained until its training loss was at most {target:g} (cap {p['epochs']} "
                 f"epochs): {int(ok.reached_target.sum())} of {len(ok)} reached it; final training loss "
                 f"{ok.train_loss.min():.3f} to {ok.train_loss.max():.3f}.")
    match += (" Keskar et al.'s own numbers are for their network F1 (1.5M parameters, on MNIST) and "
              "stand beside E1b, not beside this 13k-parameter MLP.")
    return Section(
        "flatness", "E1 Flatness vs generalization and batch size (the notebook's MLP)",
        "Do large batches find sharp minima that generalize worse (Keskar et al. 2017)? The notebook's "
        f"version: an MLP 784-16-16-10 trained with each batch size on {p['train_size']:,} "
        f"{p['dataset']} images (the paper and the notebook used MNIST); for every model we measure the "
        "generalization gap, the input sensitivity and Keskar's epsilon-sharpness (projected ascent, "
        "a lower bound).", rows, verdict(verdicts.family(claims), match))
