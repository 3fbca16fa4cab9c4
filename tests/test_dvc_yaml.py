"""dvc.yaml declares what each stage really depends on, both ways.

dvc.yaml is generated from the stage registry (``python -m genstudy.pipeline``): each stage's code
deps are exactly the genstudy modules its command imports, its params exactly the sections it
reads. These tests keep the committed file equal to what the generator writes, and the split
between compute and presentation: no compute stage imports presentation code, so a change of
wording, threshold or figure style never reruns a training.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from genstudy import cli, experiments, pipeline, render

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_dvc_yaml_is_what_the_stage_registry_generates(capsys):
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        code = pipeline.main(["--check"])
    finally:
        os.chdir(cwd)
    assert code == 0, capsys.readouterr().out[-4000:]


@pytest.mark.parametrize("stage", [*cli.COMPUTE, "check"])
def test_no_compute_stage_imports_presentation_code(stage):
    files = pipeline.imported("check" if stage == "check" else "compute", stage, REPO)
    assert not pipeline.presentation_modules(files), stage
    assert set(files) <= {d for d in STAGES[stage]["deps"] if isinstance(d, str)}


@pytest.mark.parametrize("name", experiments.NAMES)
def test_an_experiment_imports_no_other_experiment(name):
    for kind in ("compute", "present"):
        files = pipeline.imported(kind, name, REPO)
        others = [f for f in files if f.startswith("src/genstudy/experiments/")
                  and f.split("/")[3] not in (name, "__init__.py")]
        assert not others, f"{kind} {name} imports {others}"


def test_the_stage_lists_agree():
    assert cli.NAMES == experiments.NAMES == render.NAMES == pipeline.NAMES


def test_each_presentation_stage_tracks_its_own_references_only():
    for name in experiments.NAMES:
        assert STAGES[f"present-{name}"]["params"] == [{"references.yaml": [name]}]
