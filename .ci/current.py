"""CI: the committed outputs are what the committed code and params made.

`dvc status` compares every stage's deps and params in the checkout with what dvc.lock recorded
when the stage last ran. This fails when any stage's code, params or input files differ from
that record (the stage would have to rerun), or a stage has never run. It does not fail on
inputs or outputs that are merely absent (a clean clone has no DVC cache: no data/raw, no
models/): nothing there says the outputs are stale.

Stages named in .ci/stale-stages (one per line, '#' comments) are reported but do not fail: the
committed list of stages whose outputs predate their code, each to be rerun and removed from it.

    python .ci/current.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ABSENT = {"deleted", "not in cache"}


def stale(status: dict) -> dict[str, list[str]]:
    """Per stage, why its recorded outputs do not match the checkout (absent files aside)."""
    out: dict[str, list[str]] = {}
    for stage, changes in status.items():
        why = []
        for change in changes:
            if isinstance(change, str):  # "changed command", "always changed", ...
                why.append(change)
                continue
            for kind, entries in change.items():
                if kind == "changed outs":
                    continue  # outputs absent or regenerated: not a staleness of the record
                for path, state in entries.items():
                    if isinstance(state, dict):  # params: {key: state}
                        why += [f"{kind}: {path} {k} {s}" for k, s in state.items()]
                    elif state not in ABSENT:
                        why.append(f"{kind}: {path} {state}")
        if why:
            out[stage.split(":")[-1]] = why
    return out


def main() -> int:
    proc = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True)
    if proc.returncode:
        print(f"current: `dvc status` failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return 1
    found = stale(json.loads(proc.stdout or "{}"))
    allowed_file = Path(".ci/stale-stages")
    allowed = {ln.split("#")[0].strip() for ln in allowed_file.read_text().splitlines()} - {""} \
        if allowed_file.is_file() else set()
    failing = {st: why for st, why in found.items() if st not in allowed}
    for st in sorted(allowed & set(found)):
        print(f"current: {st} is stale, as .ci/stale-stages says ({len(found[st])} changes)")
    for st in sorted(allowed - set(found)):
        print(f"current: {st} is listed in .ci/stale-stages but is current: remove it from the list")
    if failing:
        for st, why in sorted(failing.items()):
            print(f"current: {st}: its committed outputs are not what this code and params make:\n    "
                  + "\n    ".join(why))
        print("rerun them (`dvc repro <stage>`) and commit dvc.lock with the outputs")
        return 1
    print(f"current: every stage's committed outputs match its code and params "
          f"({len(allowed & set(found))} listed as stale)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
