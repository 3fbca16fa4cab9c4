"""Every stage, and its report section, completes when all its runs diverge, whatever the optimizer
(flatness and transfer train with SGD here).

Each experiment runs on a few hundred random images with a learning rate that blows its loss
up (lr 1e6 or more), through its own `run()`, then its presentation stage (figures and
section): the stage must finish, mark the runs diverged, write strict JSON, and the report must
say so instead of crashing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import stage_params
from genstudy import data, experiments, presentation, render, stages

REPO = Path(__file__).resolve().parents[1]
BIG = 1e6

SETTINGS = {  # the smoke profile's sizes, every learning rate huge
    "baselines": dict(seeds=[0, 1], test_size=100,
                      convnet=dict(epochs=2, batch_size=50, optimizer="sgd", lr=BIG, momentum=0.0, train_size=200),
                      mlp=dict(epochs=2, batch_size=50, optimizer="sgd", lr=BIG, momentum=0.0, train_size=200)),
    "gradient_loss": dict(seeds=[0, 1], epochs=2, batch_size=50, optimizer="sgd", lr=BIG, momentum=0.0,
                          train_size=200,
                          test_size=100, sigmas=[0.0, 0.1]),
    "flatness": dict(seeds=[0, 1], train_size=200, test_size=100, batch_sizes=[8, 64], epochs=3,
                     optimizer="sgd", lr=BIG, fused=False, sharpness=dict(steps=2)),
    "regularization": dict(seeds=[0, 1], train_size=200, val_size=100, test_size=100, mc_passes=2,
                           training=dict(epochs=2, batch_size=50, optimizer="sgd", lr=BIG, momentum=0.0),
                           variants=["none", "dropout", "mc_dropout"],
                           definitions={"none": {}, "dropout": {"dropout": 0.2},
                                        "mc_dropout": {"mc_dropout_of": "dropout"}}),
    "transfer": dict(seeds=[0, 1], a_train_size=300, b_train_size=50,
                     model_a=dict(sizes=[784, 32, 16, 8], epochs=2, batch_size=32, optimizer="sgd", lr=BIG,
                                  momentum=0.0),
                     model_b=dict(sizes=[784, 32, 16, 1], epochs=2, batch_size=32, optimizer="sgd", lr=BIG,
                                  momentum=0.0),
                     transferred=dict(reuse_upto="act2", head=[8, 1], frozen_epochs=1, unfrozen_epochs=1,
                                      lr=BIG)),
    "sweep": dict(seeds=[0, 1], train_size=200, test_size=100, lrs=[BIG, 10 * BIG], batch_sizes=[32, 64],
                  lr_sweep=dict(batch_size=64, epochs=2), batch_sweep=dict(lr=BIG, epochs=2),
                  grid_epochs=3, eval_every=1),
    "margins": dict(seeds=[0, 1], train_size=200, test_size=100, lrs=[BIG], batch_sizes=[32, 64], epochs=3,
                    eval_every=1, deepfool=dict(n_examples=50)),
    "keskar": dict(seeds=[0, 1], depth=1, width=16, train_size=200, test_size=100, lr=BIG, max_epochs=2,
                   large_fraction=0.5, small_batch=16, lbfgs_iterations=2, ascent_steps=2, threads=None),
    "probes": dict(seeds=[0, 1],
                   probe=dict(train_size=120, test_size=60, val_fraction=0.2, epochs=2, patience=1, batch_size=30,
                              lr=0.01, lr_features=20, cache_mb=8),
                   convnet=dict(epochs=1, batch_size=64, optimizer="sgd", lr=BIG, momentum=0.9, lr_decay=1.0,
                                train_size=128),
                   deep_mlp=dict(seeds=[0, 1], depth=4, width=8, skip_layer=2, negative_slope=0.01,
                                 init="he_normal", snapshot_steps=[0, 2], batch_size=64, optimizer="sgd", lr=BIG,
                                 lr_decay=1.0)),
}


@pytest.fixture
def fake_data(monkeypatch, tmp_path):
    g = torch.Generator().manual_seed(0)

    def fake(n):
        return data.Tensors(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10)
    train, test = fake(400), fake(200)
    monkeypatch.setattr(data, "load", lambda name, root=None: (train, test))
    monkeypatch.chdir(tmp_path)  # models/ and reports/ of the run land here
    return tmp_path


def run_stage(name: str, root: Path):
    p = stage_params(name, **SETTINGS[name])
    out, models = root / "reports" / name, root / "models" / name
    stages.stage(name)[1](p, out, models)
    (out / "run.json").write_text(json.dumps({"profile": "full", "params": p.model_dump(mode="json")}))
    return out


@pytest.mark.parametrize("name", [n for n in experiments.NAMES if n != "gradient_loss"] + ["gradient_loss"])
def test_every_stage_completes_when_all_its_runs_diverge(fake_data, name):
    if name == "gradient_loss":  # reads the baselines stage's models
        run_stage("baselines", fake_data)
    out = run_stage(name, fake_data)
    json.loads((out / "metrics.json").read_text())  # strict JSON: NaN would not parse... as written
    assert "NaN" not in (out / "metrics.json").read_text()
    section = presentation.present(name, REPO / "references.yaml", fake_data / "reports")
    assert section.verdict and section.rows
    assert json.loads((out / "section.json").read_text())["verdict"] == section.verdict
    # and the report renders the section, saying how many runs diverged
    summary = {"profile": "full", "stages": [], "total_s": 0.0, "versions": {}, "overrides": []}
    html, md = render.render_html([section], summary), render.render_markdown([section], summary)
    assert "runs that diverged" in html and f"<h2 id='{name}'>" in html
    assert "runs that diverged" in md and f"## {section.title}" in md
