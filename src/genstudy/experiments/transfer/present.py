"""E4 transfer, presentation: figures and report section from the compute stage's tables."""

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from genstudy import figures, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_text, ref_value, verdict

# --- figures ----------------------------------------------------------------------------------

def draw(outputs: Outputs, refs: dict) -> None:
    fig_dir = outputs.dir / "figures"
    plot_arms(outputs.table("results.csv", diverged=True), fig_dir)
    try:
        curves = outputs.table("curves.csv")
    except pd.errors.EmptyDataError:  # every run diverged in its first epoch: no curve to draw
        return
    plot_curves(curves, outputs.params["transferred"]["frozen_epochs"], fig_dir)


def plot_arms(df: pd.DataFrame, fig_dir: Path) -> None:
    b = df[df.task == "B"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for seed, g in b.groupby("seed"):
        g = g.set_index("arm").loc[["scratch", "transferred"]]
        ax.plot([0, 1], g.test_acc, color="grey", alpha=0.6, marker="o", lw=1)
    sns.pointplot(data=b, x="arm", y="test_acc", order=["scratch", "transferred"], errorbar="sd",
                  color="C3", capsize=0.1, linestyle="none", ax=ax)
    ax.set(xlabel="", ylabel="task-B test accuracy",
           title=f"E4: from scratch vs transferred\n(grey: one seed each, n={b.seed.nunique()}; "
                 "red: mean ± sd)")
    figures.save(fig, fig_dir, "arms")


def plot_curves(curves: pd.DataFrame, frozen_epochs: int, fig_dir: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    b = curves[curves.arm != "model_a"]
    sns.lineplot(data=b, x="epoch", y="test_acc", hue="arm", units="seed", estimator=None,
                 lw=0.8, alpha=0.35, legend=False, ax=axes[0])
    sns.lineplot(data=b, x="epoch", y="test_acc", hue="arm", errorbar=None, lw=2.5, ax=axes[0])
    if frozen_epochs:
        axes[0].axvline(frozen_epochs + 0.5, ls="--", color="grey")
        axes[0].text(frozen_epochs + 0.6, axes[0].get_ylim()[0], " unfrozen", color="grey", va="bottom")
    axes[0].set(xlabel="epoch", ylabel="task-B test accuracy", title="task B (thin: one seed each; thick: mean)")
    a = curves[curves.arm == "model_a"].melt(id_vars=["epoch", "seed"], value_vars=["train_acc", "val_acc"],
                                             var_name="curve", value_name="accuracy")
    a["curve"] = a["curve"].map({"train_acc": "train (running)", "val_acc": "validation"})
    sns.lineplot(data=a, x="epoch", y="accuracy", hue="curve", errorbar="sd", ax=axes[1])
    axes[1].set(xlabel="epoch", ylabel="task-A accuracy", title="model A on task A (band: ± sd over seeds)")
    figures.save(fig, fig_dir, "learning_curves")


# --- report -----------------------------------------------------------------------------------

def section(out: Outputs, refs: dict) -> Section:
    df = out.table()
    b = df[df.task == "B"]
    acc = b.pivot(index="seed", columns="arm", values="test_acc").reindex(
        columns=["scratch", "transferred"])  # per seed: the same B subset
    gain = stats.paired(acc["transferred"], acc["scratch"])
    nb = lambda key: ref_value(refs, "transfer", key)  # noqa: E731
    train_acc = (lambda arm: fmt_series(b[b.arm == arm].train_acc)) if "train_acc" in b else (lambda arm: "n/a")
    rows = [Row("task B test accuracy, from scratch", fmt_series(acc["scratch"]),
                ref_text(refs, "transfer", "scratch_test_acc")),
            Row("task B test accuracy, transferred", fmt_series(acc["transferred"]),
                ref_text(refs, "transfer", "transferred_test_acc")),
            Row("gain of transfer, transferred − scratch", gain.text("paired by seed"),
                f"{nb('transferred_test_acc') - nb('scratch_test_acc'):+.4f} (one run)"),
            Row("seeds where transfer wins", f"{int((acc['transferred'] > acc['scratch']).sum())} of {len(acc)}"),
            Row("task B train accuracy after training, from scratch / transferred",
                f"{train_acc('scratch')} / {train_acc('transferred')}"),
            Row("model A, task A test accuracy", fmt_series(df[df.arm == "model_a"].test_acc),
                ref_text(refs, "transfer", "model_a_test_acc"))]
    p = out.params
    t = p["transferred"]
    note = (f"Both task-B arms train a fixed number of epochs, as the notebook: from scratch "
            f"{p['model_b']['epochs']}, transferred {t['frozen_epochs']} frozen + {t['unfrozen_epochs']}; "
            "their train accuracy is shown above. Model A is trained once per seed and reused by that seed's "
            "transferred model.")
    return Section(
        "transfer", "E4 Transfer learning",
        f"Does reusing the lower layers of a model trained on the other 8 classes help learn class "
        f"{p['b_classes'][0]} vs {p['b_classes'][1]} (coat vs sandal) from {p['b_train_size']} images? "
        f"The notebook's single run said yes ({ref_text(refs, 'transfer', 'scratch_test_acc')} -> "
        f"{ref_text(refs, 'transfer', 'transferred_test_acc')}); we run {len(acc)} seeds to see the spread.",
        rows, verdict(verdicts.family([("transfer helps (transferred − scratch)",
                                        verdicts.effect(gain, +1, nb("min_gain")))]), note))
