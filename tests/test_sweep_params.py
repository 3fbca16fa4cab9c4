"""The sweep and margins stages validate their params before any work."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from genstudy import params

REPO = Path(__file__).resolve().parents[1]


def _schema(stage, name):
    spec = importlib.util.spec_from_file_location(f"stage_{stage}", REPO / "stages" / f"{stage}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, name)


def _load(tmp_path, stage, schema, change):
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    change(doc[stage])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    return params.load(stage, schema, tmp_path / "params.yaml")


@pytest.mark.parametrize("stage,name", [("sweep", "SweepParams"), ("margins", "MarginsParams")])
def test_defaults_validate_and_bad_values_are_rejected(tmp_path, stage, name):
    schema = _schema(stage, name)
    assert _load(tmp_path, stage, schema, lambda s: None)
    with pytest.raises(params.ParamsError, match="lrs"):
        _load(tmp_path, stage, schema, lambda s: s.update(lrs=[0.1, -1.0]))
    with pytest.raises(params.ParamsError, match="unknown key"):
        _load(tmp_path, stage, schema, lambda s: s.update(batch_size=[2]))
    with pytest.raises(params.ParamsError, match="batch_sizes"):
        _load(tmp_path, stage, schema, lambda s: s.update(batch_sizes=[]))


def test_margins_needs_deepfool_examples_within_the_subset(tmp_path):
    schema = _schema("margins", "MarginsParams")
    with pytest.raises(params.ParamsError, match="n_examples"):
        _load(tmp_path, "margins", schema, lambda s: s.update(train_size=500))
