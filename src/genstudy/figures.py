"""One figure style for the whole study (seaborn), saving figures as stage outputs, and the
lr x batch heatmap that E5 and E6 share."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .outputs import save_figure  # noqa: E402


def setup() -> None:
    """The study's style: call once before drawing."""
    # font_scale 1.15: the report shows figures at most ~1,070 px wide; text must stay legible
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=1.15)
    plt.rcParams.update({"figure.dpi": 120, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def save(fig, directory: Path | str, name: str) -> Path:
    """Save ``fig`` as ``<directory>/<name>.png`` atomically, close it, return the path."""
    path = Path(directory) / f"{name}.png"
    save_figure(path, fig)
    plt.close(fig)
    return path


def lr_batch_heatmap(ax, df: pd.DataFrame, value: str, title: str, fmt: str = ".2f",
                     cmap="viridis", mark: str | None = None) -> None:
    """Mean of ``value`` over seeds on lr (rows) x batch (columns).

    Cells where a seed diverged are hatched red; cells without a value say 'NaN'; cells where
    some seed's boolean column ``mark`` is False get a black frame (e.g. did not fit).
    """
    g = df.groupby(["lr", "batch"])
    mean = g[value].mean().unstack("batch").sort_index(ascending=False)
    # nothing to colour when every run diverged: a fixed colour range spares seaborn's warning
    empty = {"vmin": 0.0, "vmax": 1.0} if mean.isna().all().all() else {}
    div = g["diverged"].mean().unstack("batch").reindex_like(mean)
    sns.heatmap(mean, annot=True, fmt=fmt, cmap=cmap, ax=ax, cbar_kws={"label": title},
                annot_kws={"fontsize": 8}, **empty)
    for i, lr in enumerate(mean.index):
        for j, b in enumerate(mean.columns):
            if div.loc[lr, b] > 0:  # some or all seeds diverged
                ax.add_patch(Rectangle((j, i), 1, 1, fill=False, hatch="///", edgecolor="red", lw=0))
            if mark is not None and not df[(df.lr == lr) & (df.batch == b)][mark].all():
                ax.add_patch(Rectangle((j + 0.04, i + 0.04), 0.92, 0.92, fill=False, edgecolor="black", lw=2))
            if not np.isfinite(mean.loc[lr, b]):
                ax.text(j + 0.5, i + 0.5, "NaN", ha="center", va="center", color="red",
                        fontsize=8, fontweight="bold")
    ax.set_xlabel("batch size (examples)")
    ax.set_ylabel("learning rate")
    ax.set_yticklabels([f"{v:g}" for v in mean.index], rotation=0)
