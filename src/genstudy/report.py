"""What an experiment's report section is made of, and how it reads a stage's outputs.

Each experiment's ``present.py`` builds its :class:`Section` (question, table rows of our
numbers beside the notebook's, verdict) from its compute stage's outputs (:class:`Outputs`)
and ``references.yaml``; :mod:`genstudy.render` renders the sections as the report. Nothing
here recomputes a result.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from . import stats, verdicts
from .outputs import converged


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
    claims: list[str] = field(default_factory=list)  # the quoted claims the verdict tests (references.yaml)
    figures: list[Path] = field(default_factory=list)  # relative to the reports directory
    params: dict = field(default_factory=dict)
    wall_time_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """As written to ``reports/<stage>/section.json`` by the presentation stage."""
        return {**asdict(self), "figures": [f.as_posix() for f in self.figures]}

    @classmethod
    def from_json(cls, d: dict) -> "Section":
        return cls(**{**d, "rows": [Row(**r) for r in d["rows"]],
                      "figures": [Path(f) for f in d["figures"]]})


def fmt_series(values, digits: int = 4) -> str:
    """``mean ± sd [95 % CI] (n=...)`` over seeds; the CI only from 2 seeds on; 'n/a' when empty."""
    s = stats.summarize(values)
    if s.n == 0:
        return "n/a"
    f = lambda x: f"{x:.{digits}f}"  # noqa: E731
    if s.n == 1:
        return f"{f(s.mean)} (n=1)"
    return f"{f(s.mean)} ± {f(s.sd)} [{f(s.lo)}, {f(s.hi)}] (n={s.n})"


def verdict(parts: list[tuple[str, verdicts.Judgement]], note: str = "", label: str | None = None) -> str:
    """The verdict: its label (verdicts.overall of the parts) on the first line, then one line per
    part ('- claim: numbers, test, n, interval: label (why, raw and Holm-adjusted p)'), then ``note``.
    ``parts``: the experiment's claims judged as one family (verdicts.family); ``label``, where the
    claim is not simply all of its parts (the caller says how in ``note``)."""
    if not parts:
        return f"{verdicts.INCONCLUSIVE}: {note or 'nothing in this run to test the claim on.'}"
    label = label or verdicts.overall([(name, j.label) for name, j in parts])
    lines = [f"{label}:"] + [f"- {j.line(name)}" for name, j in parts] + ([note] if note else [])
    return "\n".join(lines)


def claims(refs: dict, stage: str) -> list[str]:
    """The claims references.yaml quotes for ``stage``, as the report prints them."""
    return [f"“{c['quote']}” ({c['source']})" for c in (refs.get(stage) or {}).get("claims", [])]


def label_of(verdict_text: str) -> str:
    """The label a verdict starts with."""
    return verdict_text.split(":", 1)[0]


# --- reading what the stages wrote -------------------------------------------------------------

class Outputs:
    """Access to one stage's outputs under ``reports/<stage>/``."""

    def __init__(self, reports: Path, stage: str):
        self.dir = reports / stage
        self.stage = stage

    def table(self, name: str = "results.csv", diverged: bool = False) -> pd.DataFrame:
        """A table the stage wrote; rows of runs that diverged are left out unless ``diverged``
        (every verdict, range and mean skips them; the report says how many there were)."""
        df = pd.read_csv(self.dir / name)
        return df if diverged else converged(df)

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
