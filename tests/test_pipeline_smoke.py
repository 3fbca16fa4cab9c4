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
import time
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


def _env(repo: Path) -> dict:
    """The copy's own code runs: its src/ comes first on the path, before any installed copy."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(repo / "src"), "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t"}


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
    env = _env(dest)
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
        num = df.select_dtypes("number").drop(columns=[c for c in df if c.endswith("_reason")], errors="ignore")
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


def test_a_change_of_wording_or_threshold_reruns_presentation_only(smoke_repo):
    """A sentence of a section and a threshold in references.yaml are presentation: `dvc status`
    lists only the two presentation stages, and `dvc repro` rebuilds them and the report in
    seconds, retraining nothing."""
    env = _env(smoke_repo)
    present = smoke_repo / "src/genstudy/experiments/flatness/present.py"
    refs = smoke_repo / "references.yaml"
    old_present, old_refs = present.read_text(), refs.read_text()
    models = {k: v for k, v in _hashes(smoke_repo).items() if k.startswith("models/")}
    try:
        assert "Do large batches find sharp minima" in old_present
        present.write_text(old_present.replace("Do large batches find sharp minima",
                                               "Do large batches really find sharp minima"))
        assert "min_gain: {value: 0.05," in old_refs
        refs.write_text(old_refs.replace("min_gain: {value: 0.05,", "min_gain: {value: 0.06,"))
        stale = json.loads(_run(["dvc", "status", "--json"], smoke_repo, env).stdout)
        assert set(stale) == {"present-flatness", "present-transfer"}, stale  # the report follows them
        t0 = time.perf_counter()
        _run(["dvc", "repro"], smoke_repo, env)
        took = time.perf_counter() - t0
        assert took < 60, f"presentation took {took:.0f} s"
        assert "Do large batches really find" in (smoke_repo / "reports/report.md").read_text()
        assert {k: v for k, v in _hashes(smoke_repo).items() if k.startswith("models/")} == models
    finally:
        present.write_text(old_present)
        refs.write_text(old_refs)
        _run(["dvc", "repro"], smoke_repo, env)
    _run(["dvc", "status", "--quiet"], smoke_repo, env)


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
            # one smoke seed: a comparison has no p ("p n/a"), but every cell has a value
            assert "nan" not in cells[1].lower() and cells[1].strip() != "n/a", f"no value in the report: {row}"
    assert "Verdict:" in page and md.count("**Verdict: not a result**") >= 8  # smoke: no verdicts


def _hashes(repo: Path) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes() for top in ("reports", "models", "data")
            for p in sorted((repo / top).rglob("*")) if p.is_file()}


@pytest.mark.parametrize("change, needle", [
    (lambda d: d["flatness"].update(lr=-0.001), "flatness.lr: Input should be greater than 0"),
    (lambda d: d["flatness"].update(epocs=5), "flatness.epocs: unknown key"),
    (lambda d: d.update(profile="nonsense"), "profile: must be one of full, quick, smoke"),
    (lambda d: d.update(bogus={"x": 1}), "bogus: unknown section"),
    (lambda d: d["smoke"].update(flatnes={}), "smoke.flatnes: unknown stage"),
    (lambda d: d["transfer"].update(seeds=[0, 0]), "transfer.seeds: Value error, must not repeat a value"),
    # rules across stages, refused by check before DVC deletes the outputs of the stage they break
    (lambda d: d["flatness"].update(dataset="mnist"), "flatness.dataset: 'mnist' is not fetched"),
    (lambda d: d["smoke"]["gradient_loss"].update(train_size=400),
     "gradient_loss.train_size: 400 differs from baselines.convnet.train_size 500"),
    (lambda d: d["smoke"]["gradient_loss"].update(seeds=[5]), "gradient_loss.seeds: [5] have no baseline convnet"),
])
def test_a_refused_run_through_dvc_keeps_every_previous_output(smoke_repo, change, needle):
    """DVC deletes a stage's outputs before its command runs: the check stage refuses bad params
    first, so nothing of the last good run is lost; restoring params.yaml is the way back."""
    env = _env(smoke_repo)
    before = _hashes(smoke_repo)
    good = (smoke_repo / "params.yaml").read_text()
    doc = yaml.safe_load(good)
    change(doc)
    (smoke_repo / "params.yaml").write_text(yaml.safe_dump(doc))
    try:
        proc = subprocess.run(["dvc", "repro"], cwd=smoke_repo, env=env, capture_output=True, text=True)
        assert proc.returncode != 0
        assert needle in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    finally:
        (smoke_repo / "params.yaml").write_text(good)
    assert _hashes(smoke_repo) == before
    _run(["dvc", "status", "--quiet"], smoke_repo, env)  # nothing to rerun after the restore


def test_two_runs_of_a_stage_write_the_same_bytes(smoke_repo):
    """Rerunning baselines writes byte-identical models, tables and metrics (run.json and
    timing.csv record times), so the stages that read its models do not rerun."""
    env = _env(smoke_repo)
    before = {k: v for k, v in _hashes(smoke_repo).items() if k.startswith(("models/baselines", "reports/baselines"))}
    _run(["dvc", "repro", "-f", "-s", "baselines"], smoke_repo, env)
    after = {k: v for k, v in _hashes(smoke_repo).items() if k.startswith(("models/baselines", "reports/baselines"))}
    assert before.keys() == after.keys()
    differ = [k for k in before if before[k] != after[k] and not k.endswith(("run.json", "timing.csv"))]
    assert not differ, f"files that differ between two runs: {differ}"
    status = _run(["dvc", "status", "gradient_loss"], smoke_repo, env).stdout
    assert "changed" not in status, status


def test_a_remote_round_trip_restores_everything_without_a_rerun(smoke_repo, tmp_path):
    """Push the smoke run to a local-directory remote, clone the repository afresh, pull: every
    output is back and `dvc status` has nothing to run."""
    env = _env(smoke_repo)
    _run(["dvc", "repro"], smoke_repo, env)  # the report, after the rerun above
    remote = tmp_path / "remote"
    _run(["dvc", "remote", "add", "-f", "-d", "storage", str(remote)], smoke_repo, env)
    _run(["git", "add", "-A"], smoke_repo, env)
    _run(["git", "commit", "-qm", "smoke results"], smoke_repo, env)
    _run(["dvc", "push"], smoke_repo, env)
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(smoke_repo), str(clone)], tmp_path, env)
    _run(["dvc", "pull"], clone, {**env, "PYTHONPATH": str(clone / "src")})
    assert _hashes(clone) == _hashes(smoke_repo)
    status = _run(["dvc", "status"], clone, {**env, "PYTHONPATH": str(clone / "src")}).stdout
    assert "up to date" in status, status


def test_after_an_experiment_in_the_workspace_two_commands_restore_the_committed_results(smoke_repo):
    """`dvc exp run -S ...` in the workspace overwrites the committed results there; the README's
    way back (`git checkout -- .` then `dvc checkout`) restores them byte for byte, and the
    experiment stays available (`dvc exp show`, `dvc exp apply`)."""
    env = _env(smoke_repo)
    if _run(["git", "status", "--porcelain"], smoke_repo, env).stdout.strip():
        _run(["git", "add", "-A"], smoke_repo, env)
        _run(["git", "commit", "-qm", "smoke results"], smoke_repo, env)
    committed = _hashes(smoke_repo)
    _run(["dvc", "exp", "run", "-n", "lr2", "-S", "flatness.lr=0.002"], smoke_repo, env)
    assert _hashes(smoke_repo) != committed
    _run(["git", "checkout", "--", "."], smoke_repo, env)
    _run(["dvc", "checkout"], smoke_repo, env)
    assert _hashes(smoke_repo) == committed
    assert "lr2" in _run(["dvc", "exp", "list", "--name-only"], smoke_repo, env).stdout
