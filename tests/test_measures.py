"""Input sensitivity and Keskar sharpness against known answers."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genstudy import models
from genstudy.data import Tensors
from genstudy.measures import (accuracy_under_noise, box_maximum, gaussian_noise,
                               input_sensitivity, keskar_sharpness)


@pytest.fixture
def small():
    torch.manual_seed(0)
    model = models.mlp([6, 5, 4, 3]).double()
    x = torch.randn(7, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    return model, Tensors(x, y)


def test_sensitivity_matches_finite_differences_per_example(small):
    model, data = small
    got = input_sensitivity(model, data)
    assert got.shape == (len(data),)
    h = 1e-6
    for i in range(len(data)):
        grad = torch.zeros(6, dtype=torch.float64)
        for j in range(6):
            xp, xm = data.x[i:i + 1].clone(), data.x[i:i + 1].clone()
            xp[0, j] += h
            xm[0, j] -= h
            with torch.no_grad():
                grad[j] = (F.cross_entropy(model(xp), data.y[i:i + 1])
                           - F.cross_entropy(model(xm), data.y[i:i + 1])) / (2 * h)
        assert got[i].item() == pytest.approx(grad.norm().item(), rel=1e-6, abs=1e-9)


def test_sensitivity_of_one_example_does_not_depend_on_the_others(small):
    model, data = small
    alone = input_sensitivity(model, Tensors(data.x[2:3], data.y[2:3]))
    assert alone.item() == pytest.approx(input_sensitivity(model, data)[2].item(), rel=1e-10)


def test_box_maximum_of_a_convex_quadratic_is_its_far_corner():
    # f(w) = 0.5 * sum a_i w_i^2, a_i > 0: over the box |d_i| <= eps(|w_i|+1) the maximum
    # moves every coordinate away from 0 to the box edge: |w_i| + eps(|w_i|+1).
    torch.manual_seed(1)
    a = torch.rand(10, dtype=torch.float64) + 0.5
    w = torch.randn(10, dtype=torch.float64)
    eps = 0.05
    f = lambda p: 0.5 * (a * p["w"] ** 2).sum()  # noqa: E731
    top, base = box_maximum(f, {"w": w}, eps=eps, steps=10, step_size=0.3)
    exact = 0.5 * (a * (w.abs() + eps * (w.abs() + 1)) ** 2).sum().item()
    assert base == pytest.approx(f({"w": w}).item())
    assert top == pytest.approx(exact, rel=1e-12)


def test_box_maximum_of_a_concave_quadratic_stays_at_the_peak():
    # f(w) = -|w - c|^2 with c inside the box around w: max is 0 at d = c - w.
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    c = w + torch.tensor([1e-3, -2e-3, 0.0], dtype=torch.float64)
    f = lambda p: -((p["w"] - c) ** 2).sum()  # noqa: E731
    top, base = box_maximum(f, {"w": w}, eps=1e-2, steps=200, step_size=0.01)
    assert base < 0 and top == pytest.approx(0.0, abs=1e-6)


def test_sharpness_is_non_negative_and_leaves_the_model_untouched(small):
    model, data = small
    model.train()
    before = copy.deepcopy(model.state_dict())
    s = keskar_sharpness(model, data, eps=1e-3, steps=5)
    assert s >= 0
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
        assert not v.requires_grad


def test_sharpness_grows_with_the_box(small):
    model, data = small
    s = [keskar_sharpness(model, data, eps=e, steps=10) for e in (1e-4, 1e-3, 1e-2)]
    assert 0 < s[0] < s[1] < s[2]


def test_sharpness_formula_on_a_model_with_known_loss():
    # One linear unit with a bias only: logits = b (2 classes), all labels 0; the CE loss is
    # softplus(b1 - b0), maximised in the box by raising b1 and lowering b0 to the edge.
    class Bias(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))

        def forward(self, x):
            return self.b.expand(len(x), 2)

    m = Bias()
    data = Tensors(torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4, dtype=torch.long))
    eps = 1e-2
    b0, b1 = 0.3, -0.2
    base = F.softplus(torch.tensor(b1 - b0, dtype=torch.float64)).item()
    top = F.softplus(torch.tensor((b1 + eps * (abs(b1) + 1)) - (b0 - eps * (abs(b0) + 1)),
                                 dtype=torch.float64)).item()
    assert keskar_sharpness(m, data, eps=eps, steps=5, step_size=0.5) == pytest.approx(
        100 * (top - base) / (1 + base), rel=1e-9)


def test_noise_is_repeatable_and_shared_across_sigmas(small):
    model, data = small
    n1, n2 = gaussian_noise(data.x.shape, 3), gaussian_noise(data.x.shape, 3)
    assert torch.equal(n1, n2) and not torch.equal(n1, gaussian_noise(data.x.shape, 4))
    rows = accuracy_under_noise(model, data, [0.0, 0.1], n1.double())
    clean = (model(data.x).argmax(-1) == data.y).double().mean().item()
    assert rows[0]["sigma"] == 0.0 and rows[0]["test_acc"] == pytest.approx(clean)
    assert [r["sigma"] for r in rows] == [0.0, 0.1]
