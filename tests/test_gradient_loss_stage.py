"""The gradient_loss stage refuses a baseline trained on another subset or seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from conftest import section, stage_params
from genstudy import models, outputs
from genstudy.experiments.gradient_loss import compute as stage
from genstudy.params import ParamsError


def _params(**kw):
    return stage_params("gradient_loss", **{**dict(seeds=[0], train_size=10000), **kw})


@pytest.fixture
def baseline_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = models.seeded(0, models.convnet_e2)
    outputs.save_model(Path("models/baselines/convnet_s0.pt"), model, model="convnet", seed=0,
                       params={"epochs": 20, "train_size": 10000})
    return model


def test_matching_baseline_loads(baseline_dir):
    model, trained = stage.load_baseline(0, _params(), "cpu")
    assert trained["train_size"] == 10000
    for k, v in model.state_dict().items():
        assert torch.equal(v, baseline_dir.state_dict()[k])


def test_other_train_size_is_refused_with_a_clear_message(baseline_dir):
    with pytest.raises(ParamsError, match=r"train_size=10000, but this stage trains seed 0 on train_size=500"):
        stage.load_baseline(0, _params(train_size=500), "cpu")


def test_missing_seed_is_refused(baseline_dir):
    with pytest.raises(ParamsError, match="must be among baselines.seeds"):
        stage.load_baseline(1, _params(seeds=[1]), "cpu")


def test_params_reject_negative_sigma_and_unknown_keys():
    with pytest.raises(ValidationError, match=r"sigmas\.0\n  Input should be greater than or equal to 0"):
        _params(sigmas=[-0.1])
    with pytest.raises(ValidationError, match=r"sigma\n  Extra inputs are not permitted"):
        _params(sigma=[0.1])


def test_params_require_every_key():
    for key in ("sigmas", "noise_seed", "clip", "train_size", "test_size"):
        sec = section("gradient_loss")
        del sec[key]
        with pytest.raises(ValidationError, match=rf"{key}\n  Field required"):
            stage.Params.model_validate(sec)
