"""Measures of a trained model: input sensitivity, Keskar sharpness, accuracy under noise.

None of them changes the model: weights are read, never written (sharpness
evaluates perturbed weights through ``torch.func.functional_call``), and the
model's train/eval mode is restored on return.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.func import functional_call

from .data import Tensors
from .training import evaluate, loss_fn


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def input_sensitivity(model: nn.Module, data: Tensors, loss: str = "ce") -> torch.Tensor:
    """Per-example L2 norm of d loss_i / d x_i, shape (N,), for the whole set in one pass.

    The examples do not interact in eval mode, so the gradient of the *sum* of
    the per-example losses with respect to the input batch holds, in row i, the
    gradient of example i's own loss (the sum-of-losses trick: one backward
    pass instead of N). ``loss`` is a name of :func:`genstudy.training.loss_fn`,
    applied to one example at a time (the notebook's Keras loss on one example).
    """
    lf = loss_fn(loss)
    with _eval_mode(model):
        x = data.x.detach().clone().requires_grad_(True)
        logits = model(x)
        # lf is a batch mean; per-example losses summed = mean * N, which keeps the
        # per-row gradient equal to that of the example's own loss.
        total = lf(logits, data.y) * len(data)
        (grad,) = torch.autograd.grad(total, x)
    return grad.flatten(1).norm(dim=1).detach()


def box_maximum(f: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                params: dict[str, torch.Tensor], eps: float = 1e-3, steps: int = 20,
                step_size: float = 0.25) -> tuple[float, float]:
    """Approximate max of ``f(w + d)`` over the box |d_i| <= eps (|w_i| + 1).

    Projected gradient ascent with sign steps (the steepest-ascent step for a
    box): each step moves every coordinate by ``step_size`` times its box
    half-width in the direction of the sign of its gradient, then clips to the
    box. It starts at d = 0 and keeps the best value seen, so the result is
    never below ``f(w)``. Returns ``(max f(w + d), f(w))``; ``params`` are not
    modified.
    """
    w = {k: v.detach() for k, v in params.items()}
    half = {k: eps * (v.abs() + 1) for k, v in w.items()}
    d = {k: torch.zeros_like(v) for k, v in w.items()}
    with torch.no_grad():
        base = float(f(w))
    best = base
    for _ in range(steps):
        for v in d.values():
            v.requires_grad_(True)
        value = f({k: w[k] + d[k] for k in w})
        grads = torch.autograd.grad(value, list(d.values()))
        with torch.no_grad():
            d = {k: torch.clamp(d[k] + step_size * half[k] * g.sign(), -half[k], half[k])
                 for (k, g) in zip(d, grads)}
        # value is f at the previous iterate (already inside the box)
        best = max(best, float(value.detach()))
    with torch.no_grad():
        best = max(best, float(f({k: w[k] + d[k] for k in w})))
    return best, base


def keskar_sharpness(model: nn.Module, data: Tensors, loss: str = "ce", eps: float = 1e-3,
                     steps: int = 20, step_size: float = 0.25) -> float:
    """Keskar et al. (2017) Metric 2.1 in the full parameter space (A = identity).

    100 * (max_{d in box} L(w + d) - L(w)) / (1 + L(w)) with L the mean loss on
    ``data`` (the training set) and the box |d_i| <= eps (|w_i| + 1), maximised
    by :func:`box_maximum`. Keskar et al. used L-BFGS-B; projected sign ascent
    is a cheaper approximation that also gives a lower bound on the true
    maximum. The value is >= 0 and the model's weights are left untouched.
    """
    lf = loss_fn(loss)
    with _eval_mode(model):
        params = dict(model.named_parameters())

        def f(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return lf(functional_call(model, p, (data.x,)), data.y)

        top, base = box_maximum(f, params, eps=eps, steps=steps, step_size=step_size)
    return 100.0 * max(top - base, 0.0) / (1.0 + base)


def gaussian_noise(shape: torch.Size | tuple[int, ...], seed: int,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal noise of ``shape`` drawn on the CPU from ``seed`` (same on every device)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=g).to(device)


def accuracy_under_noise(model: nn.Module, data: Tensors, sigmas: list[float],
                         noise: torch.Tensor, clip: bool = False,
                         loss: str = "ce") -> list[dict[str, float]]:
    """Test loss and accuracy on ``x + sigma * noise`` for each sigma.

    ``noise`` is one fixed standard-normal draw (see :func:`gaussian_noise`),
    scaled by each sigma, so every model and sigma sees the same noise
    direction. ``clip`` clips the noisy inputs to [0, 1] (the notebook did not).
    """
    rows = []
    for sigma in sigmas:
        x = data.x + sigma * noise
        if clip:
            x = x.clamp(0.0, 1.0)
        test_loss, test_acc = evaluate(model, Tensors(x, data.y), loss)
        rows.append({"sigma": float(sigma), "test_loss": test_loss, "test_acc": test_acc})
    return rows
