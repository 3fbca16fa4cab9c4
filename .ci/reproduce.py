"""CI: rerun the cheapest stages at the committed params and compare their headline metrics with
the committed ones. Run in a clean clone, after the test suite:

    python .ci/reproduce.py sweep margins

For each stage: `dvc repro -s fetch` (the data, if missing), `dvc repro -f -s <stage>` (forced:
the committed outputs would otherwise count as up to date), then every number of
reports/<stage>/metrics.json against the committed file (git HEAD). A number differs when
|new - old| > ABS_TOL + REL_TOL * |old|; same code, params, data and machine give the same bytes,
so the tolerance only absorbs a different CPU's float rounding. Exits 1 naming what differs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

ABS_TOL, REL_TOL = 1e-4, 1e-3


def committed(path: str) -> dict:
    return json.loads(subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True,
                                     check=True).stdout)


def differences(old: dict, new: dict) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            if a != b:
                out.append(f"{key}: committed {a}, now {b}")
        elif not math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL):
            out.append(f"{key}: committed {a:.6g}, now {b:.6g} (differs by {b - a:+.3g})")
    return out


def main(stages: list[str]) -> int:
    subprocess.run(["dvc", "repro", "-s", "fetch"], check=True)
    bad = 0
    for stage in stages:
        path = f"reports/{stage}/metrics.json"
        old = committed(path)
        subprocess.run(["dvc", "repro", "-f", "-s", stage], check=True)
        with open(path) as f:
            diff = differences(old, json.load(f))
        if diff:
            bad += 1
            print(f"reproduce: {stage} does NOT reproduce its committed metrics:\n  " + "\n  ".join(diff))
        else:
            print(f"reproduce: {stage} reproduces its {len(old)} committed metrics "
                  f"(abs tol {ABS_TOL:g}, rel tol {REL_TOL:g})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
