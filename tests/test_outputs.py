"""Outputs are strict JSON, land atomically with a normal file mode, and are the same bytes
for the same content."""

import fnmatch
import json
import math
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genstudy import outputs


def test_write_json_turns_nan_and_inf_into_null(tmp_path):
    path = tmp_path / "m.json"
    outputs.write_json(path, {"a": [1.0, math.nan], "b": math.inf, "c": 2, "d": np.float64("nan"),
                              "e": np.float32(0.5)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": [1.0, None], "b": None, "c": 2, "d": None, "e": 0.5}


def test_atomic_path_leaves_nothing_behind_when_the_writer_fails(tmp_path):
    target = tmp_path / "t.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with outputs.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_a_killed_writer_leaves_only_a_temp_file_dvc_ignores(tmp_path):
    target = tmp_path / "out" / "results.csv"
    code = ("import os, signal, sys\nfrom genstudy import outputs\n"
            "with outputs.atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_text('half')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(outputs.__file__).parents[1])}
    rc = subprocess.run([sys.executable, "-c", code, str(target)], env=env).returncode
    assert rc == -signal.SIGKILL and not target.exists()
    [left] = target.parent.iterdir()  # the finally never ran: the temp file stays
    patterns = [line for line in (Path(__file__).parents[1] / ".dvcignore").read_text().splitlines()
                if line and not line.startswith("#")]
    assert any(fnmatch.fnmatch(left.name, pat) for pat in patterns), left.name


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)], ids=["022", "077"])
def test_written_files_get_the_mode_of_a_new_file(tmp_path, umask, mode):
    old = os.umask(umask)
    outputs.new_file_mode.cache_clear()  # read the umask this test set
    try:
        outputs.write_json(tmp_path / "m.json", {"a": 1})
        outputs.save_model(tmp_path / "m.pt", torch.nn.Linear(2, 2))
    finally:
        os.umask(old)
        outputs.new_file_mode.cache_clear()
    for name in ("m.json", "m.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_model_saves_to_the_same_bytes_wherever_it_goes(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    outputs.save_model(tmp_path / "a.pt", model, seed=3, arm="x")
    outputs.save_model(tmp_path / "sub" / "b_other_name.pt", model, seed=3, arm="x")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "b_other_name.pt").read_bytes()
    loaded = torch.load(tmp_path / "a.pt", weights_only=True)
    assert loaded["seed"] == 3 and loaded["arm"] == "x"
    for k, v in model.state_dict().items():
        assert torch.equal(loaded["state_dict"][k], v), k


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_a_figure_saves_to_the_same_bytes_without_version_or_date(tmp_path, fmt):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([1, 3, 2], marker="o", label="a")
    ax.legend()
    ax.set_title("same bytes")
    outputs.save_figure(tmp_path / f"a.{fmt}", fig)
    outputs.save_figure(tmp_path / f"b.{fmt}", fig)
    plt.close(fig)
    a = (tmp_path / f"a.{fmt}").read_bytes()
    assert a == (tmp_path / f"b.{fmt}").read_bytes()
    assert matplotlib.__version__.encode() not in a  # a new matplotlib alone changes no output


def test_seed_tolerance_scales_the_seed_spread_of_each_metric():
    import math

    import pandas as pd

    from genstudy.outputs import seed_tolerance
    df = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "acc": [0.8, 0.8, 0.7, 0.7, 0.9, 0.9],
                       "fitted": [1, 0, 1, 1, 1, 1]})

    def headline(d):
        return {"acc": d.acc.mean(), "fitted": int(d.fitted.sum()), "same": 1.0}
    tol = seed_tolerance(df, headline, sums=("fitted",))
    assert tol["seeds"] == 3 and tol["z"] == 4.0
    sd_acc, sd_fitted = 0.1, math.sqrt(1 / 3)  # per seed: acc 0.8/0.7/0.9, fitted 1/2/2
    assert math.isclose(tol["tolerance"]["acc"], 4 * sd_acc * math.sqrt(2 / 3))
    assert math.isclose(tol["tolerance"]["fitted"], 4 * sd_fitted * math.sqrt(6))
    assert tol["tolerance"]["same"] == 1e-4 + 1e-3  # no spread: float rounding only
    assert seed_tolerance(df[df.seed == 0], headline)["tolerance"] == {}  # one seed: no spread
