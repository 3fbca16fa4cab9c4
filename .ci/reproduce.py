"""CI: rerun the cheapest stages at the committed params and compare their headline metrics with
the committed ones. Run in a clean clone, after the test suite:

    python .ci/reproduce.py sweep margins

For each stage: `dvc repro -f <stage>` (with its check and fetch; forced, since the committed
outputs count as up to date), then every number of reports/<stage>/metrics.json against the
committed file (git HEAD):
- on the machine that made the committed outputs (the same CPU model, torch CPU capability and
  thread count, as run.json records them), exactly: same code, params, data and machine give
  the same bytes;
- on any other machine, within the tolerance the stage recorded for each metric
  (reports/<stage>/tolerance.json: four times the sd of a rerun's difference, from the metric's
  spread over seeds; a count, at least 4 sqrt(2): see `differences`). Another CPU's kernels
  round differently, so each training is another draw, and the study reproduces there
  statistically, not to the bit.
Exits 1 naming what differs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

MACHINE = ("cpu", "torch_cpu_capability", "threads")


def committed(path: str) -> dict:
    proc = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def count_floor(a, b, z: float) -> float:
    """The least tolerance of a count (``differences``): ``z * sqrt(2)``; 0 for other metrics."""
    counts = all(isinstance(v, int) and not isinstance(v, bool) for v in (a, b))
    return z * math.sqrt(2) if counts else 0.0


def differences(old: dict, new: dict, tolerance: dict | None, z: float = 4.0) -> list[str]:
    """What differs: exactly when ``tolerance`` is None, else beyond each metric's tolerance.

    A count (an integer in both files: models fitted, runs diverged, summed over the seeds) may
    also move by ``z * sqrt(2)``: its per-seed spread cannot be estimated below one unit in one
    seed (sd 1/sqrt(n) over n seeds), which for a sum over n seeds makes the sd of two runs'
    difference sqrt(2). Seeds that all gave the same count record a tolerance of ~0 (margins'
    models_fitted: 13, 13, 13), and a rerun on another CPU, where one of 48 models lands on the
    other side of the fit criterion, is then no evidence against the committed run."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a is None or b is None or tolerance is None:
            if a != b:
                out.append(f"{key}: committed {a}, now {b}")
        elif key not in tolerance:
            out.append(f"{key}: no tolerance recorded for it (committed {a}, now {b})")
        elif abs(b - a) > (tol := max(tolerance[key], count_floor(a, b, z))):
            out.append(f"{key}: committed {a:.6g}, now {b:.6g} (differs by {b - a:+.3g}, "
                       f"tolerance {tol:.3g})")
    return out


def main(stages: list[str]) -> int:
    bad = 0
    for stage in stages:
        old = committed(f"reports/{stage}/metrics.json")
        old_run = committed(f"reports/{stage}/run.json")
        subprocess.run(["dvc", "repro", "-f", stage], check=True)
        new = json.loads(Path(f"reports/{stage}/metrics.json").read_text())
        new_run = json.loads(Path(f"reports/{stage}/run.json").read_text())
        same = all(old_run.get(k) == new_run.get(k) for k in MACHINE) and old_run.get("cpu")
        where = ", ".join(f"{k} {new_run.get(k)}" for k in MACHINE)
        if same:
            diff, how = differences(old, new, None), "exactly (the machine that made them)"
        else:
            recorded = committed(f"reports/{stage}/tolerance.json")
            tol = recorded.get("tolerance")
            diff = (differences(old, new, tol, recorded.get("z", 4.0)) if tol
                    else ["no tolerance committed for this stage"])
            was = ", ".join(f"{k} {old_run.get(k)}" for k in MACHINE)
            how = f"within the recorded seed-spread tolerances (made on: {was}; here: {where})"
        if diff:
            bad += 1
            print(f"reproduce: {stage} does NOT reproduce its committed metrics {how}:\n  "
                  + "\n  ".join(diff))
        else:
            print(f"reproduce: {stage} reproduces its {len(old)} committed metrics {how}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
