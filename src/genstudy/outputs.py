"""Writing a stage's outputs: atomically, and in the shapes DVC reads.

Every file is written under a temporary name in its own directory and then
renamed, so an interrupted stage never leaves a half-written output that
looks valid.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch

# Where every stage writes: reports/<stage>/ (tables, metrics, figures, run.json; in git)
# and models/<stage>/ (trained models; DVC-cached). dvc.yaml declares the same paths.
REPORTS = Path("reports")
MODELS = Path("models")


def stage_dirs(stage: str) -> tuple[Path, Path]:
    """``(reports/<stage>, models/<stage>)``: the one place a stage's output paths come from."""
    return REPORTS / stage, MODELS / stage


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def finite_or_none(obj):
    """``obj`` with every NaN/inf float replaced by None (JSON has no NaN; a missing value is null)."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (list, dict)):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path | str, obj: Any) -> None:
    """Strict JSON (NaN and inf become null), written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(finite_or_none(obj), indent=2, allow_nan=False) + "\n")


def write_table(path: Path | str, df: pd.DataFrame) -> None:
    """A tidy table as CSV (what ``dvc plots`` and pandas both read)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def save_model(path: Path | str, module: torch.nn.Module, **meta) -> None:
    with atomic_path(path) as tmp:
        torch.save({"state_dict": module.state_dict(), **meta}, tmp)


def save_figure(path: Path | str, fig) -> None:
    """``fig`` as PNG/SVG (by the suffix of ``path``); the figure stays open."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip("."), dpi=120, bbox_inches="tight")


class Curves:
    """Every run's per-epoch metrics as one long table, ``run`` a column: the stage's curves.csv,
    which dvc.yaml's top-level curve plots draw one line per run. The epoch's wall time is left
    out, so two runs of the same params write the same bytes."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def callback(self, run: str):
        """A :func:`genstudy.training.fit` callback that records run ``run``'s epochs."""
        def record(epoch: int, metrics: dict[str, float]) -> None:
            self.rows.append({"run": run, "epoch": epoch,
                              **{k: v for k, v in metrics.items() if k not in ("epoch", "time")}})
        return record

    def write(self, path: Path | str) -> None:
        write_table(path, pd.DataFrame(self.rows, columns=list(dict.fromkeys(
            ["run", "epoch", *(k for r in self.rows for k in r)]))))
