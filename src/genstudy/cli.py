"""The command line: ``genstudy <stage>``, ``genstudy check``, ``genstudy --help``.

dvc.yaml runs every stage as ``python -m genstudy <stage>``. A stage run
validates the stage's section of params.yaml (profile applied), runs it, and
writes ``reports/<stage>/run.json``: the effective parameters it ran with, the
profile, its wall time, the device and library versions. Bad params or data
end it with one message and exit code 2, before any work.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from . import data, experiments, params
from .data import DataError
from .outputs import REPORTS, stage_dirs, write_json
from .params import ParamsError

PARAMS = Path("params.yaml")
REFERENCES = Path("references.yaml")


# --- the two stages that are not experiments --------------------------------------------------

class FetchParams(params.Schema):
    # Data sets the experiments may use (each experiment's `dataset` must be one of them).
    datasets: list[params.DatasetName] = ["fashion_mnist"]
    # Per data set, a directory holding the four IDX files (.gz or not), tried before the mirrors.
    # null: the registry's default (Debian's dataset-fashion-mnist for fashion_mnist).
    local_dirs: dict[params.DatasetName, str | None] = {}


def fetch(p: FetchParams, out: Path, models: Path) -> None:
    """Put the verified IDX files of ``fetch.datasets`` under data/raw."""
    for name in p.datasets:
        where = data.fetch(name, data.RAW, p.local_dirs.get(name))
        print(f"fetch: {name} verified in {where}")


def report(p: None, out: Path, models: Path) -> None:
    """The report: every experiment's section, rendered as reports/index.html and report.md."""
    from . import render
    for s in render.build(REPORTS, REFERENCES, committed_params()):
        print(f"report: {s.stage}: {s.verdict}")


# --- stage registry -------------------------------------------------------------------------

def stage(name: str) -> tuple[type[params.Schema] | None, callable, str]:
    """``(params schema or None, run function, one-line description)`` of stage ``name``."""
    if name == "fetch":
        return FetchParams, fetch, fetch.__doc__
    if name == "report":
        return None, report, report.__doc__
    mod = experiments.load(name)
    return mod.Params, mod.run, mod.__doc__


STAGES = ("fetch", *experiments.NAMES, "report")


def committed_params(rev: str = "HEAD") -> dict[str, dict]:
    """Each stage's section as committed at ``rev`` (defaults filled in by its schema)."""
    try:
        text = subprocess.run(["git", "show", f"{rev}:{PARAMS}"], capture_output=True, text=True,
                              check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {}
    doc = yaml.safe_load(text) or {}
    out = {}
    for name in STAGES:
        schema = stage(name)[0]
        if schema is None or not isinstance(doc.get(name), dict):
            continue
        try:
            out[name] = schema.model_validate(doc[name]).model_dump(mode="json")
        except ValueError:  # committed under an older schema: compare the raw section
            out[name] = doc[name]
    return out


def run_info() -> dict:
    """Where a stage ran: device and library versions."""
    import torch
    import torchvision
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"device": gpu or f"cpu ({torch.get_num_threads()} threads)",
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "platform": platform.platform()}


def run_stage(name: str) -> None:
    schema, run, _ = stage(name)
    out, models = stage_dirs(name)
    p = params.load(name, schema, PARAMS) if schema else None
    profile = params.profile(PARAMS)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    run(p, out, models)
    wall = time.perf_counter() - t0
    write_json(out / "run.json", {
        "stage": name, "profile": profile,
        "params": p.model_dump(mode="json") if p is not None else {},
        "wall_time_s": round(wall, 2), "started": started.isoformat(timespec="seconds"),
        **run_info()})
    print(f"{name}: done in {wall:.0f} s")


def check() -> int:
    """Validate every section of params.yaml; print each problem; the number of bad sections."""
    bad = 0
    for name in STAGES:
        schema = stage(name)[0]
        if schema is None:
            continue
        try:
            params.load(name, schema, PARAMS)
        except ParamsError as e:
            bad += 1
            print(f"error: {e}", file=sys.stderr)
    if not bad:
        print(f"params.yaml: every section is valid (profile {params.profile(PARAMS)})")
    return bad


def _stage_list() -> str:
    """One line per stage: the first line of its docstring (imports every experiment)."""
    lines = [f"  {n:<15} {(stage(n)[2] or '').strip().splitlines()[0]}" for n in STAGES]
    return "\n".join(lines + [f"  {'check':<15} validate every section of params.yaml"])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # Only --help imports every experiment: a stage run imports its own module alone, so
    # dvc.yaml can list exactly the code each stage depends on.
    wants_help = not argv or any(a in ("-h", "--help") for a in argv)
    parser = argparse.ArgumentParser(
        prog="genstudy", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Why do neural networks generalize? Run one stage of the study (as dvc.yaml "
                    "does), or check params.yaml.",
        epilog=f"stages:\n{_stage_list()}" if wants_help else None)
    parser.add_argument("stage", choices=[*STAGES, "check"], metavar="STAGE",
                        help="a stage (listed below) or 'check'")
    args = parser.parse_args(argv)
    try:
        if args.stage == "check":
            sys.exit(1 if check() else 0)
        run_stage(args.stage)
    except (ParamsError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
