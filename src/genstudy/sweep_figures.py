"""Figures of E5 (lr x batch sweeps) and E6 (DeepFool margins), drawn from their tidy tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Rectangle

from . import figures

METRIC_LABEL = {"final_train_acc": "train accuracy", "final_test_acc": "test accuracy"}


def _heatmap(ax, df: pd.DataFrame, value: str, title: str, fmt: str = ".2f", cmap="viridis") -> None:
    """Mean of ``value`` over seeds on lr (rows) x batch (columns).

    Cells where a seed diverged are hatched red; cells without a value say 'NaN'.
    """
    g = df.groupby(["lr", "batch"])
    mean = g[value].mean().unstack("batch").sort_index(ascending=False)
    div = g["diverged"].mean().unstack("batch").reindex_like(mean)
    sns.heatmap(mean, annot=True, fmt=fmt, cmap=cmap, ax=ax, cbar_kws={"label": title},
                annot_kws={"fontsize": 8})
    for i, lr in enumerate(mean.index):
        for j, b in enumerate(mean.columns):
            if div.loc[lr, b] > 0:  # some or all seeds diverged
                ax.add_patch(Rectangle((j, i), 1, 1, fill=False, hatch="///", edgecolor="red", lw=0))
            if not np.isfinite(mean.loc[lr, b]):
                ax.text(j + 0.5, i + 0.5, "NaN", ha="center", va="center", color="red",
                        fontsize=8, fontweight="bold")
    ax.set_xlabel("batch size (examples)")
    ax.set_ylabel("learning rate")
    ax.set_yticklabels([f"{v:g}" for v in mean.index], rotation=0)


def sweep_heatmaps(grid: pd.DataFrame, out: Path) -> None:
    epochs = int(grid["epochs"].iloc[0])
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    for ax, value in zip(axes, ("final_train_acc", "final_test_acc")):
        _heatmap(ax, grid, value, METRIC_LABEL[value])
        ax.set_title(f"final {METRIC_LABEL[value]} after {epochs} epochs")
    fig.text(0.5, -0.03, f"mean over {grid['seed'].nunique()} seed(s); hatched red: a seed's loss "
             "turned NaN/inf (diverged); 'NaN': every seed diverged", ha="center", fontsize=9)
    figures.save(fig, out, "heatmap_accuracy")


def noise_scale_lines(grid: pd.DataFrame, out: Path) -> None:
    """Accuracy vs lr / batch, one line per batch size (mean and sd over seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), sharey=True)
    order = [str(b) for b in sorted(grid["batch"].unique())]
    d = grid.assign(batch=grid["batch"].astype(str))
    for ax, value in zip(axes, ("final_train_acc", "final_test_acc")):
        sns.lineplot(d, x="noise_scale", y=value, hue="batch", hue_order=order, marker="o",
                     errorbar="sd", palette=sns.color_palette("viridis", len(order)), ax=ax)
        ax.set_xscale("log")
        ax.set_xlabel("SGD noise scale: learning rate / batch size (per example)")
        ax.set_ylabel(METRIC_LABEL[value])
        ax.set_title(f"{METRIC_LABEL[value]} vs noise scale ({int(grid['epochs'].iloc[0])} epochs)")
        ax.legend(title="batch size", fontsize=8, ncols=2)
    figures.save(fig, out, "accuracy_vs_noise_scale")


def sweeps_1d(df: pd.DataFrame, out: Path) -> None:
    """The 1-D sweeps: accuracy vs lr (fixed batch) and vs batch (fixed lr)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    for ax, (sweep, x, fixed) in zip(axes, (("lr", "lr", "batch"), ("batch", "batch", "lr"))):
        d = df[df["sweep"] == sweep]
        if d.empty:
            ax.set_visible(False)
            continue
        long = d.melt(id_vars=[x, "seed"], value_vars=["final_train_acc", "final_test_acc"],
                      var_name="split", value_name="accuracy")
        long["split"] = long["split"].map(METRIC_LABEL)
        sns.lineplot(long, x=x, y="accuracy", hue="split", marker="o", errorbar="sd", ax=ax)
        ax.set_xscale("log", base=2 if x == "batch" else 10)
        if x == "batch":
            ax.set_xticks(sorted(d["batch"].unique()), [str(b) for b in sorted(d["batch"].unique())])
        ax.set_xlabel("learning rate" if x == "lr" else "batch size (examples)")
        ax.set_title(f"{x} sweep at {fixed} {d[fixed].iloc[0]:g}, {int(d['epochs'].iloc[0])} epochs")
        n_div = int(d["diverged"].sum())
        if n_div:
            ax.text(0.02, 0.02, f"{n_div} run(s) diverged (NaN, not drawn)", transform=ax.transAxes,
                    color="red", fontsize=8)
    figures.save(fig, out, "sweeps_1d")


def margin_figures(df: pd.DataFrame, out: Path) -> None:
    """Margin vs lr and batch (heatmap + lines), and margin vs test accuracy."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    _heatmap(axes[0], df, "margin_mean", "mean DeepFool ||r||_2", cmap="magma")
    axes[0].set_title("mean DeepFool margin ||r||_2 (pixels in [0,1])")
    if df["margin_mean"].isna().any():
        axes[0].text(0, -0.18, "NaN: DeepFool flipped no example (e.g. a collapsed, constant model)",
                     transform=axes[0].transAxes, fontsize=8, color="red")
    order = [str(b) for b in sorted(df["batch"].unique())]
    sns.lineplot(df.assign(batch=df["batch"].astype(str)), x="lr", y="margin_mean", hue="batch",
                 hue_order=order, marker="o", errorbar="sd",
                 palette=sns.color_palette("viridis", len(order)), ax=axes[1])
    axes[1].set_xscale("log")
    axes[1].set_xlabel("learning rate")
    axes[1].set_ylabel("mean DeepFool margin ||r||_2")
    axes[1].set_title("margin vs learning rate, one line per batch size")
    axes[1].legend(title="batch size")
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
