"""Writing a stage's outputs: atomically, and in the shapes DVC reads.

Every file is written under a temporary name in its own directory and then
renamed, so an interrupted stage never leaves a half-written output that
looks valid. Two runs with the same params write the same bytes (models,
figures, tables, JSON), except for the fields that record time, so DVC sees
an unchanged output as unchanged.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

# Where every stage writes: reports/<stage>/ (tables, metrics, figures, run.json; in git)
# and models/<stage>/ (trained models; DVC-cached). dvc.yaml declares the same paths.
REPORTS = Path("reports")
MODELS = Path("models")


def stage_dirs(stage: str) -> tuple[Path, Path]:
    """``(reports/<stage>, models/<stage>)``: the one place a stage's output paths come from."""
    return REPORTS / stage, MODELS / stage


@functools.cache
def new_file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (0644 under umask 022).

    Read once: the umask can only be read by setting it, and a file another thread
    creates between the two calls gets the stand-in (022, a common default) instead.
    """
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary file, ``.<name>.tmp-<random><suffix>``, is removed if the writer
    fails; one a killed process leaves behind matches ``.*.tmp-*`` in .dvcignore, so
    DVC leaves it out of a directory output. (The suffix stays: writers such as
    pandas infer the format from it.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, new_file_mode())  # mkstemp's file is private (0600); outputs are not
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


def write_results(out: Path, df: pd.DataFrame, keys: list[str], name: str = "results.csv") -> None:
    """``df`` as ``out/<name>`` without its timing columns (any named '*time*'), which go to
    ``out/timing.csv`` beside ``keys``. Times differ on every run and results must not: a stage
    that reads these results (and DVC, which hashes them) sees the same bytes when nothing but
    the clock changed."""
    timed = [c for c in df.columns if "time" in c]
    write_table(out / name, df.drop(columns=timed))
    if timed:
        write_table(out / "timing.csv", df[keys + timed])


def converged(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` whose run did not diverge (all rows when it has no ``diverged`` column):
    the runs every metric, range, mean and verdict uses, in the stages and the report alike."""
    if "diverged" not in df:
        return df
    return df[~df["diverged"].fillna(False).astype(bool)]


def save_model(path: Path | str, module: "torch.nn.Module", **meta) -> None:  # noqa: F821
    """``{"state_dict": ..., **meta}`` for ``torch.load``, the same bytes for the same model.

    Saved to a buffer first: torch.save to a file names the archive's records after
    the file, here a random temporary name; to a buffer it names them "archive".
    """
    import torch
    buf = io.BytesIO()
    torch.save({"state_dict": module.state_dict(), **meta}, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())


# What matplotlib writes into a file that differs between runs or installs, left out
# (None drops a key): its version in every format, the creation date in SVG and PDF.
FIGURE_METADATA = {"png": {"Software": None},
                   "svg": {"Creator": None, "Date": None},
                   "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}


def save_figure(path: Path | str, fig) -> None:
    """``fig`` as PNG/SVG/PDF (by the suffix of ``path``), the same bytes for the same figure;
    the figure stays open."""
    import matplotlib  # already imported by whoever drew ``fig``

    fmt = Path(path).suffix.lstrip(".")
    # SVG element ids hash a random salt unless one is set.
    with matplotlib.rc_context({"svg.hashsalt": "genstudy"}), atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight",
                    metadata=FIGURE_METADATA.get(fmt))


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


def seed_tolerance(df: pd.DataFrame, headline, sums: tuple[str, ...] = (), z: float = 4.0) -> dict:
    """How far each headline metric may move when the stage reruns on another machine: z times
    the sd of the difference of two n-seed runs, from the spread of the metric over seeds.

    ``headline(table) -> {metric: value}`` computes the metrics from a results table; it is
    applied to each seed's rows alone. Other CPUs round differently (other kernels), which makes
    each training a different draw: the committed value and a rerun are then two draws of an
    n-seed statistic, whose difference has sd ``sd_seed * sqrt(2 / n)`` for a metric that averages
    over seeds, ``sd_seed * sqrt(2 n)`` for one that sums (``sums``). Each tolerance is at least
    1e-4 + 1e-3 |value| (float rounding). Returns ``{"seeds": n, "z": z, "tolerance": {metric:
    value}}``; the tolerance is empty with fewer than two seeds: no spread to go by."""
    import math
    import statistics
    per_seed = [headline(g) for _, g in df.groupby("seed")]
    n, whole, out = len(per_seed), headline(df), {}
    if n < 2:
        return {"seeds": n, "z": z, "tolerance": out}
    for key, value in whole.items():
        vals = [m[key] for m in per_seed if m.get(key) is not None and math.isfinite(m[key])]
        if value is None or not math.isfinite(value):
            continue
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        factor = math.sqrt(2 * n) if key in sums else math.sqrt(2 / n)
        out[key] = max(z * sd * factor, 1e-4 + 1e-3 * abs(value))
    return {"seeds": n, "z": z, "tolerance": out}
