"""The one training loop: batching, repeatability, divergence, hooks, logging."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from genstudy import models, outputs
from genstudy.data import Tensors
from genstudy.training import (evaluate, fit, loss_fn, make_optimizer, objective_from_loss,
                               predictions)


def blobs(n=256, seed=0) -> Tensors:
    """Ten well-separated Gaussian blobs shaped as 28x28 images."""
    centers = torch.randn(10, 784, generator=torch.Generator().manual_seed(123)) * 3
    g = torch.Generator().manual_seed(seed)  # the noise: train and test draw different points
    y = torch.arange(n) % 10
    x = centers[y] + 0.3 * torch.randn(n, 784, generator=g)
    return Tensors(x.view(n, 1, 28, 28), y)


def train_once(seed=0, **kw):
    data = blobs()
    model = models.seeded(seed, models.mlp, [784, 32, 10])
    opt = make_optimizer(model.parameters(), kw.pop("optimizer", "sgd"), kw.pop("lr", 0.05), momentum=0.9)
    res = fit(model, data, epochs=kw.pop("epochs", 3), batch_size=kw.pop("batch_size", 20),
              optimizer=opt, seed=seed, eval_sets={"test": blobs(seed=1)}, progress=False, **kw)
    return model, res


def test_learns_a_separable_problem_and_reports_every_epoch():
    model, res = train_once(epochs=5)
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4, 5]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "time"} <= set(res.history[0])
    assert res.final["test_acc"] > 0.95 and not res.diverged and res.diverged_reason == ""
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.wall_time >= sum(res.epoch_times) > 0


def test_same_seed_same_result_bit_for_bit():
    m1, r1 = train_once(seed=7)
    m2, r2 = train_once(seed=7)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    strip = [{k: v for k, v in h.items() if k != "time"} for h in r1.history]
    assert strip == [{k: v for k, v in h.items() if k != "time"} for h in r2.history]
    m3, _ = train_once(seed=8)
    assert not torch.equal(m1.fc1.weight, m3.fc1.weight)


def test_dropout_masks_are_repeatable_too():
    def run():
        data = blobs()
        model = models.seeded(0, models.mlp, [784, 32, 10], dropout=0.5)
        opt = make_optimizer(model.parameters(), "adam", 1e-3)
        fit(model, data, epochs=2, batch_size=32, optimizer=opt, seed=3, progress=False)
        return model.fc1.weight.clone()
    assert torch.equal(run(), run())


def test_every_example_is_seen_once_per_epoch_including_the_short_last_batch():
    data = blobs(n=103)
    data = Tensors(data.x, torch.arange(103))  # labels = example ids
    seen, sizes = [], []
    base = objective_from_loss("ce")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 103))

    def spy(model, x, y):
        seen.extend(y.tolist())
        sizes.append(len(y))
        return base(model, x, y)
    opt = make_optimizer(model.parameters(), "sgd", 0.01)
    fit(model, data, epochs=2, batch_size=25, optimizer=opt, seed=0, objective=spy, progress=False)
    assert sizes == [25, 25, 25, 25, 3] * 2
    assert sorted(seen[:103]) == list(range(103)) and sorted(seen[103:]) == list(range(103))
    assert seen[:103] != seen[103:]  # a new permutation each epoch


def test_divergence_is_recorded_not_raised():
    model, res = train_once(lr=1e6, epochs=10, optimizer="sgd")
    assert res.diverged and 1 <= res.diverged_epoch <= 10
    assert len(res.history) == res.diverged_epoch - 1  # finished epochs only
    assert len(res.epoch_times) == res.diverged_epoch
    assert res.diverged_reason in (f"loss nan at epoch {res.diverged_epoch}",
                                   f"loss inf at epoch {res.diverged_epoch}")


def full_batch(lr, **kw):
    """Plain SGD on all of ``blobs`` at once: epoch 1's loss is the untrained model's."""
    data = blobs()
    model = models.seeded(0, models.mlp, [784, 32, 10])
    opt = make_optimizer(model.parameters(), "sgd", lr)
    return fit(model, data, epochs=4, batch_size=len(data), optimizer=opt, seed=0,
               progress=False, **kw)


def test_a_finite_blow_up_is_caught_by_the_factor():
    res = full_batch(1e6)  # loss 2.83, then 3.1e13: finite, NaN only at epoch 4
    assert res.diverged and res.diverged_epoch == 2 and len(res.history) == 1
    assert re.fullmatch(r"loss 3\.\d+e\+13 > 10 x the first epoch's 2\.83 at epoch 2",
                        res.diverged_reason), res.diverged_reason
    # Without the factor only the overflow two epochs later would have stopped it.
    off = full_batch(1e6, diverge_factor=None)
    assert off.diverged and off.diverged_epoch == 4 and "x the first" not in off.diverged_reason
    # lr 1e3 never overflows within 4 epochs (8e21): without the factor it passed as a run.
    assert not full_batch(1e3, diverge_factor=None).diverged
    assert full_batch(1e3).diverged_epoch == 2


def fit_scripted(losses, **kw):
    """A run whose epoch i reports loss ``losses[i - 1]`` (one batch per epoch)."""
    data, model = blobs(n=20), models.mlp([784, 4, 10])
    script = iter(losses)

    def objective(model, x, y):
        logits = model(x)
        return logits.sum() * 0 + next(script), logits
    return fit(model, data, epochs=len(losses), batch_size=len(data), seed=0, progress=False,
               optimizer=make_optimizer(model.parameters(), "sgd", 0.0), objective=objective, **kw)


def test_divergence_threshold_nan_and_switch_off():
    ok = fit_scripted([2.0, 19.9, 1.0])  # just under 10 x: a bad epoch, not a diverged run
    assert not ok.diverged and len(ok.history) == 3
    bad = fit_scripted([2.0, 19.9, 20.1, 1.0])
    assert (bad.diverged_epoch, len(bad.history)) == (3, 2)
    assert bad.diverged_reason == "loss 20.1 > 10 x the first epoch's 2 at epoch 3"
    assert fit_scripted([2.0, 5.0, 1.0], diverge_factor=2.0).diverged_epoch == 2
    nan = fit_scripted([2.3, 1.0, float("nan"), 0.5])
    assert nan.diverged_reason == "loss nan at epoch 3" and len(nan.history) == 2
    assert fit_scripted([float("inf")], diverge_factor=None).diverged_reason == "loss inf at epoch 1"
    assert not fit_scripted([2.0, 1e6, 1.0], diverge_factor=None).diverged


def test_objective_constraints_and_callbacks_are_called():
    calls = {"constraint": 0, "callback": []}

    def clamp(model):
        calls["constraint"] += 1
        with torch.no_grad():
            model.fc1.weight.clamp_(-0.01, 0.01)
    model, res = train_once(epochs=2, batch_size=64, constraints=[clamp],
                            callbacks=[lambda e, m: calls["callback"].append((e, m["train_loss"]))])
    assert calls["constraint"] == 2 * 4  # after every optimizer step
    assert model.fc1.weight.abs().max() <= 0.01
    assert [e for e, _ in calls["callback"]] == [1, 2]


def test_frozen_parameters_are_left_out_of_the_optimizer():
    model = models.mlp([784, 8, 10])
    model.fc1.requires_grad_(False)
    opt = make_optimizer(model.parameters(), "nadam", 1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == 2


def test_losses_match_their_formulas():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    y = torch.tensor([0, 2])
    assert loss_fn("ce")(logits, y) == pytest.approx(F.cross_entropy(logits, y).item())
    p = logits.softmax(-1)
    onehot = F.one_hot(y, 3).float()
    assert loss_fn("mse_softmax")(logits, y).item() == pytest.approx(((onehot - p) ** 2).mean().item())
    z = torch.tensor([[0.3], [-2.0]])
    yb = torch.tensor([1, 0])
    expected = -(torch.log(torch.sigmoid(z[0])) + torch.log(1 - torch.sigmoid(z[1]))) / 2
    assert loss_fn("bce")(z, yb).item() == pytest.approx(expected.item(), rel=1e-6)
    assert predictions(z).tolist() == [1, 0] and predictions(logits).tolist() == [0, 2]
    with pytest.raises(ValueError, match="unknown loss"):
        loss_fn("hinge")


def test_evaluate_restores_the_training_mode_and_counts_correctly():
    model = models.mlp([784, 10])
    data = blobs(n=50)
    model.train()
    loss, acc = evaluate(model, data, batch_size=7)
    assert model.training
    logits = model(data.x)
    assert acc == pytest.approx((logits.argmax(-1) == data.y).float().mean().item())
    assert loss == pytest.approx(F.cross_entropy(logits, data.y).item(), rel=1e-5)


def test_curves_table_holds_one_row_per_run_and_epoch_without_times(tmp_path):
    curves = outputs.Curves()
    for run in ("a", "b"):
        train_once(epochs=3, callbacks=[curves.callback(run)])
    curves.write(tmp_path / "curves.csv")
    df = pd.read_csv(tmp_path / "curves.csv")
    assert list(df.columns[:2]) == ["run", "epoch"] and "time" not in df
    assert df.groupby("run").epoch.apply(list).to_dict() == {"a": [1, 2, 3], "b": [1, 2, 3]}
    assert df["test_acc"].between(0, 1).all()
