"""What an experiment's report section is made of, and how it reads a stage's outputs.

Each experiment module builds its :class:`Section` (question, table rows of our
numbers beside the notebook's, verdict) from its stage's outputs
(:class:`Outputs`) and ``references.yaml``; :mod:`genstudy.render` renders the
sections as the report. Nothing here recomputes a result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Row:
    """One line of an experiment's table: our number beside what the notebook reported."""
    quantity: str
    ours: str
    reported: str = ""


@dataclass
class Section:
    stage: str
    title: str
    question: str
    rows: list[Row]
    verdict: str
    figures: list[Path] = field(default_factory=list)  # relative to the reports directory
    params: dict = field(default_factory=dict)
    wall_time_s: float | None = None
    notes: list[str] = field(default_factory=list)


def fmt(mean: float, std: float | None = None, n: int | None = None, digits: int = 4) -> str:
    """``mean ± std (n=...)``, or just the number."""
    if mean is None or pd.isna(mean):
        return "n/a"
    s = f"{mean:.{digits}f}"
    if std is not None and n is not None and n > 1:
        s += f" ± {std:.{digits}f}"
    if n is not None:
        s += f" (n={n})"
    return s


def fmt_series(values: pd.Series, digits: int = 4) -> str:
    v = values.dropna()
    return fmt(v.mean(), v.std(ddof=1) if len(v) > 1 else 0.0, len(v), digits) if len(v) else "n/a"


# --- reading what the stages wrote -------------------------------------------------------------

class Outputs:
    """Access to one stage's outputs under ``reports/<stage>/``."""

    def __init__(self, reports: Path, stage: str):
        self.dir = reports / stage
        self.stage = stage

    def table(self, name: str = "results.csv") -> pd.DataFrame:
        return pd.read_csv(self.dir / name)

    def json(self, name: str) -> dict:
        """A JSON file the stage wrote (``metrics.json``, ``run.json``); {} when it has none."""
        p = self.dir / name
        return json.loads(p.read_text()) if p.is_file() else {}

    def run(self) -> dict:
        return self.json("run.json")

    @property
    def params(self) -> dict:
        """The effective parameters the stage ran with (recorded in its run.json)."""
        return self.run().get("params", {})

    @property
    def profile(self) -> str:
        return self.run().get("profile", "full")

    def figures(self) -> list[Path]:
        return sorted(p.relative_to(self.dir.parent) for p in (self.dir / "figures").glob("*.png"))


def ref_text(refs: dict, stage: str, key: str, digits: int = 4) -> str:
    """A reference number of ``references.yaml`` as the table shows it ('' when there is none)."""
    r = (refs.get(stage) or {}).get(key)
    if not r or r.get("value") is None:
        return ""
    s = f"{r['value']:.{digits}g}" if isinstance(r["value"], float) else str(r["value"])
    return s + (f" ± {r['std']}" if r.get("std") is not None else "")


def ref_value(refs: dict, stage: str, key: str) -> float:
    return float(refs[stage][key]["value"])


def differs(a: pd.Series, b: pd.Series) -> bool:
    """Means further apart than two standard errors of their difference (a rough test).

    With one seed there is no spread to compare against: only the sign counts.
    """
    import numpy as np
    a, b = a.dropna(), b.dropna()
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if min(len(a), len(b)) > 1 else 0.0
    return abs(a.mean() - b.mean()) > 2 * se
