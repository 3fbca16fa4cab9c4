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


def committed_doc(rev: str = "HEAD") -> dict | None:
    """params.yaml as committed at ``rev`` (None outside a git repository or before a commit)."""
    try:
        text = subprocess.run(["git", "show", f"{rev}:{PARAMS}"], capture_output=True, text=True,
                              check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    doc = yaml.safe_load(text)
    return doc if isinstance(doc, dict) else None


def committed_params(rev: str = "HEAD") -> dict[str, dict]:
    """Each stage's section as committed at ``rev`` (defaults filled in by its schema)."""
    doc = committed_doc(rev) or {}
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


def effective(name: str, committed: dict | None) -> dict:
    """What stage ``name`` runs with: profile, validated params, keys where the user's value won."""
    schema = stage(name)[0]
    if schema is None:
        return {"profile": params.profile(PARAMS), "params": {}, "user_values_kept": []}
    profile, section, kept = params.resolve(name, PARAMS, committed)
    p = params.validate(name, schema, section)
    if hasattr(p, "device"):  # a device this machine does not have is refused here, naming the key
        params.resolve_device(p.device, key=f"{name}.device")
    return {"profile": profile, "params": p.model_dump(mode="json"), "user_values_kept": kept}


def run_stage(name: str) -> None:
    schema, run, _ = stage(name)
    out, models = stage_dirs(name)
    eff = effective(name, committed_doc())
    p = schema.model_validate(eff["params"]) if schema else None
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    run(p, out, models)
    wall = time.perf_counter() - t0
    write_json(out / "run.json", {
        "stage": name, **eff, "wall_time_s": round(wall, 2),
        "started": started.isoformat(timespec="seconds"), **run_info()})
    print(f"{name}: done in {wall:.0f} s")


def check() -> int:
    """Validate every section of params.yaml under every profile, before DVC runs (and deletes the
    outputs of) any stage; print each problem. When all is valid, write what each stage will run
    with to reports/check/<stage>.json (each stage depends on its own file, so a change to one
    section reruns only that stage). Returns the number of problems."""
    committed, bad, found = committed_doc(), 0, {}
    try:  # the top level as the file stands: its sections and its own profile
        params.resolve(STAGES[0], PARAMS, committed)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    current = params.profile(PARAMS)
    for name in STAGES:
        for profile in params.PROFILES:
            try:
                if stage(name)[0] is not None:
                    params.validate(name, stage(name)[0],
                                    params.resolve(name, PARAMS, committed, as_profile=profile)[1])
                if profile == current:
                    found[name] = effective(name, committed)
            except ParamsError as e:
                bad += 1
                where = "" if profile == current else f" (under profile {profile})"
                print(f"error{where}: {e}", file=sys.stderr)
    if bad:
        return bad
    for name, eff in found.items():
        if stage(name)[0] is not None:  # the report has no params of its own
            write_json(REPORTS / "check" / f"{name}.json", eff)
    print(f"params.yaml: every section is valid under every profile (this run: {current})")
    return 0


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
