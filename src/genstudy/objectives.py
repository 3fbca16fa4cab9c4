"""What to minimise, and what to enforce after each step.

An *objective* is ``(model, x, y) -> (loss, logits)`` as
:func:`genstudy.training.fit` takes it (the scalar to minimise and the logits
that ``fit`` scores accuracy with); a *constraint* is ``(model) -> None``, run
by ``fit`` after every optimizer step.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .training import Objective, objective_from_loss

# --- Weight penalties and the max-norm constraint (E3, regularization) -----------------------


def _kernels(model: nn.Module, layers: Iterable[str] | None = None,
             biases: bool = False) -> list[torch.Tensor]:
    """The weight matrices (kernels) of the Linear/Conv layers, and their biases if ``biases``.

    ``layers``: names of the layers to take (``model.named_modules()`` names);
    None takes every Linear/Conv layer.
    """
    wanted = None if layers is None else set(layers)
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, (nn.Linear, nn.Conv2d)) and (wanted is None or name in wanted)]
    if wanted is not None and wanted - {n for n, _ in found}:
        raise ValueError(f"no Linear/Conv layer named {sorted(wanted - {n for n, _ in found})}")
    return [w for _, m in found for w in ((m.weight, m.bias) if biases and m.bias is not None else (m.weight,))]


def weight_penalty(model: nn.Module, l1: float = 0.0, l2: float = 0.0,
                   layers: Iterable[str] | None = None, biases: bool = False) -> torch.Tensor:
    """``l1 * sum|W| + l2 * sum W^2`` over the kernels, as Keras' ``l1_l2`` regularizer; with
    ``biases`` over the biases too (Keras' ``bias_regularizer``, as E7's notebook sets it).

    Note Keras' ``l2(a)`` is ``a * sum W^2`` (no 1/2), which is what this computes.
    """
    kernels = _kernels(model, layers, biases)
    total = kernels[0].new_zeros(()) if kernels else torch.zeros(())
    for w in kernels:
        if l1:
            total = total + l1 * w.abs().sum()
        if l2:
            total = total + l2 * w.square().sum()
    return total


def penalized(l1: float = 0.0, l2: float = 0.0, base: Objective | None = None,
              loss: str = "ce", layers: Iterable[str] | None = None, biases: bool = False) -> Objective:
    """The objective ``base`` (default: the named loss) plus :func:`weight_penalty`.

    As in Keras, the penalty is added once per batch to the batch's mean loss,
    and the loss ``fit`` records is the penalised one.
    """
    base = base or objective_from_loss(loss)
    if not l1 and not l2:
        return base
    layers = None if layers is None else list(layers)

    def objective(model, x, y):
        data_loss, logits = base(model, x, y)
        return data_loss + weight_penalty(model, l1, l2, layers, biases), logits
    return objective


def max_norm(radius: float, layers: Iterable[str] | None = None):
    """A constraint: every unit's incoming weight vector gets L2 norm <= ``radius``.

    For a Linear layer that is each row of ``weight`` (Keras' ``max_norm`` on a
    Dense kernel, axis 0); for a Conv2d, each output channel's filter. Rows
    already inside the ball are left exactly as they are (Keras scales them by
    norm / (norm + 1e-7), a change of ~1e-7 relative that we do not copy).
    """
    if radius <= 0:
        raise ValueError(f"max-norm radius must be > 0, got {radius}")
    layers = None if layers is None else list(layers)

    @torch.no_grad()
    def constraint(model: nn.Module) -> None:
        for w in _kernels(model, layers):
            norms = w.flatten(1).norm(dim=1)
            scale = torch.where(norms > radius, radius / norms, torch.ones_like(norms))
            w.mul_(scale.view(-1, *([1] * (w.dim() - 1))))
    return constraint


# --- The gradient loss (E2, double backpropagation) --------------------------------------------


def gradient_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E2's "gradient loss" (double backpropagation through inputs and targets).

    With the one-hot label y (float) and p = softmax(model(x)),
    S = sum over the batch of mean_k (y_k - p_k)^2 (Keras' per-example MSE,
    summed as a gradient tape sums a vector loss), and

        L = mean over all elements of (dS/dx)^2 + mean over all elements of (dS/dy)^2.

    The part of the backward that is closed form is written out: dS/dy = 2 (y - p) / K and
    dS/dlogits = J_softmax^T dS/dp with dS/dp = -dS/dy; then dS/dx is ONE vector-Jacobian
    product through the model, taken with ``create_graph=True`` so that L can be
    differentiated with respect to the weights (second-order backward). Same value and
    weight gradients as :func:`gradient_loss_autograd` up to float rounding.
    """
    x = x.detach().requires_grad_(True)
    written_out = getattr(model, "logits_and_input_vjp", None)   # models.ConvNetE2 has one
    logits, vjp = written_out(x) if written_out else (model(x), None)
    p = logits.softmax(-1)
    dy = 2 * (F.one_hot(y, p.shape[-1]).to(p.dtype) - p) / p.shape[-1]   # dS/dy
    dp = -dy                                                              # dS/dp
    dz = p * (dp - (p * dp).sum(-1, keepdim=True))   # dS/dlogits; the softmax Jacobian is symmetric
    if vjp:
        dx = vjp(dz)
    else:
        dx, = torch.autograd.grad(logits, x, dz, create_graph=True)
    return dx.pow(2).mean() + dy.pow(2).mean(), logits


def gradient_loss_autograd(model: nn.Module, x: torch.Tensor,
                           y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gradient_loss` with both gradients of S left to autograd (the reference)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    p = logits.softmax(-1)
    onehot = F.one_hot(y, p.shape[-1]).to(p.dtype).requires_grad_(True)
    s = (onehot - p).pow(2).mean(-1).sum()
    dx, dy = torch.autograd.grad(s, (x, onehot), create_graph=True)
    return dx.pow(2).mean() + dy.pow(2).mean(), logits
