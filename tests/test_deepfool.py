"""DeepFool: exact on affine classifiers, flips and lands near the boundary on a nonlinear net,
and the batched version agrees with the one-example-at-a-time reference."""

import pytest
import torch
from torch import nn

from genstudy import models
from genstudy.deepfool import NUDGE, deepfool, deepfool_loop, margin_summary

OVERSHOOT = 0.02


def _affine(seed=0, d=12, c=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, c))


def _closed_form(model, x):
    """Minimal perturbation to the nearest decision boundary of an affine classifier."""
    lin = model[1]
    w, b = lin.weight, lin.bias
    out = []
    for xi in x.flatten(1):
        f = w @ xi + b
        k0 = int(f.argmax())
        best = None
        for k in range(len(f)):
            if k == k0:
                continue
            wk = w[k] - w[k0]
            dist = (f[k0] - f[k]) / wk.norm()
            if best is None or dist < best[0]:
                best = (dist, wk / wk.norm())
        out.append(best)
    return out


def test_affine_equals_closed_form_minimal_perturbation():
    model = _affine()
    x = torch.randn(64, 12)
    with torch.no_grad():
        res = deepfool(model, x, overshoot=OVERSHOOT)
    for r, (dist, unit), it in zip(res.r, _closed_form(model, x), res.iterations):
        expected = (1 + OVERSHOOT) * (dist + NUDGE) * unit  # the reference code's nudge included
        torch.testing.assert_close(r, expected.detach(), rtol=1e-4, atol=1e-5)
        assert it == 1  # one linear step is exact
        # without the overshoot and nudge it is the exact minimal perturbation
        assert r.norm() / (1 + OVERSHOOT) - NUDGE == pytest.approx(dist.item(), rel=1e-4, abs=1e-5)
    assert res.flipped.all()


def _nonlinear():
    model = models.seeded(1, models.mlp, [20, 32, 32, 4], activation="tanh")
    x = torch.randn(128, 20, generator=torch.Generator().manual_seed(2))
    return model, x


def _gap(model, x, label):
    """logit of ``label`` minus the largest other logit."""
    with torch.no_grad():
        f = model(x)
    own = f.gather(1, label.unsqueeze(1)).squeeze(1)
    f.scatter_(1, label.unsqueeze(1), float("-inf"))
    return own - f.max(1).values


def test_nonlinear_flips_and_lands_near_the_boundary():
    model, x = _nonlinear()
    res = deepfool(model, x, overshoot=OVERSHOOT)
    assert res.flipped.all()
    with torch.no_grad():
        assert (model(x + res.r).argmax(1) != model(x).argmax(1)).all()
    before = _gap(model, x, res.label)
    at_boundary = _gap(model, x + res.r / (1 + OVERSHOOT), res.label)
    assert (before > 0).all()
    # x + r/(1+overshoot) is the last linearised step's boundary point: the gap there is
    # small compared with the gap at x
    assert (at_boundary.abs() / before).median() < 0.05
    assert (at_boundary.abs() / before).max() < 0.25
    s = margin_summary(model, x, res)
    assert s["flipped_share"] == 1.0 and s["margin_mean"] > 0 and s["rho"] > 0


def test_batched_and_per_example_agree():
    model, x = _nonlinear()
    a = deepfool(model, x, overshoot=OVERSHOOT)
    b = deepfool_loop(model, x, overshoot=OVERSHOOT)
    torch.testing.assert_close(a.r, b.r, rtol=1e-4, atol=1e-5)
    assert torch.equal(a.iterations, b.iterations)
    assert torch.equal(a.label, b.label) and torch.equal(a.adv_label, b.adv_label)
    # chunked batches give the same answer
    c = deepfool(model, x, overshoot=OVERSHOOT, batch_size=50)
    torch.testing.assert_close(a.r, c.r)


def test_first_layer_shortcut_agrees_with_the_reference():
    # a narrowing first Linear takes the Gram-matrix path in the batched version
    model = models.seeded(3, models.mlp, [40, 16, 16, 5], activation="tanh")
    x = torch.randn(96, 1, 40, generator=torch.Generator().manual_seed(4))
    a = deepfool(model, x, overshoot=OVERSHOOT)
    b = deepfool_loop(model, x, overshoot=OVERSHOOT)
    assert a.flipped.all()
    torch.testing.assert_close(a.r, b.r, rtol=1e-4, atol=1e-5)
    assert torch.equal(a.iterations, b.iterations)


def test_no_reachable_boundary_stops_without_nan():
    model = models.mlp([20, 8, 3])
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.fill_(-1.0)  # every ReLU dead: the logits do not depend on x
    x = torch.randn(10, 20)
    for res in (deepfool(model, x), deepfool_loop(model, x)):
        assert torch.isfinite(res.r).all() and (res.r == 0).all()
        assert not res.flipped.any() and (res.iterations == 0).all()


def test_max_iter_bounds_the_work():
    model, x = _nonlinear()
    res = deepfool(model, x, overshoot=0.0, max_iter=1)
    assert (res.iterations <= 1).all()
    ref = deepfool_loop(model, x, overshoot=0.0, max_iter=1)
    assert torch.equal(res.flipped, ref.flipped)
