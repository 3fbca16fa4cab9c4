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
    order = [a for a in ("scratch", "transferred", "scratch_fit") if a in set(b.arm)]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for seed, g in b.groupby("seed"):
        g = g.set_index("arm").reindex(order)
        ax.plot(range(len(order)), g.test_acc, color="grey", alpha=0.6, marker="o", lw=1)
    sns.pointplot(data=b, x="arm", y="test_acc", order=order, errorbar="sd",
                  color="C3", capsize=0.1, linestyle="none", ax=ax)
    ax.set_xticks(range(len(order)), [{"scratch": "from scratch\n(fixed epochs)", "transferred": "transferred",
                                       "scratch_fit": "from scratch\n(to the same fit)"}[a] for a in order])
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
    arms = ["scratch", "transferred", "scratch_fit"]
    acc = b.pivot(index="seed", columns="arm", values="test_acc").reindex(columns=arms)  # per seed: the same B subset
    train = b.pivot(index="seed", columns="arm", values="train_acc").reindex(columns=arms)
    gain = stats.paired(acc["transferred"], acc["scratch"])
    fair = stats.paired(acc["transferred"], acc["scratch_fit"])
    nb = lambda key: ref_value(refs, "transfer", key)  # noqa: E731
    epochs = b[b.arm == "scratch_fit"].epochs
    p = out.params
    t = p["transferred"]
    fixed = p["model_b"]["epochs"]
    rows = [Row(f"task B test accuracy, from scratch (the notebook's {fixed} epochs)", fmt_series(acc["scratch"]),
                ref_text(refs, "transfer", "scratch_test_acc")),
            Row("task B test accuracy, transferred", fmt_series(acc["transferred"]),
                ref_text(refs, "transfer", "transferred_test_acc")),
            Row("task B test accuracy, from scratch trained to the transferred model's train accuracy "
                "(the fair control)", fmt_series(acc["scratch_fit"])),
            Row(f"task B train accuracy: from scratch ({fixed} epochs) / transferred / fair control",
                " / ".join(fmt_series(train[a]) for a in arms)),
            Row("fair control: epochs to the transferred model's train accuracy (cap "
                f"{p['fair_control']['max_epochs']})", fmt_series(epochs, 0)),
            Row("gain of transfer over the fair control (transferred − fair control)", fair.text("paired by seed")),
            Row(f"gain of transfer, the notebook's protocol (transferred − scratch at {fixed} epochs)",
                gain.text("paired by seed"),
                f"{nb('transferred_test_acc') - nb('scratch_test_acc'):+.4f} (one run)"),
            Row(f"seeds where transfer wins: over scratch ({fixed} epochs) / over the fair control",
                f"{int((acc['transferred'] > acc['scratch']).sum())} of {len(acc)} / "
                f"{int((acc['transferred'] > acc['scratch_fit']).sum())} of {acc['scratch_fit'].notna().sum()}"),
            Row("model A, task A test accuracy", fmt_series(df[df.arm == "model_a"].test_acc),
                ref_text(refs, "transfer", "model_a_test_acc"))]
    note = (f"The verdict compares arms at the same fit: the transferred model ({t['frozen_epochs']} frozen + "
            f"{t['unfrozen_epochs']} epochs) against model B from scratch trained on until its train accuracy "
            "reached the transferred model's. The notebook's protocol, both arms a fixed number of epochs "
            f"(from scratch {p['model_b']['epochs']}), is the second gain above: there the scratch arm has not "
            "fitted its images, so that gain also measures how fast each arm learns. Model A is trained "
            "once per seed and reused by that seed's transferred model.")
    claims = [("transfer helps at the same fit (transferred − fair control)", verdicts.effect(fair, +1, nb("min_gain")))]
    return Section(
        "transfer", "E4 Transfer learning",
        f"Does reusing the lower layers of a model trained on the other 8 classes help learn class "
        f"{p['b_classes'][0]} vs {p['b_classes'][1]} (coat vs sandal) from {p['b_train_size']} images? "
        f"The notebook's single run said yes ({ref_text(refs, 'transfer', 'scratch_test_acc')} -> "
        f"{ref_text(refs, 'transfer', 'transferred_test_acc')}); we run {len(acc)} seeds to see the spread, "
        "and compare with a from-scratch model that fits its images as well.",
        rows, verdict(verdicts.family(claims), note))
