"""The sweep and margins stages validate their params before any work."""

from pathlib import Path

import pytest
import yaml

from genstudy import params
from genstudy.experiments.margins import compute as margins
from genstudy.experiments.sweep import compute as sweep

REPO = Path(__file__).resolve().parents[1]


def _load(tmp_path, stage, schema, change):
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    change(doc[stage])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    return params.load(stage, schema, tmp_path / "params.yaml")


@pytest.mark.parametrize("stage", ["sweep", "margins"])
def test_defaults_validate_and_bad_values_are_rejected(tmp_path, stage):
    schema = {"sweep": sweep, "margins": margins}[stage].Params
    assert _load(tmp_path, stage, schema, lambda s: None)
    with pytest.raises(params.ParamsError, match=rf"{stage}\.lrs\.1: Input should be greater than 0"):
        _load(tmp_path, stage, schema, lambda s: s.update(lrs=[0.1, -1.0]))
    with pytest.raises(params.ParamsError, match=rf"{stage}\.batch_size: unknown key .*did you mean 'batch_sizes'"):
        _load(tmp_path, stage, schema, lambda s: s.update(batch_size=[2]))
    with pytest.raises(params.ParamsError, match=rf"{stage}\.batch_sizes: List should have at least 1 item"):
        _load(tmp_path, stage, schema, lambda s: s.update(batch_sizes=[]))
    # no defaults in code: a deleted key is an error naming it, never a value typed in the schema
    with pytest.raises(params.ParamsError, match=rf"{stage}\.hidden: required key is missing"):
        _load(tmp_path, stage, schema, lambda s: s.pop("hidden"))


def test_margins_needs_deepfool_examples_within_the_subset(tmp_path):
    schema = margins.Params
    with pytest.raises(params.ParamsError, match=r"deepfool.n_examples \(1000\) must not exceed train_size \(500\)"):
        _load(tmp_path, "margins", schema, lambda s: s.update(train_size=500))
