"""E2 gradient loss, presentation: figure and report section from the compute stage's tables."""

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt

from genstudy import figures, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_text, ref_value, verdict

# What this section reads besides its own stage's outputs (dvc.yaml: present-gradient_loss's deps).
READS = ("reports/baselines/results.csv", "reports/baselines/timing.csv")

# --- figures ----------------------------------------------------------------------------------

def draw(outputs: Outputs, refs: dict) -> None:
    df, out = outputs.table("results.csv", diverged=True), outputs.dir / "figures"
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sns.lineplot(df, x="sigma", y="test_acc", hue="arm", style="arm", markers=True, dashes=False,
                 errorbar="sd", err_style="band", ax=ax)
    sns.scatterplot(df, x="sigma", y="test_acc", hue="arm", ax=ax, legend=False, alpha=0.35, s=18)
    ax.set(xlabel="σ of additive Gaussian noise on inputs in [0, 1]",
           ylabel="test accuracy (mean ± sd over seeds)",
           title="E2 convnet: robustness to input noise")
    ax.legend(title="training loss")
    figures.save(fig, out, "accuracy_vs_sigma")


# --- report -----------------------------------------------------------------------------------

ARMS = {"gradient_loss": "gradient loss", "cross_entropy": "cross-entropy baseline"}


def section(out: Outputs, refs: dict) -> Section:
    df = out.table()
    acc = df.pivot_table(index=["sigma", "seed"], columns="arm", values="test_acc").reindex(
        columns=list(ARMS))  # seeds pair
    ref = lambda key: ref_value(refs, "gradient_loss", key)  # noqa: E731
    sigma_nb = ref("notebook_sigma")
    rows, parts = [], []
    for sigma, g in acc.groupby(level="sigma"):
        g = g.droplevel("sigma")
        diff = stats.paired(g["gradient_loss"], g["cross_entropy"])
        nb = lambda arm: ref_text(refs, "gradient_loss", f"{arm}_test_acc_" + (  # noqa: E731
            "clean" if sigma == 0 else f"sigma{sigma:g}"))
        rows += [Row(f"σ {sigma:g}: test accuracy, {ARMS['gradient_loss']} / {ARMS['cross_entropy']}",
                     f"{fmt_series(g['gradient_loss'])} / {fmt_series(g['cross_entropy'])}",
                     " / ".join(filter(None, (nb("gradient"), nb("baseline"))))),
                 Row(f"σ {sigma:g}: difference, gradient loss − baseline", diff.text("paired by seed"))]
        if sigma == 0:
            parts.append(("similar clean accuracy (gradient loss − baseline)",
                          verdicts.equal(diff, ref("clean_margin"))))
        elif np.isclose(sigma, sigma_nb):
            parts.append((f"more accurate under noise σ {sigma:g} (gradient loss − baseline)",
                          verdicts.effect(diff, +1, ref("min_effect"))))
    # training alone, per epoch: this stage's gradient arm over the baselines stage's (same seeds)
    grad = out.table("timing.csv").set_index("seed").train_time_per_epoch if (out.dir / "timing.csv").is_file() \
        else pd.Series(dtype=float)
    base_dir = Outputs(out.dir.parent, "baselines")
    base = pd.Series(dtype=float)
    if (base_dir.dir / "timing.csv").is_file():
        bt = base_dir.table("timing.csv").merge(base_dir.table(), on=["model", "seed"]).query("model == 'convnet'")
        base = (bt.train_time / bt.epochs).set_axis(bt.seed)
    ratio = (grad / base).dropna()
    rows.append(Row("training time per epoch, gradient loss / cross-entropy (training alone, "
                    "measured in two stages; benchmarks/bench_gradient_loss.py compares them in one run)",
                    fmt_series(ratio, 2) if len(ratio) else "n/a (this run did not time training apart "
                    "from evaluation)", ref_text(refs, "gradient_loss", "cost_ratio_per_epoch")))
    note = "" if parts else f"The run has no σ {sigma_nb:g} (the notebook's) to test robustness at."
    return Section(
        "gradient_loss", "E2 The gradient loss (double backpropagation) and robustness to noise",
        "Does training on the gradient of the loss with respect to inputs and targets give a model "
        "as accurate as cross-entropy but more robust to Gaussian noise on its input, at about "
        "twice the cost?", rows, verdict(verdicts.family(parts), note))
