"""Measures of a trained model: input sensitivity, Keskar sharpness, accuracy under noise.

None of them changes the model: weights are read, never written (sharpness
evaluates perturbed weights through ``torch.func.functional_call``), and the
model's train/eval mode is restored on return.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
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


@contextmanager
def _loss_mode(model: nn.Module, batch_stats: bool) -> Iterator[nn.Module]:
    """The network whose loss a sharpness measures. ``batch_stats`` False: ``model`` in eval mode
    (batch norm normalizes with its fixed running statistics). True: a copy in eval mode whose
    batch-norm layers normalize with the statistics of the batch they see, as Keras 1's
    ``BatchNormalization(mode=2)`` in Keskar et al.'s released code does at test time too, so a
    perturbation's shift of the pre-activations is re-normalized. The copy's running statistics
    may change; ``model`` is never touched."""
    if not batch_stats:
        with _eval_mode(model):
            yield model
        return
    measured = copy.deepcopy(model).eval()
    for m in measured.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    yield measured


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
                     steps: int = 20, step_size: float = 0.25, batch_stats: bool = False) -> float:
    """Keskar et al. (2017) Metric 2.1 in the full parameter space (A = identity).

    100 * (max_{d in box} L(w + d) - L(w)) / (1 + L(w)) with L the mean loss on
    ``data`` (the training set) and the box |d_i| <= eps (|w_i| + 1), maximised
    by :func:`box_maximum`. Keskar et al. used L-BFGS-B; projected sign ascent
    is a cheaper approximation that also gives a lower bound on the true
    maximum. The value is >= 0 and the model's weights are left untouched. ``batch_stats``: batch
    norm with the statistics of ``data`` itself (see :func:`_loss_mode`).
    """
    lf = loss_fn(loss)
    with _loss_mode(model, batch_stats) as model:
        params = dict(model.named_parameters())

        def f(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return lf(functional_call(model, p, (data.x,)), data.y)

        top, base = box_maximum(f, params, eps=eps, steps=steps, step_size=step_size)
    return 100.0 * max(top - base, 0.0) / (1.0 + base)


def box_maximum_lbfgsb(f: Callable[[dict[str, torch.Tensor]], object],
                       params: dict[str, torch.Tensor], eps: float = 1e-3,
                       iterations: int = 10) -> tuple[float, float, int, int, list[float]]:
    """Max of ``f(w + d)`` over the box |d_i| <= eps (|w_i| + 1) by L-BFGS-B (scipy).

    ``f(p)`` returns a scalar tensor (its gradient comes from autograd) or a pair
    ``(value, {name: gradient})`` (a loss that accumulates its own gradient over
    batches). scipy works in float64 on the flattened perturbation d, starting
    at d = 0, for at most ``iterations`` L-BFGS-B iterations; its gradient and
    relative-decrease tolerances are zero, because at a trained minimum the
    gradient is already tiny and scipy would otherwise stop at d = 0. Every
    point L-BFGS-B evaluates lies in the box, so the largest value seen is kept.
    Returns ``(max f(w + d), f(w), iterations, evaluations, trace)``, ``trace[k]`` the largest value
    seen by the end of iteration k + 1 (so a run of n iterations gives the answer of every shorter
    one: L-BFGS-B's iterates do not depend on maxiter); ``params`` are not modified.
    """
    from scipy.optimize import minimize

    w = {k: v.detach() for k, v in params.items()}
    names, shapes = list(w), [v.shape for v in w.values()]
    sizes = [v.numel() for v in w.values()]
    half = torch.cat([(eps * (v.abs() + 1)).flatten() for v in w.values()]).double().cpu().numpy()
    values: list[float] = []

    def value_and_grad(d_flat: np.ndarray) -> tuple[float, np.ndarray]:
        parts = torch.from_numpy(d_flat).split(sizes)
        d = {k: part.view(shape).to(w[k]) for k, part, shape in zip(names, parts, shapes)}
        # d f(w + d) / d d = the gradient at the leaf w + d
        p = {k: (w[k] + d[k]).requires_grad_(True) for k in names}
        out = f(p)
        if isinstance(out, torch.Tensor):
            grads = dict(zip(names, torch.autograd.grad(out, [p[k] for k in names])))
            value = float(out.detach())
        else:
            value, grads = float(out[0]), out[1]
        values.append(value)
        g = torch.cat([grads[k].detach().double().flatten().cpu() for k in names]).numpy()
        return -value, -g  # scipy minimises

    trace: list[float] = []
    res = minimize(value_and_grad, np.zeros(sum(sizes)), jac=True, method="L-BFGS-B",
                   bounds=np.stack([-half, half], axis=1), callback=lambda _: trace.append(max(values)),
                   options={"maxiter": iterations, "gtol": 0.0, "ftol": 0.0})
    return max(values), values[0], int(res.nit), int(res.nfev), trace


@dataclass
class Sharpness:
    value: float        # Metric 2.1, in percent
    loss: float         # L(w) on the data set
    max_loss: float     # the largest L(w + d) found in the box
    iterations: int     # L-BFGS-B iterations done
    evaluations: int    # loss-and-gradient evaluations over the whole data set
    trace: list[float]  # the sharpness by the end of each iteration (Metric 2.1, percent)


def keskar_sharpness_lbfgsb(model: nn.Module, data: Tensors, eps: float = 1e-3,
                            iterations: int = 10, batch_size: int = 4096,
                            loss: str = "ce", batch_stats: bool = False) -> Sharpness:
    """Keskar et al. (2017) Metric 2.1 in the full parameter space, maximised as they did, by L-BFGS-B.

    100 * (max_{d in box} L(w + d) - L(w)) / (1 + L(w)) with L the mean loss over
    all of ``data`` (the training set), box |d_i| <= eps (|w_i| + 1) over every
    parameter (batch-norm scales and shifts included). L and its gradient are
    summed exactly over batches of ``batch_size`` (float64 sums), so memory stays
    bounded and the maximiser sees the full loss, not a minibatch. Batch norm is
    in eval mode: it normalises with its running statistics, so L(w + d) is a
    fixed function of the weights (its buffers are not perturbed or updated);
    with ``batch_stats`` it normalises with the statistics of each batch of
    ``batch_size`` images, as Keskar et al.'s network did (see :func:`_loss_mode`).
    The model's weights are never modified (perturbed weights go through
    ``torch.func.functional_call``) and its train/eval mode is restored.
    """
    lf = loss_fn(loss)
    n = len(data)
    with _loss_mode(model, batch_stats) as model:
        def f(p: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
            total = 0.0  # p's tensors are leaves that require grad
            grads = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in p.items()}
            for i in range(0, n, batch_size):
                xb, yb = data.x[i:i + batch_size], data.y[i:i + batch_size]
                batch = lf(functional_call(model, p, (xb,)), yb) * (len(yb) / n)
                for k, g in zip(p, torch.autograd.grad(batch, list(p.values()))):
                    grads[k] += g.double()
                total += float(batch.detach().double())
            return total, grads

        top, base, nit, nfev, trace = box_maximum_lbfgsb(f, dict(model.named_parameters()), eps, iterations)
    metric = lambda v: 100.0 * max(v - base, 0.0) / (1.0 + base)  # noqa: E731
    return Sharpness(metric(top), base, top, nit, nfev, [metric(v) for v in trace])


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
