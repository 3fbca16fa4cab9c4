"""Sweep planning: shared runs train once, a shorter sweep reads a longer run's first epochs."""

import math

import torch

from genstudy import lr_batch, models
from genstudy.data import Tensors
from genstudy.stacked import fit_stack
from genstudy.training import RunResult


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    return Tensors(x, (x.flatten(1) @ torch.randn(64, 3, generator=g)).argmax(1))


TRAIN, TEST = _data(120, 0), _data(60, 1)


def test_plan_trains_shared_runs_once_for_the_longest_sweep():
    sweeps = [lr_batch.Sweep("lr", [(0.1, 8, 0), (0.01, 8, 0)], 2),
              lr_batch.Sweep("grid", [(0.1, 8, 0), (0.01, 8, 0), (0.1, 16, 0)], 4)]
    runs = lr_batch.plan(sweeps, eval_every=3)
    assert set(runs) == {(0.1, 8, 0), (0.01, 8, 0), (0.1, 16, 0)}
    assert runs[(0.1, 8, 0)] == (4, {2, 3, 4})  # evaluated where each sweep ends, and every 3
    assert runs[(0.1, 16, 0)] == (4, {3, 4})


def test_a_shorter_run_equals_the_first_epochs_of_a_longer_one():
    def run(epochs):
        ms = [models.seeded(s, models.mlp, [64, 16, 3]) for s in (0, 1)]
        return fit_stack(ms, TRAIN, epochs=epochs, batch_size=8, lrs=[0.05, 0.1], seeds=[0, 1],
                         momentum=0.9, eval_sets={"test": TEST}, progress=False)
    short, long = run(2), run(5)
    for s, l in zip(short, long):
        for a, b in zip(s.history, l.history[:2]):
            assert {k: v for k, v in a.items() if k != "time"} == \
                   {k: v for k, v in b.items() if k != "time"}
        row_s, row_l = lr_batch.row("x", (0.05, 8, 0), 2, s), lr_batch.row("x", (0.05, 8, 0), 2, l)
        for key in ("final_train_acc", "final_test_acc", "best_test_acc", "best_train_loss"):
            assert row_s[key] == row_l[key]
        assert row_l["run_epochs"] == 5 and row_s["run_epochs"] == 2


def test_row_of_a_diverged_run():
    res = RunResult(history=[{"epoch": 1, "train_loss": 2.0, "train_acc": 0.3,
                              "test_loss": 2.1, "test_acc": 0.25}],
                    diverged=True, diverged_epoch=2, epoch_times=[1.0, 1.0])
    r = lr_batch.row("grid", (0.5, 2, 0), 3, res)
    assert r["diverged"] and r["diverged_epoch"] == 2
    assert math.isnan(r["final_test_acc"]) and r["best_test_acc"] == 0.25
    early = lr_batch.row("lr", (0.5, 2, 0), 1, res)  # read before it diverged
    assert not early["diverged"] and early["diverged_epoch"] == 0 and early["final_test_acc"] == 0.25

