"""The gradient loss against an explicit formula, and that it trains."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genstudy import models
from genstudy.data import Tensors
from genstudy.objectives import gradient_loss
from genstudy.training import fit, make_optimizer


def explicit_gradient_loss(W, b, x, y):
    """Closed form for logits = x W^T + b: dS/dy = 2 (y - p) / K,
    dS/dz = J_softmax^T dS/dp with dS/dp = -2 (y - p) / K, dS/dx = dS/dz W."""
    z = x @ W.T + b
    p = z.softmax(-1)
    K = p.shape[-1]
    onehot = torch.nn.functional.one_hot(y, K).to(x.dtype)
    g = -2 * (onehot - p) / K                                # dS/dp
    dz = p * (g - (p * g).sum(-1, keepdim=True))             # softmax Jacobian (symmetric)
    dx = dz @ W
    dy = 2 * (onehot - p) / K
    return dx.pow(2).mean() + dy.pow(2).mean()


def test_gradient_loss_equals_the_explicit_formula_for_a_linear_model():
    torch.manual_seed(0)
    lin = nn.Linear(5, 4).double()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 4, (6,))
    loss, logits = gradient_loss(lin, x, y)
    want = explicit_gradient_loss(lin.weight.detach(), lin.bias.detach(), x, y)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    assert torch.allclose(logits, lin(x))


def test_gradient_loss_matches_finite_differences_of_s_for_an_mlp():
    torch.manual_seed(1)
    model = models.mlp([4, 6, 3], activation="tanh").double()
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randint(0, 3, (3,))

    def S(xx, yy):
        return (yy - model(xx).softmax(-1)).pow(2).mean(-1).sum()

    onehot = torch.nn.functional.one_hot(y, 3).double()
    h = 1e-6
    dx = torch.zeros_like(x)
    dy = torch.zeros_like(onehot)
    with torch.no_grad():
        for idx in [(i, j) for i in range(3) for j in range(4)]:
            e = torch.zeros_like(x)
            e[idx] = h
            dx[idx] = (S(x + e, onehot) - S(x - e, onehot)) / (2 * h)
        for idx in [(i, j) for i in range(3) for j in range(3)]:
            e = torch.zeros_like(onehot)
            e[idx] = h
            dy[idx] = (S(x, onehot + e) - S(x, onehot - e)) / (2 * h)
    want = dx.pow(2).mean() + dy.pow(2).mean()
    assert gradient_loss(model, x, y)[0].item() == pytest.approx(want.item(), rel=1e-7)


def test_weight_gradient_is_finite_and_non_zero_for_the_convnet():
    torch.manual_seed(2)
    model = models.convnet_e2()
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    loss, _ = gradient_loss(model, x, y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_one_step_lowers_the_gradient_loss_on_a_fixed_batch():
    torch.manual_seed(3)
    model = models.mlp([784, 32, 10]).double()
    x, y = torch.rand(16, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (16,))
    before = gradient_loss(model, x, y)[0].item()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    fit(model, Tensors(x, y), epochs=1, batch_size=16, optimizer=opt, seed=0,
        objective=gradient_loss, progress=False)
    after = gradient_loss(model, x, y)[0].item()
    assert math.isfinite(after) and after < before


def test_fused_adam_gives_the_same_training_as_plain_adam():
    data = Tensors(torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,)))
    finals = []
    for fused in (False, True):
        model = models.seeded(0, models.mlp, [784, 16, 10])
        opt = make_optimizer(model.parameters(), "adam", 1e-3, fused=fused)
        finals.append(fit(model, data, epochs=3, batch_size=8, optimizer=opt, seed=0,
                          progress=False).final["train_loss"])
    assert finals[0] == pytest.approx(finals[1], rel=1e-4)
