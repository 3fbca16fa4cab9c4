"""E3's pieces: weight penalties, max-norm, MC dropout, AlphaDropout, standardisation."""

import pytest
import torch
from torch import nn

from genstudy import data, models
from genstudy.objectives import max_norm, penalized, weight_penalty
from genstudy.training import fit, make_optimizer
from genstudy.uncertainty import entropy, error_auroc, mc_dropout_probabilities, probabilities


def known_model() -> nn.Sequential:
    m = models.mlp([3, 2, 2])
    with torch.no_grad():
        m.fc1.weight.copy_(torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]]))
        m.fc1.bias.fill_(100.0)  # large biases: must not count
        m.fc2.weight.copy_(torch.tensor([[-1.0, 2.0], [0.0, 4.0]]))
        m.fc2.bias.fill_(-50.0)
    return m


def test_penalty_equals_formula_on_kernels_only():
    m = known_model()
    abs_sum = (1 + 2 + 3 + 0.5 + 0 + 1) + (1 + 2 + 0 + 4)
    sq_sum = (1 + 4 + 9 + 0.25 + 0 + 1) + (1 + 4 + 0 + 16)
    assert weight_penalty(m, l1=0.01).item() == pytest.approx(0.01 * abs_sum)
    assert weight_penalty(m, l2=0.01).item() == pytest.approx(0.01 * sq_sum)
    assert weight_penalty(m, l1=0.1, l2=0.2).item() == pytest.approx(0.1 * abs_sum + 0.2 * sq_sum)
    assert weight_penalty(m, l1=0.01, layers=["fc2"]).item() == pytest.approx(0.01 * 7)


def test_penalty_gradient_reaches_weights_not_biases():
    m = known_model()
    weight_penalty(m, l1=0.01, l2=0.01).backward()
    assert m.fc1.bias.grad is None and m.fc2.bias.grad is None
    w = m.fc1.weight
    assert torch.allclose(w.grad, 0.01 * torch.sign(w) + 0.02 * w)


def test_penalized_objective_adds_penalty_to_the_loss():
    m = known_model()
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 0, 1, 1])
    plain, logits = penalized()(m, x, y)
    total, logits2 = penalized(l1=0.01, l2=0.02)(m, x, y)
    assert torch.equal(logits, logits2)
    assert (total - plain).item() == pytest.approx(weight_penalty(m, 0.01, 0.02).item(), rel=1e-5)


def test_max_norm_clips_long_rows_and_leaves_short_rows_untouched():
    m = models.mlp([4, 3, 2])
    with torch.no_grad():
        m.fc1.weight.copy_(torch.tensor([[3.0, 4.0, 0.0, 0.0],    # norm 5 -> clipped to 1
                                         [0.1, 0.2, -0.3, 0.1],   # inside
                                         [0.0, 0.0, 2.0, 0.0]]))  # norm 2 -> clipped
        m.fc2.weight.fill_(5.0)
    inside = m.fc1.weight[1].clone()
    fc2_before = m.fc2.weight.clone()
    bias_before = m.fc1.bias.clone()
    max_norm(1.0, layers=["fc1"])(m)
    norms = m.fc1.weight.norm(dim=1)
    assert (norms <= 1.0 + 1e-6).all()
    assert torch.allclose(m.fc1.weight[0], torch.tensor([0.6, 0.8, 0.0, 0.0]))
    assert torch.equal(m.fc1.weight[1], inside)         # bit for bit
    assert torch.equal(m.fc2.weight, fc2_before)        # layer not named: untouched
    assert torch.equal(m.fc1.bias, bias_before)


def test_max_norm_holds_after_every_training_step():
    torch.manual_seed(0)
    train = data.Tensors(torch.randn(64, 1, 28, 28) * 5, torch.randint(0, 10, (64,)))
    m = models.seeded(0, models.mlp, [784, 16, 10], activation="selu", init="lecun_normal")
    seen = []
    fit(m, train, epochs=2, batch_size=16, optimizer=make_optimizer(m.parameters(), "nadam", 0.05),
        seed=0, constraints=[max_norm(0.5, ["fc1"]), lambda mod: seen.append(mod.fc1.weight.norm(dim=1).max())],
        progress=False)
    assert len(seen) == 8 and max(seen) <= 0.5 + 1e-6


def test_mc_dropout_with_rate_zero_equals_plain_prediction():
    m = models.seeded(0, models.mlp, [784, 32, 10], dropout=0.5)
    for mod in m.modules():  # dropout layers present, with rate exactly 0
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0
    x = torch.randn(50, 1, 28, 28)
    assert torch.allclose(mc_dropout_probabilities(m, x, passes=7), probabilities(m, x), atol=1e-6)


def test_mc_dropout_is_stochastic_repeatable_and_restores_mode():
    m = models.seeded(0, models.mlp, [784, 32, 10], dropout=0.5)
    m.eval()
    x = torch.randn(20, 1, 28, 28)
    a = mc_dropout_probabilities(m, x, passes=5, seed=1)
    b = mc_dropout_probabilities(m, x, passes=5, seed=1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, probabilities(m, x))
    assert torch.allclose(a.sum(-1), torch.ones(20))
    assert not m.training and not any(mod.training for mod in m.modules())


def test_the_selu_alpha_dropout_variant_keeps_its_activations_normalised():
    """E3's own SELU + AlphaDropout model (built as the stage builds it): AlphaDropout before every
    dense layer, lecun-normal init, and in training mode every hidden layer's output stays near
    mean 0 / std 1 on standardised input (ordinary Dropout in the same model would not)."""
    from genstudy.experiments.regularization.compute import Variant, build
    v = Variant(activation="selu", init="lecun_normal", dropout=0.2, alpha_dropout=True, max_norm=1.0)
    sizes = [784, 300, 100, 10]
    m = models.seeded(0, build, v, sizes).train()
    assert [type(m.get_submodule(f"drop{i}")) for i in (1, 2, 3)] == [nn.AlphaDropout] * 3
    torch.manual_seed(0)
    h = torch.randn(4096, 1, 28, 28)
    stats = {}
    for name, layer in m.named_children():
        h = layer(h)
        if name.startswith("act"):
            stats[name] = (h.mean().item(), h.std().item())
    for name, (mean, std) in stats.items():
        assert abs(mean) < 0.1 and abs(std - 1) < 0.1, (name, mean, std)
    plain = models.seeded(0, build, Variant(activation="selu", init="lecun_normal", dropout=0.2), sizes).train()
    assert plain.act2(plain.fc2(plain.drop2(plain.act1(plain.fc1(plain.drop1(
        plain.flatten(torch.randn(4096, 1, 28, 28)))))))).std().item() > 1.1
    # MC dropout switches the AlphaDropout layers on: the MC prediction differs from the plain one
    x = torch.randn(20, 1, 28, 28)
    assert not torch.allclose(mc_dropout_probabilities(m, x, passes=5), probabilities(m, x))


def test_max_norm_of_the_variant_is_applied_by_training(tmp_path):
    """The stage's max-norm variant, trained through fit with the stage's constraint: every hidden
    unit's incoming weights end within the radius."""
    from genstudy.objectives import max_norm as constraint
    from genstudy.experiments.regularization.compute import Variant, build
    from genstudy.training import fit, make_optimizer
    v = Variant(activation="selu", init="lecun_normal", dropout=0.2, alpha_dropout=True, max_norm=0.5)
    m = models.seeded(0, build, v, [784, 32, 16, 10])
    train = data.Tensors(torch.randn(64, 1, 28, 28) * 3, torch.randint(0, 10, (64,)))
    fit(m, train, epochs=2, batch_size=16, optimizer=make_optimizer(m.parameters(), "nadam", 0.05), seed=0,
        constraints=[constraint(v.max_norm, ["fc1", "fc2"])], progress=False)
    for layer in (m.fc1, m.fc2):
        assert layer.weight.norm(dim=1).max().item() <= 0.5 + 1e-5
    assert m.fc3.weight.norm(dim=1).max().item() > 0.5  # the output layer is not constrained


def test_entropy_and_error_auroc():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert torch.allclose(entropy(probs), torch.tensor([0.0, torch.log(torch.tensor(2.0)).item()]))
    assert error_auroc(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert error_auroc(torch.tensor([0.1, 0.3, 0.2, 0.4]), torch.tensor([0, 0, 1, 1])) == 0.75
    assert error_auroc(torch.full((4,), 0.5), torch.tensor([0, 1, 0, 1])) == 0.5


def test_standardize_uses_train_statistics_and_guards_zero_std():
    x = torch.zeros(4, 1, 2, 2)
    x[:, 0, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # other pixels: constant 0 (zero std)
    x[:, 0, 1, 1] = 7.0
    train = data.Tensors(x, torch.zeros(4, dtype=torch.long))
    other = data.Tensors(torch.full((1, 1, 2, 2), 2.5), torch.zeros(1, dtype=torch.long))
    st, so = data.standardize(train, other)
    assert torch.isfinite(st.x).all() and torch.isfinite(so.x).all()
    assert st.x[:, 0, 0, 0].mean().abs() < 1e-6
    assert st.x[:, 0, 0, 0].std(unbiased=False) == pytest.approx(1.0)
    assert torch.equal(st.x[:, 0, 1, 1], torch.zeros(4))  # constant pixel: only centred
    assert so.x[0, 0, 0, 0].item() == pytest.approx(0.0, abs=1e-6)  # 2.5 is the train mean
    assert so.x[0, 0, 1, 1].item() == pytest.approx(2.5 - 7.0)


@pytest.mark.parametrize("variants, definitions, message", [
    (["none", "nope"], {"none": {}}, r"variants \['nope'\] have no entry in definitions"),
    (["mc"], {"mc": {"mc_dropout_of": "dropout"}, "dropout": {"dropout": 0.2}},
     "reuses 'dropout', which is not in variants"),
    (["none", "mc"], {"none": {}, "mc": {"mc_dropout_of": "none"}},
     "reuses 'none', which is not a trained dropout model"),
    (["none"], {"none": {"dropout": 1.0}}, r"definitions\.none\.dropout\n  Input should be less than 1"),
    (["none"], {"none": {"l2": -0.1}}, r"definitions\.none\.l2\n  Input should be greater than or equal to 0"),
])
def test_bad_variant_params_are_rejected(variants, definitions, message):
    from pydantic import ValidationError

    from conftest import section

    from genstudy.experiments.regularization.compute import Params as schema
    base = section("regularization")  # complete and valid; variants and definitions replaced below
    schema.model_validate({**base, "variants": ["none"], "definitions": {"none": {}}})  # a good one
    with pytest.raises(ValidationError, match=message):
        schema.model_validate({**base, "variants": variants, "definitions": definitions})
