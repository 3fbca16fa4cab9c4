"""E6 margins, presentation: figures and report section from the compute stage's tables."""

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from genstudy import figures, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_text, ref_value, verdict

# --- figures ----------------------------------------------------------------------------------

def draw(outputs: Outputs, refs: dict) -> None:
    # every model, the diverged ones too: their cells are hatched, their count said
    margin_figures(outputs.table(diverged=True), outputs.dir / "figures")


def margin_figures(df: pd.DataFrame, out: Path) -> None:
    """Margin vs lr and batch (heatmap + lines), and margin vs test accuracy."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    figures.lr_batch_heatmap(axes[0], df, "margin_mean", "mean DeepFool ||r||_2", cmap="magma", mark="fitted")
    axes[0].set_title("mean DeepFool margin ||r||_2\n(black frame: some seed did not fit its training set)")
    if df["margin_mean"].isna().any():
        axes[0].text(0, -0.18, "NaN: DeepFool flipped no example (e.g. a collapsed, constant model)",
                     transform=axes[0].transAxes, fontsize=8, color="red")
    order = [str(b) for b in sorted(df["batch"].unique())]
    fit = df[df["fitted"]]
    if len(fit):
        sns.lineplot(fit.assign(batch=fit["batch"].astype(str)), x="lr", y="margin_mean", hue="batch",
                     hue_order=order, marker="o", errorbar="sd",
                     palette=sns.color_palette("viridis", len(order)), ax=axes[1])
        axes[1].legend(title="batch size")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("learning rate")
    axes[1].set_ylabel("mean DeepFool margin ||r||_2")
    axes[1].set_title(f"margin vs learning rate: the {len(fit)} fitted models\n(one line per batch size, ± sd over seeds)")
    figures.save(fig, out, "margin_vs_lr_batch")

    # margin vs test accuracy: the models that fit their training set (E6's premise), and all
    d = df.assign(lr=df["lr"].map(lambda v: f"{v:g}"))
    fitted = d[d["fitted"] & d["margin_mean"].notna()]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    for ax, part, title in ((axes[0], fitted, f"{len(fitted)} models that fit the training set"),
                            (axes[1], d, f"all {len(d)} models")):
        sns.scatterplot(part, x="margin_mean", y="test_acc", hue="lr", style="batch", s=70, ax=ax,
                        hue_order=sorted(d["lr"].unique(), key=float))
        ax.set_xlabel("mean DeepFool margin ||r||_2 on training examples")
        ax.set_ylabel("test accuracy")
        if ax.get_legend_handles_labels()[0]:  # nothing to name when no model has a margin
            ax.legend(title="lr / batch", fontsize=8, ncols=2)
        ax.set_title(f"margin vs test accuracy: {title}")
    if len(fitted) > 2:
        axes[0].text(0.02, 0.02, f"Pearson r = {fitted['margin_mean'].corr(fitted['test_acc']):.2f}",
                     transform=axes[0].transAxes, fontsize=9)
    misfit = d[~d["fitted"] & d["margin_mean"].notna()]
    axes[1].scatter(misfit["margin_mean"], misfit["test_acc"], s=170, facecolors="none",
                    edgecolors="red", label="did not fit (train acc. below the threshold)")
    axes[1].legend(title="lr / batch", fontsize=8, ncols=2)
    if d["margin_mean"].isna().any():
        axes[1].text(0.02, 0.02, f"{int(d['margin_mean'].isna().sum())} model(s) without a margin "
                     "(diverged or nothing flipped) not drawn", transform=axes[1].transAxes,
                     fontsize=8, color="red")
    figures.save(fig, out, "margin_vs_test_acc")


# --- report -----------------------------------------------------------------------------------

def section(out: Outputs, refs: dict) -> Section:
    df = out.table()
    threshold = out.params["fitted_train_acc"]
    # E6's premise is models that fit their training set (the stage marks them); the margins of
    # one that did not measure a different thing, so every range and test below leaves them out.
    fitted = df[df.fitted & df.margin_mean.notna()]
    left_out = df[~df.index.isin(fitted.index)].groupby(["lr", "batch"]).train_acc.agg(["size", "mean"])
    note = ("Left out, not fitting the training set: " + ", ".join(
        f"lr {lr:g} batch {b} ({int(r['size'])} model(s), train accuracy {r['mean']:.2f})"
        for (lr, b), r in left_out.iterrows()) + ".") if len(left_out) else ""
    ref = lambda key: ref_text(refs, "margins", key)  # noqa: E731
    rows = [Row(f"models at ≥ {threshold:g} train accuracy (all rows below are over these)",
                f"{len(fitted)} of {len(df)}")]
    if fitted.empty:
        return Section("margins", "E6 DeepFool margins", QUESTION, rows, verdict(
            [], f"No model reached {threshold:g} train accuracy, the premise of the comparison "
                "(train longer: margins.epochs)."))
    per_cfg = fitted.groupby(["lr", "batch"])[["margin_mean", "rho"]].mean()  # as the notebook's one run each
    over = f"range over the {len(per_cfg)} fitted (lr, batch), mean of {fitted.seed.nunique()} seed(s)"
    by_lr = fitted.groupby("lr")[["margin_mean", "test_acc"]].mean()
    top = by_lr.margin_mean.idxmax()
    # each lr at its best fitted batch size (by the mean over seeds): the notebook compared lrs by
    # their best runs; choosing each lr's best cell biases every lr alike
    cell_acc = fitted.groupby(["lr", "batch"]).test_acc.mean()
    best_batch = {lr: cell_acc[lr].idxmax() for lr in by_lr.index}
    acc_at = lambda lr: fitted[(fitted.lr == lr) & (fitted.batch == best_batch[lr])].set_index("seed").test_acc  # noqa: E731
    rival = max((lr for lr in by_lr.index if lr != top), key=lambda lr: cell_acc[lr].max(), default=None)
    nb_lr = refs["margins"]["margin_mean_lr0.05_low"]["lr"]  # the notebook's best lr
    rows += [Row(f"mean DeepFool margin ‖r‖, {over}",
                 f"{per_cfg.margin_mean.min():.3f} – {per_cfg.margin_mean.max():.3f}",
                 f"{ref('margin_mean_min')} – {ref('margin_mean_max')}"),
             Row(f"rho = mean(‖r‖/‖x‖), {over}", f"{per_cfg.rho.min():.3f} – {per_cfg.rho.max():.3f}",
                 f"paper (MNIST): {ref('paper_rho_fc500_150_10_mnist')} FC500-150-10, "
                 f"{ref('paper_rho_lenet_mnist')} LeNet"),
             Row("share of examples flipped", fmt_series(fitted.flipped_share, 3)),
             Row("learning rate with the largest mean margin (its margins over batch sizes)",
                 f"{top:g} ({per_cfg.loc[top].margin_mean.min():.2f}–{per_cfg.loc[top].margin_mean.max():.2f})",
                 f"{nb_lr:g} ({ref('margin_mean_lr0.05_low')}–{ref('margin_mean_max')})"),
             Row(f"test accuracy at lr {top:g}, its best fitted batch {best_batch[top]}", fmt_series(acc_at(top), 3),
                 f"{ref('test_acc_lr0.05_low')} (lr {nb_lr:g})")]
    claims = [("margin vs test accuracy over the fitted models (mean per-seed Spearman rho)",
               verdicts.effect(stats.trend_over_seeds(fitted, "margin_mean", "test_acc"), +1,
                               ref_value(refs, "margins", "min_rho"), digits=2))]
    if rival is not None:
        diff = stats.paired(acc_at(top), acc_at(rival))  # the seeds pair: same init and data order
        rows.append(Row(f"test accuracy, lr {top:g} at batch {best_batch[top]} − lr {rival:g} at batch "
                        f"{best_batch[rival]} (each lr's best fitted cell; lr {rival:g} has the best "
                        "cell among the other lrs)", diff.text("paired by seed").partition(": ")[2]))
        claims.append((f"the largest-margin lr {top:g} is the most accurate (its best cell − lr {rival:g}'s)",
                       verdicts.effect(diff, +1, ref_value(refs, "margins", "min_effect"))))
    return Section("margins", "E6 DeepFool margins", QUESTION, rows, verdict(verdicts.family(claims), note))


QUESTION = ("Do the models that generalize better also sit further from their decision boundaries? "
            "DeepFool finds the smallest L2 perturbation that flips each training example, for MLPs "
            "trained to ~100 % train accuracy with different lr and batch size.")
