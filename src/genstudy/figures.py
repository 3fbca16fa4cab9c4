"""One figure style for the whole study (seaborn), and saving figures as stage outputs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from .outputs import save_figure  # noqa: E402


def setup() -> None:
    """The study's style: call once before drawing."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 120, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def save(fig, directory: Path | str, name: str, svg: bool = False) -> list[Path]:
    """Save ``fig`` as ``<directory>/<name>.png`` (and .svg) atomically, close it, return the paths."""
    paths = [Path(directory) / f"{name}.png"] + ([Path(directory) / f"{name}.svg"] if svg else [])
    for p in paths:
        save_figure(p, fig)
    plt.close(fig)
    return paths
