"""Monte Carlo dropout (Gal & Ghahramani 2016) and measures of predictive uncertainty.

MC dropout evaluates an already trained dropout model with its dropout layers
active: each pass draws a new mask, and the class probabilities are averaged
over the passes. Only the dropout layers are switched to training mode, so
any other layer that behaves differently in training (none in the study's
MLPs) stays in evaluation mode.
"""

from __future__ import annotations

import torch
from torch import nn

DROPOUT_TYPES = (nn.Dropout, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Dropout1d, nn.Dropout2d)


@torch.no_grad()
def probabilities(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Softmax probabilities of ``model`` in evaluation mode (dropout off)."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]).softmax(-1) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


@torch.no_grad()
def mc_dropout_probabilities(model: nn.Module, x: torch.Tensor, passes: int = 100,
                             seed: int = 0, batch_size: int = 4096) -> torch.Tensor:
    """Class probabilities averaged over ``passes`` forward passes with dropout active.

    The masks are drawn from torch's generator seeded with ``seed`` (the global
    state is restored afterwards), so the result is repeatable.
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    was_training = model.training
    model.eval()
    drops = [m for m in model.modules() if isinstance(m, DROPOUT_TYPES)]
    for m in drops:
        m.train()
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            total = None
            for _ in range(passes):
                p = torch.cat([model(x[i:i + batch_size]).softmax(-1)
                               for i in range(0, len(x), batch_size)])
                total = p if total is None else total.add_(p)
    finally:
        model.train(was_training)
    return total / passes


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Predictive entropy (nats) of each row of class probabilities."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


def error_auroc(score: torch.Tensor, wrong: torch.Tensor) -> float:
    """P(score of a wrong prediction > score of a correct one), ties counting one half.

    The area under the ROC curve of ``score`` as a detector of errors (0.5:
    no better than chance). NaN when there are no errors or no correct ones.
    """
    wrong = wrong.bool()
    n_wrong, n_right = int(wrong.sum()), int((~wrong).sum())
    if n_wrong == 0 or n_right == 0:
        return float("nan")
    # Mann-Whitney U from average ranks (tied scores share their mean rank).
    order = score.double().argsort()
    _, inverse, counts = torch.unique_consecutive(score.double()[order], return_inverse=True,
                                                  return_counts=True)
    mean_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2
    ranks = torch.empty(len(score), dtype=torch.double, device=score.device)
    ranks[order] = mean_rank[inverse]
    u = ranks[wrong].sum() - n_wrong * (n_wrong + 1) / 2
    return float(u / (n_wrong * n_right))
