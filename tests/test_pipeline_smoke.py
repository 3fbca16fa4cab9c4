"""End to end: the whole pipeline at smoke scale, through DVC itself, in a copy of the repo.

Every output that dvc.yaml declares (outs, metrics, plots) must exist after
`dvc exp run -S profile=smoke` and hold real values: tables with numbers,
JSON with finite numbers, images that decode, models that load. Stages added
to dvc.yaml are covered without touching this test.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory) -> Path:
    """A copy of the repository's files in which `dvc exp run -S profile=smoke` has run."""
    dest = tmp_path_factory.mktemp("smoke") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    # The copy's own code runs: its src/ comes first on the path, before any installed copy.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(dest / "src"),
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    _run(["git", "init", "-q"], dest, env)
    _run(["git", "add", "-A"], dest, env)
    _run(["git", "commit", "-qm", "smoke"], dest, env)
    _run(["dvc", "exp", "run", "-S", "profile=smoke"], dest, env)
    return dest


def declared_outputs(repo: Path) -> dict[str, list[Path]]:
    """Per stage, every path its outs/metrics/plots declare."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, st in stages.items():
        paths = []
        for kind in ("outs", "metrics", "plots"):
            for entry in st.get(kind, []):
                paths.append(repo / (entry if isinstance(entry, str) else next(iter(entry))))
        out[name] = paths
    return out


def _numbers(obj):
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


def check_file(path: Path) -> None:
    """Fail unless ``path`` holds real content of its kind."""
    assert path.stat().st_size > 0, f"{path} is empty"
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        assert len(df) > 0, f"{path} has no rows"
        num = df.select_dtypes("number")
        assert num.shape[1] > 0, f"{path} has no numeric column"
        assert num.notna().any().all(), f"{path}: a numeric column holds no value at all"
        assert not num.isin([math.inf, -math.inf]).any().any(), f"{path} holds inf"
    elif suffix == ".json":
        nums = list(_numbers(json.loads(path.read_text())))
        assert nums, f"{path} holds no number"
        assert all(math.isfinite(x) for x in nums), f"{path} holds NaN or inf"
    elif suffix == ".png":
        import matplotlib.image as mpimg
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
        img = mpimg.imread(path)
        assert img.shape[0] > 50 and img.shape[1] > 50, f"{path} is too small to be a figure"
        assert img.std() > 0, f"{path} is a blank image"
    elif suffix == ".svg":
        assert "<svg" in path.read_text()[:2000], f"{path} is not an SVG"
    elif suffix == ".pt":
        obj = torch.load(path, map_location="cpu", weights_only=False)
        assert obj, f"{path} holds nothing"


def test_every_declared_output_exists_and_holds_real_values(smoke_repo):
    problems = []
    for stage, paths in declared_outputs(smoke_repo).items():
        for p in paths:
            rel = p.relative_to(smoke_repo)
            if not p.exists():
                problems.append(f"{stage}: {rel} missing")
                continue
            files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
            if rel.parts[:2] == ("reports", "check"):  # parameter snapshots, not results
                problems += [f"{stage}: {f} records no params" for f in files
                             if "params" not in json.loads(f.read_text())]
                continue
            if not files:
                problems.append(f"{stage}: {rel} is an empty directory")
            for f in files:
                try:
                    check_file(f)
                except AssertionError as e:
                    problems.append(f"{stage}: {e}")
    assert not problems, "\n".join(problems)


def test_smoke_run_recorded_every_stage_in_the_lock(smoke_repo):
    stages = yaml.safe_load((smoke_repo / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load((smoke_repo / "dvc.lock").read_text())["stages"]
    assert set(stages) <= set(lock)
    assert yaml.safe_load((smoke_repo / "params.yaml").read_text())["profile"] == "smoke"


def test_the_report_shows_every_figure_and_real_numbers(smoke_repo):
    reports = smoke_repo / "reports"
    page = (reports / "index.html").read_text()
    md = (reports / "report.md").read_text()
    figures = sorted(p.relative_to(reports).as_posix() for p in reports.glob("*/figures/*.png"))
    assert figures, "no figure was produced"
    for f in figures:
        assert f"src='{f}'" in page, f"index.html does not show {f}"
        assert f"]({f})" in md, f"report.md does not show {f}"
        check_file(reports / f)
    # Every image the page links resolves to a file (nothing points outside, no CDN).
    import re
    for src in re.findall(r"src='([^']+)'", page):
        assert (reports / src).is_file(), f"index.html links a missing file {src}"
    assert "http://" not in page and "https://" not in page, "the page must work offline"
    # Every experiment's table holds real numbers: each row's "this study" cell has a digit, no NaN.
    tables = [t for t in re.findall(r"<table>(.*?)</table>", page, flags=re.S) if "this study" in t]
    assert len(tables) >= 8
    for t in tables:
        for row in re.findall(r"<tr>(.*?)</tr>", t, flags=re.S)[1:]:
            cells = re.findall(r"<td>(.*?)</td>", row, flags=re.S)
            assert re.search(r"\d", cells[1]), f"a table row holds no number: {row}"
            assert "nan" not in cells[1].lower() and "n/a" not in cells[1], f"no value in the report: {row}"
    assert "Verdict:" in page and md.count("**Verdict: not a result**") >= 8  # smoke: no verdicts
