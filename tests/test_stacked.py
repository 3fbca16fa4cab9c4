"""The stacked trainer: a stack equals each model trained alone; divergence stays in its model."""

import re

import pytest
import torch

from genstudy import models
from genstudy.data import Tensors
from genstudy.objectives import max_norm, penalized
from genstudy.stacked import Member, StackedMLP, evaluate_stack, fit_stack, fit_stack_autograd
from genstudy.training import evaluate, fit, make_optimizer


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    w = torch.randn(64, 4, generator=g)
    y = (x.flatten(1) @ w).argmax(1)  # a learnable labelling
    return Tensors(x, y)


TRAIN, TEST = _data(200, 0), _data(100, 1)
SIZES = [64, 32, 16, 4]


def _build(seed):
    return models.seeded(seed, models.mlp, SIZES)


def _alone(seed, lr, epochs=3, batch=16, momentum=0.9):
    m = _build(seed)
    res = fit(m, TRAIN, epochs=epochs, batch_size=batch, seed=seed, eval_sets={"test": TEST},
              optimizer=make_optimizer(m.parameters(), "sgd", lr, momentum), progress=False)
    return m, res


@pytest.mark.parametrize("max_stack", [None, 3])  # one stack; stacks of 3 and 1
def test_stack_equals_each_model_trained_alone_sgd_momentum(max_stack):
    lrs, seeds = [0.01, 0.1, 0.05, 0.2], [0, 0, 1, 2]
    stacked = [_build(s) for s in seeds]
    seen = []
    results = fit_stack(stacked, TRAIN, epochs=3, batch_size=16, lrs=lrs, seeds=seeds,
                        momentum=0.9, eval_sets={"test": TEST}, max_stack=max_stack,
                        callbacks=[lambda k, ep, m: seen.append((k, ep, m["train_loss"]))],
                        progress=False)
    # every model's callbacks carry its own index and metrics, whatever stack it trained in
    assert sorted((k, ep) for k, ep, _ in seen) == [(k, ep) for k in range(4) for ep in (1, 2, 3)]
    assert all(loss == results[k].history[ep - 1]["train_loss"] for k, ep, loss in seen)
    for model, lr, seed, res in zip(stacked, lrs, seeds, results):
        alone, ref = _alone(seed, lr)
        assert not res.diverged and len(res.history) == len(ref.history) == 3
        for a, b in zip(res.history, ref.history):
            assert set(a) == set(b)  # the same metric names as fit
            for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
                assert a[key] == pytest.approx(b[key], abs=1e-5), key
        for p, q in zip(model.parameters(), alone.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_short_last_batch_and_eval_every():
    # 200 examples at batch 64: the last batch holds 8, as in fit.
    m = [_build(3)]
    res = fit_stack(m, TRAIN, epochs=4, batch_size=64, lrs=[0.05], seeds=[3], momentum=0.9,
                    eval_sets={"test": TEST}, eval_epochs={3}, progress=False)[0]
    alone, ref = _alone(3, 0.05, epochs=4, batch=64)
    assert [("test_acc" in h) for h in res.history] == [False, False, True, True]
    assert res.final["train_loss"] == pytest.approx(ref.final["train_loss"], abs=1e-5)
    assert res.final["test_acc"] == pytest.approx(evaluate(alone, TEST)[1])


def test_divergence_is_isolated_to_its_model():
    lrs, seeds = [0.05, 1e30, 0.1], [0, 0, 1]  # 1e30: weights overflow at once
    stacked = [_build(s) for s in seeds]
    results = fit_stack(stacked, TRAIN, epochs=3, batch_size=16, lrs=lrs, seeds=seeds,
                        momentum=0.9, eval_sets={"test": TEST}, progress=False)
    bad = results[1]
    assert bad.diverged and bad.diverged_epoch is not None and bad.diverged_epoch >= 1
    assert len(bad.history) == bad.diverged_epoch - 1  # only finite epochs are recorded
    for i in (0, 2):
        alone, ref = _alone(seeds[i], lrs[i])
        assert not results[i].diverged and len(results[i].history) == 3
        for a, b in zip(results[i].history, ref.history):
            assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
            assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-5)
        for p, q in zip(stacked[i].parameters(), alone.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    # fit marks the same model diverged at the same epoch
    _, ref_bad = _alone(0, 1e30)
    assert ref_bad.diverged and ref_bad.diverged_epoch == bad.diverged_epoch


def test_a_finite_blow_up_leaves_the_stack_alone():
    # Full batch, lr 1e6: the loss goes 1.3, then 4e15 (finite): the factor catches it.
    lrs, seeds = [0.05, 1e6, 0.1], [0, 1, 2]
    stacked = [_build(s) for s in seeds]
    results = fit_stack(stacked, TRAIN, epochs=3, batch_size=200, lrs=lrs, seeds=seeds,
                        momentum=0.9, eval_sets={"test": TEST}, progress=False)
    bad = results[1]
    assert bad.diverged and bad.diverged_epoch == 2 and len(bad.history) == 1
    first = f"{bad.first_loss:.3g}"
    assert re.fullmatch(rf"loss \d\.\d+e\+1\d > 10 x the first epoch's {first} at epoch 2",
                        bad.diverged_reason), bad.diverged_reason
    _, ref_bad = _alone(1, 1e6, batch=200)  # fit judges the same run the same way
    assert ref_bad.diverged_epoch == 2 and ref_bad.diverged_reason.endswith(bad.diverged_reason[-40:])
    for i in (0, 2):
        alone, ref = _alone(seeds[i], lrs[i], batch=200)
        assert not results[i].diverged and results[i].diverged_reason == ""
        assert [h["train_loss"] for h in results[i].history] == pytest.approx(
            [h["train_loss"] for h in ref.history], abs=1e-5)
        for p, q in zip(stacked[i].parameters(), alone.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert fit_stack([_build(1)], TRAIN, epochs=3, batch_size=200, lrs=[1e6], seeds=[1],
                     momentum=0.9, diverge_factor=None, progress=False)[0].diverged_epoch != 2


def test_evaluate_stack_matches_evaluate():
    ms = [_build(s) for s in (0, 1)]
    loss, acc = evaluate_stack(StackedMLP(ms), TEST, batch_size=32)
    for i, m in enumerate(ms):
        ref_loss, ref_acc = evaluate(m, TEST)
        assert loss[i].item() == pytest.approx(ref_loss, rel=1e-5)
        assert acc[i].item() == pytest.approx(ref_acc)


def test_rejects_models_that_cannot_be_stacked():
    with pytest.raises(ValueError, match="different shapes cannot be stacked"):
        StackedMLP([_build(0), models.mlp([64, 8, 4])])
    with pytest.raises(ValueError, match="cannot stack a model with a Dropout layer"):
        StackedMLP([models.mlp(SIZES, dropout=0.5)])
    with pytest.raises(ValueError, match="one lr and one seed per model"):
        fit_stack([_build(0)], TRAIN, epochs=1, batch_size=8, lrs=[0.1, 0.2], seeds=[0])
    with pytest.raises(ValueError, match="max_stack"):
        fit_stack([_build(0)], TRAIN, epochs=1, batch_size=8, lrs=[0.1], seeds=[0], max_stack=0)


def test_default_stack_keeps_weights_and_momentum_within_the_cpu_budget():
    from genstudy.stacked import CPU_STACK_BYTES, default_max_stack
    big = models.mlp([784, 512, 10])  # 407,050 parameters: 3.3 MB of weights and momentum
    k = default_max_stack(big, torch.device("cpu"))
    per_model = 2 * 4 * sum(p.numel() for p in big.parameters())
    assert k * per_model <= CPU_STACK_BYTES < (k + 1) * per_model
    assert default_max_stack(big, torch.device("cuda")) is None


@pytest.mark.parametrize("activation", ["tanh", "selu", "sigmoid"])
def test_written_out_backward_matches_autograd_for_every_activation(activation):
    build = lambda: models.seeded(5, models.mlp, SIZES, activation=activation)  # noqa: E731
    stacked, alone = build(), build()
    res = fit_stack([stacked], TRAIN, epochs=2, batch_size=16, lrs=[0.05], seeds=[5],
                    momentum=0.9, progress=False)[0]
    ref = fit(alone, TRAIN, epochs=2, batch_size=16, seed=5, progress=False,
              optimizer=make_optimizer(alone.parameters(), "sgd", 0.05, 0.9))
    assert res.final["train_loss"] == pytest.approx(ref.final["train_loss"], abs=1e-5)
    for p, q in zip(stacked.parameters(), alone.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


# --- the autograd stack (E3: Nadam, penalties, dropout, max-norm) ---------------------------

E3_MEMBERS = [  # (build kwargs, Member): what each stacked model is
    ({}, Member(0)), ({}, Member(1, l1=1e-3)), ({}, Member(0, l2=1e-2)),
    ({}, Member(2, l1=1e-4, l2=1e-3)), ({}, Member(1, max_norm=0.5)),
]
E3_DROPOUT = [({"dropout": 0.2}, Member(0)), ({"dropout": 0.2}, Member(1, l2=1e-3))]
E3_SELU = [({"activation": "selu", "init": "lecun_normal", "dropout": 0.3, "alpha_dropout": True},
            Member(s, max_norm=r)) for s, r in ((0, None), (1, 1.0), (0, 0.8))]


def _e3_alone(kw, m: Member, epochs=3, batch=16):
    model = models.seeded(m.seed, models.mlp, SIZES, **kw)
    hidden = [f"fc{i}" for i in range(1, len(SIZES) - 1)]
    res = fit(model, TRAIN, epochs=epochs, batch_size=batch, seed=m.seed, eval_sets={"test": TEST},
              optimizer=make_optimizer(model.parameters(), "nadam", 0.001),
              objective=penalized(m.l1, m.l2),
              constraints=[max_norm(m.max_norm, hidden)] if m.max_norm else [], progress=False)
    return model, res


@pytest.mark.parametrize("group,max_stack", [(E3_MEMBERS, None), (E3_MEMBERS, 2),
                                             (E3_DROPOUT, None), (E3_SELU, None)])
def test_autograd_stack_equals_each_model_trained_alone(group, max_stack):
    stacked = [models.seeded(m.seed, models.mlp, SIZES, **kw) for kw, m in group]
    before = torch.get_rng_state()
    results = fit_stack_autograd(stacked, TRAIN, epochs=3, batch_size=16, optimizer="nadam",
                                 lr=0.001, members=[m for _, m in group], eval_sets={"test": TEST},
                                 max_stack=max_stack, progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is left as it was
    for model, (kw, m), res in zip(stacked, group, results):
        alone, ref = _e3_alone(kw, m)
        assert not res.diverged and len(res.history) == len(ref.history) == 3
        for a, b in zip(res.history, ref.history):
            assert set(a) == set(b)
            for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
                assert a[key] == pytest.approx(b[key], abs=1e-5), (m, key)
        # Nadam's foreach update rounds differently from its one-tensor one; L1's sign gradient
        # lets a weight near 0 keep that difference: 1e-5 is 1 % of one Nadam step at lr 1e-3.
        for p, q in zip(model.parameters(), alone.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
        if m.max_norm:
            assert model.fc1.weight.norm(dim=1).max() <= m.max_norm + 1e-5


def test_autograd_stack_drops_a_diverged_member_and_the_others_go_on():
    group = [Member(0), Member(0, l2=1e-3), Member(0, l1=1e-4)]  # one seed: one stack
    stacked = [_build(m.seed) for m in group]
    with torch.no_grad():
        stacked[1].fc2.weight[0, 0] = float("nan")  # member 1's loss is NaN from its first step
    results = fit_stack_autograd(stacked, TRAIN, epochs=3, batch_size=16, optimizer="nadam",
                                 lr=0.001, members=group, eval_sets={"test": TEST}, progress=False,
                                 max_stack=None)
    assert results[1].diverged and results[1].diverged_reason == "loss nan at epoch 1"
    assert results[1].history == [] and stacked[1].fc2.weight.isnan().all()
    for k in (0, 2):
        alone, ref = _e3_alone({}, group[k])
        assert [h["test_acc"] for h in results[k].history] == pytest.approx(
            [h["test_acc"] for h in ref.history], abs=1e-5)
        for p, q in zip(stacked[k].parameters(), alone.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_autograd_stack_refuses_models_that_differ():
    with pytest.raises(ValueError, match="different activations or dropout"):
        fit_stack_autograd([_build(0), models.seeded(1, models.mlp, SIZES, dropout=0.2)], TRAIN,
                           epochs=1, batch_size=16, optimizer="nadam", lr=0.01,
                           members=[Member(0), Member(1)], progress=False)
