"""CI's own checks: what counts as a stale stage, and how a rerun's metrics are compared."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / ".ci" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


current, reproduce = _load("current"), _load("reproduce")


def test_changed_code_or_params_is_stale_but_absent_files_are_not():
    status = {  # the shapes `dvc status --json` gives
        "flatness": [{"changed deps": {"src/genstudy/experiments/flatness/compute.py": "modified",
                                       "data/raw": "deleted"}}],
        "sweep": [{"changed deps": {"params.yaml": {"sweep.lrs": "modified"}}}],
        "present-sweep": [{"changed deps": {"references.yaml": {"sweep": "modified"}}}],
        "baselines": [{"changed deps": {"data/raw": "deleted"}}, {"changed outs": {"models/baselines": "not in cache"}}],
        "report": ["changed command"],
        "dvc.yaml:margins": [{"changed outs": {"reports/margins/results.csv": "modified"}}],
    }
    assert current.stale(status) == {
        "flatness": ["changed deps: src/genstudy/experiments/flatness/compute.py modified"],
        "sweep": ["changed deps: params.yaml sweep.lrs modified"],
        "present-sweep": ["changed deps: references.yaml sweep modified"],
        "report": ["changed command"],
    }


def test_metrics_compare_exactly_on_the_same_machine_and_within_tolerance_elsewhere():
    old, new = {"acc": 0.80, "n": 38, "corr": None}, {"acc": 0.81, "n": 39, "corr": None}
    assert reproduce.differences(old, old, None) == []
    assert len(reproduce.differences(old, new, None)) == 2  # exact: both differ
    assert reproduce.differences(old, new, {"acc": 0.02, "n": 2}) == []
    assert reproduce.differences(old, new, {"acc": 0.005, "n": 2}) == [
        "acc: committed 0.8, now 0.81 (differs by +0.01, tolerance 0.005)"]
    assert reproduce.differences(old, new, {"acc": 0.02}) == ["n: no tolerance recorded for it (committed 38, now 39)"]


def test_a_count_whose_seeds_all_agreed_may_still_move_by_the_resolution_of_one_seed():
    # margins' models_fitted: 13, 13, 13 per seed recorded a tolerance of 0.039 (sd 0); on another
    # CPU one model of 48 missed the fit criterion: 39 -> 38 is one unit in one seed
    tol = {"models_fitted": 0.0391, "margin": 0.11}
    assert reproduce.differences({"models_fitted": 39}, {"models_fitted": 38}, tol) == []
    assert reproduce.differences({"models_fitted": 39}, {"models_fitted": 33}, tol) == [
        "models_fitted: committed 39, now 33 (differs by -6, tolerance 5.66)"]
    # the floor is for counts only: a float metric keeps its recorded tolerance
    assert reproduce.differences({"margin": 0.5}, {"margin": 0.65}, tol) == [
        "margin: committed 0.5, now 0.65 (differs by +0.15, tolerance 0.11)"]
    # and z scales it
    assert reproduce.differences({"models_fitted": 39}, {"models_fitted": 36}, tol, z=2.0) == [
        "models_fitted: committed 39, now 36 (differs by -3, tolerance 2.83)"]


locked = _load("locked")


def test_the_lock_check_names_every_difference():
    lock = locked.pins("# a comment\nNumPy==2.1.0\npandas==2.2.3  # why\n\nscipy==1.14.1\n")
    assert lock == {"numpy": "2.1.0", "pandas": "2.2.3", "scipy": "1.14.1"}
    have = {"numpy": "2.1.0", "pandas": "2.3.0", "seaborn": "0.13.2", "pip": "25.0", "genstudy": "0.1.0"}
    assert locked.differences(lock, have) == [
        "pandas: installed 2.3.0, the lock pins 2.2.3",
        "scipy: installed nothing, the lock pins 1.14.1",
        "seaborn: installed 0.13.2, the lock pins nothing"]  # pip and the project itself are not pinned
    assert locked.differences(lock, {**lock, "pip": "1"}) == []


def test_the_committed_lock_pins_every_package_of_this_environment():
    """The suite runs in the environment `make` installed from the lock: they agree."""
    assert locked.differences(locked.pins(locked.LOCK.read_text()), locked.installed()) == []
