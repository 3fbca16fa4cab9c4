"""E2's fast convnet and the written-out gradient loss compute what the plain ones compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genstudy import models
from genstudy.objectives import gradient_loss, gradient_loss_autograd

REL = 1e-5


def batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] with Fashion-MNIST's blank background (exact ties in the pools)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    x[x < 0.4] = 0
    x[:, :, :4] = 0
    x[:, :, :, -5:] = 0
    return x, torch.randint(0, 10, (n,), generator=g)


def pair(seed: int = 0):
    plain = models.seeded(seed, models.convnet_e2, plain=True)
    fast = models.seeded(seed, models.convnet_e2)
    return plain, fast


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a - b).abs().max().item() <= REL * b.abs().max().item()


def grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def test_fast_is_the_default_and_has_the_plain_state_dict_keys():
    plain, fast = pair()
    assert isinstance(fast, models.ConvNetE2) and not isinstance(plain, models.ConvNetE2)
    assert list(fast.state_dict()) == list(plain.state_dict())
    for k, v in plain.state_dict().items():  # same initial weights from the same seed
        assert torch.equal(fast.state_dict()[k], v)


def test_state_dicts_load_both_ways():
    x, _ = batch()
    plain, _ = pair(0)
    fast = models.seeded(1, models.convnet_e2)
    fast.load_state_dict(plain.state_dict())
    assert fast.conv2.weight.is_contiguous(memory_format=torch.channels_last)  # layout kept
    assert close(fast(x), plain(x))
    back = models.seeded(2, models.convnet_e2, plain=True)
    back.load_state_dict(fast.state_dict())
    assert torch.equal(back(x), plain(x))


def test_same_outputs_and_cross_entropy_gradients():
    x, y = batch()
    plain, fast = pair()
    lp, lf = plain(x), fast(x)
    assert close(lf, lp)
    gp = grads(plain, F.cross_entropy(lp, y))
    gf = grads(fast, F.cross_entropy(lf, y))
    for k in gp:
        assert close(gf[k], gp[k]), k


@pytest.mark.parametrize("fast_model", [False, True])
def test_same_gradient_loss_and_gradients(fast_model):
    """The written-out gradient loss (on the plain or the fast model) against autograd's on the plain."""
    x, y = batch()
    plain, fast = pair()
    want, logits_p = gradient_loss_autograd(plain, x, y)
    model = fast if fast_model else models.seeded(0, models.convnet_e2, plain=True)
    got, logits = gradient_loss(model, x, y)
    assert got.item() == pytest.approx(want.item(), rel=REL)
    assert close(logits, logits_p)
    gp, gf = grads(plain, want), grads(model, got)
    for k in gp:
        assert close(gf[k], gp[k]), k


def test_adam_steps_stay_together():
    """Three Adam steps of both arms: the fast path follows the plain one to float rounding.

    Adam divides by the gradient's running RMS, so a weight whose gradient is ~0 can take a
    visibly different (still tiny) step from rounding alone: a handful of fc1's 102400
    weights differ by ~1e-5 after three steps; everything else agrees to ~1e-7.
    """
    x, y = batch(64, seed=1)
    for objective, reference in [(None, None), (gradient_loss, gradient_loss_autograd)]:
        plain, fast = pair(3)
        opts = [torch.optim.Adam(m.parameters(), 1e-3) for m in (plain, fast)]
        for _ in range(3):
            for m, opt, obj in zip((plain, fast), opts, (reference, objective)):
                loss = obj(m, x, y)[0] if obj else F.cross_entropy(m(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        for (k, p), q in zip(plain.named_parameters(), fast.parameters()):
            diff = (q - p).abs()
            assert diff.max() < 1e-4 and (diff > 1e-6).float().mean() < 1e-4, k
