"""E4's pieces: the task split, copying layers, freezing, two-phase fine-tuning; the stages end to end."""

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import stage_params
from genstudy import data, models
from genstudy.experiments.transfer import compute, present
from genstudy.report import Outputs, Section
from genstudy.training import fit, make_optimizer
from genstudy.transfer import fine_tune, reuse_layers, state_equal, transferred_model


def test_split_tasks_label_mapping_on_a_hand_made_example():
    y = torch.tensor([0, 4, 5, 9, 3, 6, 5, 4, 7, 8, 1, 2])
    x = torch.arange(len(y), dtype=torch.float32).view(-1, 1, 1, 1)  # x remembers its position
    a, b = data.split_tasks(data.Tensors(x, y), (4, 5))
    # A: classes 0,1,2,3 keep their label; 6->4, 7->5, 8->6, 9->7; order kept
    assert a.x.flatten().tolist() == [0, 3, 4, 5, 8, 9, 10, 11]
    assert a.y.tolist() == [0, 7, 3, 4, 5, 6, 1, 2]
    # B: coat (4) -> 0, sandal (5) -> 1; order kept
    assert b.x.flatten().tolist() == [1, 2, 6, 7]
    assert b.y.tolist() == [0, 1, 1, 0]


def test_split_tasks_on_fashion_mnist_sized_labels():
    y = torch.arange(10).repeat(3)
    a, b = data.split_tasks(data.Tensors(torch.zeros(30, 1, 1, 1), y))
    assert sorted(a.y.unique().tolist()) == list(range(8)) and len(a) == 24
    assert sorted(b.y.unique().tolist()) == [0, 1] and len(b) == 6


def source_model():
    return models.seeded(0, models.mlp, [784, 20, 15, 10, 5, 8], init="glorot_uniform")


def toy_task(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    return data.Tensors(x, (x.flatten(1)[:, :10].sum(1) > 0).long())


def test_transferred_model_copies_layers_up_to_the_named_one():
    src = source_model()
    model, reused = transferred_model(src, "act3", [7, 1])
    assert reused == ["flatten", "fc1", "act1", "fc2", "act2", "fc3", "act3"]
    assert [n for n, _ in model.named_children()][len(reused):] == ["fc4", "act4", "fc5"]
    assert model.fc4.in_features == 10 and model.fc5.out_features == 1
    for name in ("fc1", "fc2", "fc3"):
        assert torch.equal(getattr(model, name).weight, getattr(src, name).weight)
        assert getattr(model, name).weight.data_ptr() != getattr(src, name).weight.data_ptr()
    with pytest.raises(ValueError):
        reuse_layers(src, "nope")


def test_frozen_phase_keeps_reused_weights_then_second_phase_changes_them():
    src = source_model()
    model, reused = transferred_model(src, "act3", [7, 1])
    reused_before = copy.deepcopy(reuse_layers(model, "act3"))
    head_before = model.fc5.weight.clone()
    snapshots = {}

    def snapshot(epoch, metrics):
        snapshots[epoch] = copy.deepcopy(model)

    results = fine_tune(model, reused, toy_task(), frozen_epochs=2, unfrozen_epochs=2,
                        batch_size=16, optimizer="sgd", lr=0.1, seed=0,
                        callbacks=[snapshot], progress=False)
    assert len(results) == 2 and sorted(snapshots) == [1, 2, 3, 4]
    assert [h["epoch"] for r in results for h in r.history] == [1, 2, 3, 4]
    for epoch in (1, 2):  # frozen: bit for bit unchanged; the head trains
        assert state_equal(reuse_layers(snapshots[epoch], "act3"), reused_before)
    assert not torch.equal(snapshots[2].fc5.weight, head_before)
    after = reuse_layers(snapshots[4], "act3")
    for name in ("fc1", "fc2", "fc3"):  # unfrozen: every reused layer moves
        assert not torch.equal(getattr(after, name).weight, getattr(reused_before, name).weight)
    assert all(p.requires_grad for p in model.parameters())


def test_source_model_unchanged_by_transfer_training():
    src = source_model()
    fit(src, toy_task(seed=1), epochs=1, batch_size=16, seed=0, progress=False,
        optimizer=make_optimizer(src.parameters(), "sgd", 0.1),
        loss="ce")
    before = copy.deepcopy(src)
    model, reused = transferred_model(src, "act3", [7, 1])
    fine_tune(model, reused, toy_task(), frozen_epochs=1, unfrozen_epochs=2, batch_size=16,
              optimizer="sgd", lr=0.1, seed=0, progress=False)
    assert state_equal(src, before)
    assert all(p.requires_grad for p in src.parameters())


def test_fine_tune_is_repeatable():
    runs = []
    for _ in range(2):
        model, reused = models.seeded(3, transferred_model, source_model(), "act3", [7, 1])
        fine_tune(model, reused, toy_task(), frozen_epochs=1, unfrozen_epochs=1, batch_size=16,
                  optimizer="sgd", lr=0.1, seed=5, progress=False)
        runs.append(model)
    assert state_equal(*runs)


def test_run_writes_its_outputs_and_the_section_reads_them(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)

    def fake(n):
        return data.Tensors(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10)
    monkeypatch.setattr(data, "load", lambda name: (fake(400), fake(200)))
    p = stage_params("transfer", seeds=[0, 1], a_train_size=200, b_train_size=40,
                     model_a=dict(sizes=[784, 32, 16, 8], epochs=1),
                     model_b=dict(sizes=[784, 32, 16, 1], epochs=2),
                     transferred=dict(reuse_upto="act2", head=[8, 1], frozen_epochs=1, unfrozen_epochs=1),
                     fair_control=dict(max_epochs=200))
    out = tmp_path / "transfer"
    compute.run(p, out, tmp_path / "models")
    (out / "run.json").write_text(json.dumps({"profile": "full", "params": p.model_dump(mode="json")}))
    df = Outputs(tmp_path, "transfer").table()
    assert len(df) == 8 and set(df.arm) == {"model_a", "scratch", "transferred", "scratch_fit"}
    assert len(list((tmp_path / "models").glob("*.pt"))) == 8
    # the fair control trains on until it fits the B images as well as the transferred model
    b = df[df.task == "B"].pivot(index="seed", columns="arm", values="train_acc")
    fit_epochs = df[df.arm == "scratch_fit"].set_index("seed").epochs
    assert ((b.scratch_fit >= b.transferred) | (fit_epochs == 200)).all()
    assert (fit_epochs >= df[df.arm == "scratch"].set_index("seed").epochs).all() or (b.scratch >= b.transferred).any()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["diverged_runs"] == 0 and {"scratch_test_acc", "transferred_test_acc", "gain",
                                              "scratch_fit_test_acc", "gain_over_fair_control"} <= set(metrics)
    present.draw(Outputs(tmp_path, "transfer"), {})
    assert {f.name for f in (out / "figures").glob("*.png")} == {"arms.png", "learning_curves.png"}
    refs = yaml.safe_load((Path(__file__).resolve().parents[1] / "references.yaml").read_text())
    s = present.section(Outputs(tmp_path, "transfer"), {"transfer": refs["transfer"]})  # its own references only
    assert isinstance(s, Section) and "transfer helps at the same fit (transferred − fair control)" in s.verdict
    assert "transferred model (1 frozen + 1 epochs)" in s.verdict and "(from scratch 2)" in s.verdict
    assert any("the notebook's protocol" in r.quantity for r in s.rows)
