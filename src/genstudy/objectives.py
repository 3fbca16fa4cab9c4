"""Training objectives beyond a plain loss, in :func:`genstudy.training.fit`'s shape.

An objective is ``(model, x, y) -> (loss, logits)``: the scalar to minimise
and the logits that ``fit`` scores accuracy with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gradient_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E2's "gradient loss" (double backpropagation through inputs and targets).

    With the one-hot label y (float, requiring grad) and p = softmax(model(x)),
    S = sum over the batch of mean_k (y_k - p_k)^2 (Keras' per-example MSE,
    summed as a gradient tape sums a vector loss), and

        L = mean over all elements of (dS/dx)^2 + mean over all elements of (dS/dy)^2.

    Both gradients are taken with ``create_graph=True`` so that L can be
    differentiated with respect to the weights (second-order backward).
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    p = logits.softmax(-1)
    onehot = F.one_hot(y, p.shape[-1]).to(p.dtype).requires_grad_(True)
    s = (onehot - p).pow(2).mean(-1).sum()
    dx, dy = torch.autograd.grad(s, (x, onehot), create_graph=True)
    return dx.pow(2).mean() + dy.pow(2).mean(), logits
