"""The one training loop every experiment uses.

The data set lives on the device as two tensors; an epoch is a seeded
permutation of indices sliced into batches (the last one may be short, as
Keras' ``fit`` does). No DataLoader, no per-sample Python work, no host sync
per batch: the epoch's loss and accuracy are summed on the device and read once.

What to minimise is an *objective* ``(model, x, y) -> (loss, logits)``; the
default is the named loss on the model's logits, experiments plug in others
(the gradient loss, weight penalties). *Constraints* run after every
optimizer step (max-norm). *Callbacks* get each epoch's metrics (DVCLive).

A run whose epoch loss turns NaN or inf, or climbs above ``diverge_factor``
times its first epoch's loss, is stopped and reported as diverged with its
epoch and the reason (:func:`divergence`); :func:`fit` never raises for it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import Tensors
from .memory import keep_freed_memory

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
LOSSES = ("ce", "bce", "mse_softmax")


def loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean loss of ``logits`` against integer labels ``y``.

    ce: categorical cross-entropy on softmax; bce: binary cross-entropy on
    the sigmoid of a single logit; mse_softmax: mean squared error between
    the one-hot label and the softmax output (as Keras' MSE on a softmax).
    """
    if name == "ce":
        return F.cross_entropy
    if name == "bce":
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits.squeeze(-1), y.float())
    if name == "mse_softmax":
        return lambda logits, y: F.mse_loss(
            logits.softmax(-1), F.one_hot(y, logits.shape[-1]).to(logits.dtype))
    raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """Class predictions: argmax, or the sign of a single (binary) logit."""
    return (logits.squeeze(-1) > 0).long() if logits.shape[-1] == 1 else logits.argmax(-1)


def objective_from_loss(name: str) -> Objective:
    lf = loss_fn(name)

    def objective(model, x, y):
        logits = model(x)
        return lf(logits, y), logits
    return objective


def make_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float,
                   momentum: float = 0.0, fused: bool = False) -> torch.optim.Optimizer:
    """``fused=True`` (sgd, adam) updates all tensors in one kernel: the same update up to
    float rounding, much less per-step overhead for small models (E1's MLP)."""
    params = [p for p in params if p.requires_grad]
    extra = {"fused": True} if fused else {}
    if fused and name not in ("sgd", "adam"):
        raise ValueError(f"fused is available for sgd and adam, not {name!r}")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, **extra)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, **extra)
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; known: sgd, adam, nadam")


# A run is diverged once an epoch's loss exceeds this many times its first epoch's. Why 10:
# the first epoch's loss is a running mean that already holds the early, high-loss batches,
# so a run that trains sits below it; an order of magnitude above it is no wobble but a
# blow-up, and a blown-up run can stay finite for epochs before it overflows (an MLP at
# lr 1e3 went 2.8, 3e7, 1e15, 8e21 over four epochs, never NaN): its metrics would describe
# a broken model. (Cross-entropy at 10 x a chance-level 2.3 puts e^-23 on the right class.)
DIVERGE_FACTOR = 10.0


def divergence(loss: float, first: float | None, factor: float | None, epoch: int) -> str:
    """Why an epoch whose mean loss is ``loss`` makes its run diverged ("" when it does not).

    ``first``: the run's first epoch's loss (None during the first epoch); ``factor``:
    None checks finiteness only. A first loss <= 0 gives no scale to compare with.
    """
    if not math.isfinite(loss):
        return f"loss {loss} at epoch {epoch}"
    if factor is not None and first is not None and first > 0 and loss > factor * first:
        return f"loss {loss:.3g} > {factor:g} x the first epoch's {first:.3g} at epoch {epoch}"
    return ""


class Callback(Protocol):
    def __call__(self, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass
class RunResult:
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per finished epoch
    diverged: bool = False
    diverged_epoch: int | None = None  # 1-based epoch that diverged (not in history)
    diverged_reason: str = ""  # why, e.g. "loss nan at epoch 3" (see divergence); "" if not
    wall_time: float = 0.0
    epoch_times: list[float] = field(default_factory=list)  # training time per epoch (no eval)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    @property
    def first_loss(self) -> float | None:
        """The first epoch's training loss: the scale divergence is judged against."""
        return self.history[0]["train_loss"] if self.history else None


@torch.no_grad()
def evaluate(model: nn.Module, data: Tensors, loss: str = "ce",
             batch_size: int = 4096) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on ``data`` in eval mode."""
    was_training = model.training
    model.eval()
    lf = loss_fn(loss)
    total_loss = torch.zeros((), device=data.x.device)
    correct = torch.zeros((), device=data.x.device, dtype=torch.long)
    for i in range(0, len(data), batch_size):
        xb, yb = data.x[i:i + batch_size], data.y[i:i + batch_size]
        logits = model(xb)
        total_loss += lf(logits, yb) * len(yb)
        correct += (predictions(logits) == yb).sum()
    model.train(was_training)
    n = max(len(data), 1)
    return total_loss.item() / n, correct.item() / n


def fit(model: nn.Module, train: Tensors, *, epochs: int, batch_size: int,
        optimizer: torch.optim.Optimizer, seed: int, loss: str = "ce",
        objective: Objective | None = None, eval_sets: dict[str, Tensors] | None = None,
        constraints: Iterable[Callable[[nn.Module], None]] = (),
        callbacks: Iterable[Callback] = (), desc: str | None = None,
        progress: bool = True,
        until: Callable[[dict[str, float]], bool] | None = None,
        diverge_factor: float | None = DIVERGE_FACTOR) -> RunResult:
    """Train ``model`` in place on ``train`` (already on the model's device).

    Per epoch it records ``train_loss``/``train_acc`` (running means over the
    epoch's batches, as Keras reports them) and ``<name>_loss``/``<name>_acc``
    for every evaluation set, plus ``epoch`` and ``time``. The batch order is
    drawn from ``seed``; dropout draws from torch's global generator, which
    ``fit`` seeds from ``seed`` too, so a run is repeatable bit for bit.

    ``until``: a predicate on an epoch's metrics; training stops after the first
    epoch that satisfies it (``epochs`` is then a cap, the epochs run are
    ``len(result.history)``), so runs can be trained to the same criterion.

    ``diverge_factor``: the run stops as diverged at the first epoch whose loss is
    not finite or exceeds this many times the first epoch's (None: non-finite only);
    the diverged epoch is not in ``history``.
    """
    keep_freed_memory()  # reuse each step's big blocks instead of page-faulting them in anew
    objective = objective or objective_from_loss(loss)
    eval_sets = eval_sets or {}
    constraints, callbacks = list(constraints), list(callbacks)
    device = train.x.device
    gen = torch.Generator(device=device).manual_seed(seed)
    torch.manual_seed(seed)
    n = len(train)
    result = RunResult()
    start = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False, unit="ep")
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = train.x[idx], train.y[idx]
            batch_loss, logits = objective(model, xb, yb)
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
            for c in constraints:
                c(model)
            loss_sum += batch_loss.detach() * len(idx)
            correct += (predictions(logits.detach()) == yb).sum()
        train_loss = loss_sum.item() / n
        result.epoch_times.append(time.perf_counter() - t0)
        reason = divergence(train_loss, result.first_loss, diverge_factor, epoch)
        if reason:
            result.diverged, result.diverged_epoch, result.diverged_reason = True, epoch, reason
            break
        metrics = {"epoch": epoch, "train_loss": train_loss, "train_acc": correct.item() / n}
        for name, data in eval_sets.items():
            metrics[f"{name}_loss"], metrics[f"{name}_acc"] = evaluate(model, data, loss)
        metrics["time"] = result.epoch_times[-1]
        result.history.append(metrics)
        bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items() if k.endswith("acc")})
        for cb in callbacks:
            cb(epoch, metrics)
        if until is not None and until(metrics):
            break
    bar.close()
    result.wall_time = time.perf_counter() - start
    return result


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data: Tensors, batch_size: int = 4096) -> None:
    """Set every batch-norm layer's running statistics to their exact averages over ``data``.

    The running means/variances are moving averages of past batches, taken while the
    weights kept changing; with few steps per epoch (large batches) they lag the
    final weights, and the eval-mode network is not the trained one (measured on F1:
    eval-mode train accuracy 0.96 -> 0.996 after recalibration). Training never
    reads these buffers, so recalibrating between epochs does not change training.
    The model's train/eval mode and the layers' momentum are restored.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was_training, momenta = model.training, [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    # batches of (nearly) equal size: the cumulative average weighs every batch the same
    size = -(-len(data) // -(-len(data) // batch_size))
    for i in range(0, len(data), size):
        model(data.x[i:i + size])
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.train(was_training)


def lr_decay(optimizer: torch.optim.Optimizer, factor: float) -> Callback:
    """A :func:`fit` callback that multiplies every learning rate by ``factor`` after each epoch."""
    def callback(epoch: int, metrics: dict[str, float]) -> None:
        for group in optimizer.param_groups:
            group["lr"] *= factor
    return callback
