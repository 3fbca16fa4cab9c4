"""Linear probes on frozen models: known answers, frozen weights, bounded memory."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from genstudy import models
from genstudy.data import Tensors
from genstudy.probes import Activations, ProbeConfig, capture, train_probes


def _separable(n: int, seed: int) -> Tensors:
    """20 features: the first 10 are 3 x one-hot(label) + noise, the last 10 pure noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 20, generator=g) * 0.3
    x[:, :10] += 3 * nn.functional.one_hot(y, 10)
    return Tensors(x, y)


def _two_branch_model() -> nn.Sequential:
    """``informative`` passes the features on (classes separable); ``noise`` keeps only the noise."""
    informative = nn.Linear(20, 20)
    noise = nn.Linear(20, 10)
    with torch.no_grad():
        informative.weight.copy_(torch.eye(20))
        informative.bias.zero_()
        noise.weight.zero_()
        noise.weight[:, 10:] = torch.eye(10)
        noise.bias.zero_()
    return nn.Sequential(OrderedDict([("informative", informative), ("noise", noise)]))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids oversubscription on a shared machine (~40x faster here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


POINTS = {"input": "", "informative": "informative", "noise": "noise"}
CFG = ProbeConfig(epochs=40, patience=5, batch_size=128, lr=0.05)


def test_separable_layer_near_zero_error_and_uninformative_layer_near_chance():
    rows = {r["point"]: r for r in train_probes(_two_branch_model(), POINTS, _separable(3000, 0),
                                                _separable(2000, 1), CFG, seed=0, progress=False)}
    assert rows["informative"]["test_error"] < 0.01
    assert rows["input"]["test_error"] < 0.01
    assert rows["noise"]["test_error"] > 0.8  # chance is 0.9 for 10 balanced classes
    assert [r for r in rows] == ["input", "informative", "noise"]  # forward order


def test_lr_scaled_by_features_lets_a_wide_injective_map_match_the_input_probe():
    """A probe on a 32x wider linear injective map of the input can express every input probe.

    With one Adam lr its logits move 32x faster and it stops worse (like the convnet's conv1
    pre-activation probe); with ``lr_features`` it matches the input probe.
    """
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (5000,), generator=g)
    x = torch.randn(5000, 20, generator=g)
    x[:, :10] += 3 * nn.functional.one_hot(y, 10)
    wide = nn.Linear(20, 640)
    with torch.no_grad():  # weight and bias from the seeded generator: the test must not depend on
        wide.weight.copy_(torch.randn(640, 20, generator=g))  # the global RNG's state
        wide.bias.copy_(torch.rand(640, generator=g) * 0.4 - 0.2)
    model = nn.Sequential(OrderedDict([("wide", wide)]))
    points = {"input": "", "wide": "wide"}
    train, test = Tensors(x[:3000], y[:3000]), Tensors(x[3000:], y[3000:])

    def errors(lr_features):
        cfg = ProbeConfig(epochs=40, patience=5, batch_size=128, lr=0.05, lr_features=lr_features)
        return {r["point"]: r for r in train_probes(model, points, train, test, cfg, seed=0, progress=False)}

    one_lr, scaled = errors(None), errors(20)
    assert one_lr["wide"]["test_error"] - one_lr["input"]["test_error"] > 0.015
    assert abs(scaled["wide"]["test_error"] - scaled["input"]["test_error"]) < 0.01
    assert scaled["input"]["test_error"] == one_lr["input"]["test_error"]  # <= 20 features: same lr
    assert (scaled["input"]["lr"], scaled["wide"]["lr"]) == (0.05, 0.05 * 20 / 640)


def test_early_stopping_per_probe():
    rows = train_probes(_two_branch_model(), POINTS, _separable(1500, 0), _separable(500, 1), CFG,
                        seed=0, progress=False)
    for r in rows:
        assert 1 <= r["epochs"] <= CFG.epochs
        assert r["best_epoch"] <= r["epochs"]
        if r["epochs"] < CFG.epochs:  # stopped: exactly `patience` epochs without improving
            assert r["epochs"] - r["best_epoch"] == CFG.patience
    noise = next(r for r in rows if r["point"] == "noise")
    assert noise["epochs"] < CFG.epochs  # nothing to learn there: it stops early


def test_frozen_model_is_bit_for_bit_unchanged():
    torch.manual_seed(0)
    model = models.convnet_e7()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    g = torch.Generator().manual_seed(0)
    data = Tensors(torch.rand(96, 1, 28, 28, generator=g), torch.randint(0, 10, (96,), generator=g))
    train_probes(model, models.CONVNET_E7_POINTS, data, data.head(32),
                 ProbeConfig(epochs=2, patience=1, batch_size=32, cache_bytes=2_000_000),
                 seed=0, progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # mode restored


def test_convnet_points_feature_sizes():
    acts = Activations(models.convnet_e7(), models.CONVNET_E7_POINTS, torch.rand(4, 1, 28, 28), 4)
    assert acts.features == {"input": 784, "conv1_pre": 25088, "conv1_post": 25088,
                             "conv1_pool": 6272, "conv2_pre": 12544, "conv2_post": 12544,
                             "conv2_pool": 3136, "fc1_pre": 512, "fc1_post": 512, "logits": 10}


def test_cache_respects_budget_deepest_first_and_gives_same_activations():
    model = models.convnet_e7()
    x = torch.rand(10, 1, 28, 28)
    budget = 10 * 4 * (10 + 512 + 512 + 3136) + 100  # logits, fc1 post/pre, conv2 pool
    acts = Activations(model, models.CONVNET_E7_POINTS, x, 4, cache_bytes=budget)
    assert acts.cache_bytes_used <= budget
    assert set(acts.cached) == {"logits", "fc1_post", "fc1_pre", "conv2_pool"}
    idx = torch.tensor([7, 2, 5])
    cached = acts.batch(idx, ["logits", "conv1_post"])
    fresh = capture(model, x[idx], {"logits": "fc2", "conv1_post": "act1"})
    for p in cached:
        torch.testing.assert_close(cached[p], fresh[p])


def test_capture_truncates_the_forward_pass():
    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("ran past the last needed point")
    model = nn.Sequential(OrderedDict([("a", nn.Linear(3, 3)), ("b", Boom())]))
    out = capture(model, torch.rand(2, 3), {"a": "a"})
    assert out["a"].shape == (2, 3)
    with pytest.raises(AssertionError):
        capture(model, torch.rand(2, 3), {"a": "a"}, truncate=False)


def test_same_results_with_and_without_cache():
    data, test = _separable(600, 0), _separable(300, 1)
    cfg = ProbeConfig(epochs=5, patience=2, batch_size=100, lr=0.05)
    a = train_probes(_two_branch_model(), POINTS, data, test, cfg, seed=3, progress=False)
    b = train_probes(_two_branch_model(), POINTS, data, test,
                     ProbeConfig(**{**cfg.__dict__, "cache_bytes": 10**8}), seed=3, progress=False)
    assert [r["cached"] for r in b] == [True] * 3
    for ra, rb in zip(a, b):
        assert ra["test_error"] == pytest.approx(rb["test_error"], abs=1 / 300)


def test_deep_skip_mlp_shapes_and_points():
    m = models.DeepSkipMLP(depth=6, width=8, skip_layer=4)
    assert m(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    assert m.layers.layer4.fc.in_features == 8 + 784
    assert m.layers.layer3.fc.in_features == 8
    points = models.deep_mlp_points(6)
    acts = Activations(m, points, torch.rand(3, 1, 28, 28), 3)
    assert acts.order == ["input"] + [f"layer{i}" for i in range(1, 7)]
    assert all(acts.features[f"layer{i}"] == 8 for i in range(1, 7))


def test_steps_per_epoch_lands_on_every_snapshot():
    from genstudy.probes import steps_per_epoch
    k = steps_per_epoch([0, 500, 2000], 512, 60000)
    assert k == 100  # 51,200 images; 500 and 2000 steps are 5 and 20 epochs
    assert steps_per_epoch([0, 4], 64, 500) == 4
    assert steps_per_epoch([0, 7], 64, 500) == 7
    assert steps_per_epoch([0, 14], 64, 500) == 7  # 14 batches do not fit, 7 do


def test_stacked_probes_train_as_one_probe_each():
    """Figure 8's probes share a width: stacked as one batched matmul they start from the same
    weights, stop at the same epochs and give the same errors as one small layer per probe."""
    model = models.seeded(0, models.DeepSkipMLP, depth=6, width=8, skip_layer=4)
    points = models.deep_mlp_points(6)
    wide = lambda t: Tensors(torch.nn.functional.pad(t.x, (0, 784 - 20)).view(-1, 1, 28, 28), t.y)  # noqa: E731
    data, test = wide(_separable(600, 0)), wide(_separable(300, 1))
    cfg = ProbeConfig(epochs=6, patience=1, batch_size=100, lr=0.05)
    stacked = train_probes(model, points, data, test, cfg, seed=2, progress=False)
    alone = train_probes(model, points, data, test, ProbeConfig(**{**cfg.__dict__, "stack": False}),
                         seed=2, progress=False)
    assert len({r["features"] for r in stacked}) < len(stacked)  # some probes really share a stack
    for a, b in zip(stacked, alone):
        assert (a["point"], a["epochs"], a["best_epoch"]) == (b["point"], b["epochs"], b["best_epoch"])
        assert a["test_error"] == pytest.approx(b["test_error"], abs=1 / 300)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)
