"""The command line: ``genstudy <stage>``, ``genstudy present <experiment>``, ``genstudy check``.

dvc.yaml runs every compute stage as ``python -m genstudy <stage>``: it validates the stage's
section of params.yaml (profile applied), runs it, and writes ``reports/<stage>/run.json``: the
effective parameters it ran with, what the profile set, its wall time, the machine and library
versions. ``python -m genstudy present <experiment>`` draws the experiment's figures and writes
its report section from what the compute stage wrote; ``python -m genstudy report`` renders every
section. Bad params or data end a command with one message and exit code 2, before any work.

Imports are lazy: a stage imports only the code it runs, so dvc.yaml can list exactly that code
as its deps (``python -m genstudy.pipeline --check`` verifies it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PARAMS = Path("params.yaml")
REFERENCES = Path("references.yaml")
NAMES = ("baselines", "flatness", "keskar", "gradient_loss", "regularization", "transfer", "sweep",
         "margins", "probes")  # = genstudy.experiments.NAMES (a test keeps them equal)
COMPUTE = ("fetch", *NAMES)


def _describe() -> str:
    from . import experiments
    lines = [f"  {'fetch':<15} the verified IDX files of fetch.datasets under data/raw"]
    lines += [f"  {n:<15} {experiments.describe(n)}" for n in NAMES]
    lines += [f"  {'present NAME':<15} draw experiment NAME's figures and write its report section",
              f"  {'report':<15} render every section as reports/index.html and reports/report.md",
              f"  {'check':<15} validate every section of params.yaml under every profile"]
    return "\n".join(lines)


def _dispatch(args: argparse.Namespace) -> int:
    if args.stage == "check":
        from . import stages
        return 1 if stages.check() else 0
    if args.stage == "present":
        if args.name not in NAMES:
            raise SystemExit(f"error: present: unknown experiment {args.name!r} (known: {', '.join(NAMES)})")
        from . import presentation
        presentation.present(args.name, REFERENCES)
        return 0
    if args.stage == "report":
        from . import render
        render.build()
        return 0
    from . import stages
    stages.run_stage(args.stage)
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    wants_help = not argv or any(a in ("-h", "--help") for a in argv)
    parser = argparse.ArgumentParser(
        prog="genstudy", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Why do neural networks generalize? Run one stage of the study (as dvc.yaml "
                    "does), or check params.yaml.",
        epilog=f"stages:\n{_describe()}" if wants_help else None)
    parser.add_argument("stage", choices=[*COMPUTE, "present", "report", "check"], metavar="STAGE",
                        help="a stage (listed below), 'present NAME', 'report' or 'check'")
    parser.add_argument("name", nargs="?", help="with 'present': the experiment")
    args = parser.parse_args(argv)
    if (args.stage == "present") != (args.name is not None):
        parser.error("an experiment name goes with 'present' (and only there)")
    from .errors import StudyError
    try:
        sys.exit(_dispatch(args))
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
