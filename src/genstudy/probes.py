"""Linear classifier probes (Alain & Bengio 2016) on a frozen model, all at once.

A probe is a linear softmax classifier on the (flattened) activations of one
named point of a frozen model; its test error tells how linearly separable the
classes are there. Points are ``{name: module path}`` ("" is the model's input):
a forward hook on each module reads its output, so any model with named
submodules can be probed.

All probes of one model train together: each batch goes once through the
frozen model and feeds every probe (one Adam over all probes: its state is per
parameter, so each probe has its own; with ``lr_features`` a probe on more
features than that gets a proportionally smaller learning rate, since an Adam
step moves every weight by about the learning rate and so the logits by about
the number of features times it). A validation split stops each probe on
its own (``patience`` epochs without a better validation loss); a stopped probe
drops out of the loss, keeps its best weights, and once every probe of the
deep points has stopped the forward pass ends earlier.

Memory stays bounded: activations are produced batch by batch; the deepest
points are cached for the whole probe set only while they fit ``cache_bytes``
(deepest first, since the forward pass must anyway run up to the deepest
streamed point); the rest are recomputed from the input every epoch. The
frozen model is run in eval mode under ``no_grad`` and never changed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import Tensors, split


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the deepest needed point is read."""


@torch.no_grad()
def capture(model: nn.Module, x: torch.Tensor, points: dict[str, str],
            truncate: bool = True) -> dict[str, torch.Tensor]:
    """``{point: activations (batch x features)}`` of ``model`` on ``x``.

    With ``truncate`` the forward pass stops at the last of ``points`` it reaches.
    """
    out: dict[str, torch.Tensor] = {}
    by_module: dict[str, list[str]] = {}
    for p, mod in points.items():
        if mod == "":
            out[p] = x.flatten(1)
        else:
            by_module.setdefault(mod, []).append(p)
    remaining = [len(by_module)]

    def hook_for(names):
        def hook(_module, _inputs, output):
            for name in names:  # a copy: a later in-place op must not change what was read
                out[name] = output.detach().flatten(1).clone()
            remaining[0] -= 1
            if truncate and remaining[0] == 0:
                raise _Stop
        return hook

    handles = [model.get_submodule(m).register_forward_hook(hook_for(ps)) for m, ps in by_module.items()]
    was_training = model.training
    model.eval()
    try:
        if by_module:
            model(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return out


class Activations:
    """Activations of a frozen model over ``x`` at ``points``, batch by batch.

    The deepest points are held for all of ``x`` while their total size fits
    ``cache_bytes``; the others are recomputed per batch.
    """

    def __init__(self, model: nn.Module, points: dict[str, str], x: torch.Tensor,
                 batch_size: int, cache_bytes: int = 0, truncate: bool = True):
        self.model, self.points, self.x = model, dict(points), x
        self.batch_size, self.truncate = batch_size, truncate
        sample = capture(model, x[:1], self.points, truncate=False)
        self.order = sorted(self.points, key=lambda p: list(sample).index(p))  # forward order
        self.features = {p: sample[p].shape[1] for p in self.order}
        self.cached: dict[str, torch.Tensor] = {}
        budget, chosen = cache_bytes, []
        for p in reversed(self.order):  # deepest first
            size = len(x) * self.features[p] * sample[p].element_size()
            if size > budget:
                break
            budget -= size
            chosen.append(p)
        if chosen:
            parts = [capture(model, x[i:i + batch_size], {p: self.points[p] for p in chosen}, truncate)
                     for i in range(0, len(x), batch_size)]
            self.cached = {p: torch.cat([b[p] for b in parts]) for p in chosen}

    @property
    def cache_bytes_used(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.cached.values())

    def batch(self, idx: torch.Tensor, points: list[str]) -> dict[str, torch.Tensor]:
        """Activations of the examples ``idx`` at ``points``."""
        streamed = {p: self.points[p] for p in points if p not in self.cached}
        out = capture(self.model, self.x[idx], streamed, self.truncate) if streamed else {}
        out.update({p: self.cached[p][idx] for p in points if p in self.cached})
        return out


@dataclass(frozen=True)
class ProbeConfig:
    epochs: int = 50             # most epochs a probe trains
    patience: int = 3            # epochs without a better validation loss before a probe stops
    batch_size: int = 512
    lr: float = 1e-3             # Adam
    lr_features: int | None = None  # a probe on n > lr_features features: lr * lr_features / n
    val_fraction: float = 1 / 6  # of the probe training set, as the notebook's validation_split
    cache_bytes: int = 0         # activations held in memory for the training set
    truncate: bool = True        # stop the frozen forward pass at the deepest point still needed


def probe_lr(cfg: ProbeConfig, features: int) -> float:
    """Adam's learning rate for a probe on ``features`` features."""
    if cfg.lr_features is None or features <= cfg.lr_features:
        return cfg.lr
    return cfg.lr * cfg.lr_features / features


@torch.no_grad()
def _errors(probes: nn.ModuleDict, acts: Activations, y: torch.Tensor, idx: torch.Tensor,
            points: list[str], batch_size: int) -> dict[str, tuple[float, float]]:
    """``{point: (mean loss, error rate)}`` of the probes on the examples ``idx``."""
    loss = {p: 0.0 for p in points}
    wrong = {p: 0 for p in points}
    for i in range(0, len(idx), batch_size):
        b = idx[i:i + batch_size]
        a = acts.batch(b, points)
        for p in points:
            logits = probes[p](a[p])
            loss[p] += F.cross_entropy(logits, y[b], reduction="sum").item()
            wrong[p] += (logits.argmax(1) != y[b]).sum().item()
    n = max(len(idx), 1)
    return {p: (loss[p] / n, wrong[p] / n) for p in points}


def train_probes(model: nn.Module, points: dict[str, str], train: Tensors, test: Tensors,
                 cfg: ProbeConfig, seed: int, desc: str | None = None,
                 progress: bool = True) -> list[dict]:
    """Train one linear probe per point of the frozen ``model``, all at once.

    ``train`` is split into probe-training and validation parts
    (``cfg.val_fraction``). Returns one row per point, in forward order:
    ``point, features, train_error, val_error, test_error, test_loss, lr, epochs
    (trained), best_epoch, diverged, cached``.
    """
    start = time.perf_counter()
    fit_part, val_part = split(train, cfg.val_fraction, seed)
    x = torch.cat([fit_part.x, val_part.x])
    y = torch.cat([fit_part.y, val_part.y])
    device = x.device
    fit_idx = torch.arange(len(fit_part), device=device)
    val_idx = torch.arange(len(fit_part), len(x), device=device)
    acts = Activations(model, points, x, cfg.batch_size, cfg.cache_bytes, cfg.truncate)
    order = acts.order
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probes = nn.ModuleDict({p: nn.Linear(acts.features[p], 10) for p in order}).to(device)
    opt = torch.optim.Adam([{"params": probes[p].parameters(), "lr": probe_lr(cfg, acts.features[p])}
                            for p in order])
    gen = torch.Generator(device=device).manual_seed(seed)
    best = {p: (math.inf, 0) for p in order}  # (val loss, epoch)
    best_state = {p: {k: v.clone() for k, v in probes[p].state_dict().items()} for p in order}
    stale = {p: 0 for p in order}
    epochs = {p: 0 for p in order}
    diverged = {p: False for p in order}
    active = list(order)
    bar = tqdm(range(1, cfg.epochs + 1), desc=desc, disable=not progress, leave=False, unit="ep")
    for epoch in bar:
        if not active:
            break
        perm = fit_idx[torch.randperm(len(fit_idx), generator=gen, device=device)]
        for i in range(0, len(perm), cfg.batch_size):
            b = perm[i:i + cfg.batch_size]
            a = acts.batch(b, active)
            loss = sum(F.cross_entropy(probes[p](a[p]), y[b]) for p in active)
            opt.zero_grad(set_to_none=True)  # stopped probes get no gradient: Adam skips them
            loss.backward()
            opt.step()
        val = _errors(probes, acts, y, val_idx, active, cfg.batch_size)
        for p in list(active):
            epochs[p] = epoch
            vloss = val[p][0]
            if not math.isfinite(vloss):
                diverged[p] = True
                active.remove(p)
            elif vloss < best[p][0]:
                best[p] = (vloss, epoch)
                best_state[p] = {k: v.clone() for k, v in probes[p].state_dict().items()}
                stale[p] = 0
            else:
                stale[p] += 1
                if stale[p] >= cfg.patience:
                    active.remove(p)
        bar.set_postfix(active=len(active))
    bar.close()
    for p in order:
        probes[p].load_state_dict(best_state[p])
    train_err = _errors(probes, acts, y, fit_idx, order, cfg.batch_size)
    val_err = _errors(probes, acts, y, val_idx, order, cfg.batch_size)
    test_acts = Activations(model, points, test.x, cfg.batch_size, 0, cfg.truncate)
    test_err = _errors(probes, test_acts, test.y, torch.arange(len(test), device=device), order,
                       cfg.batch_size)
    wall = time.perf_counter() - start
    return [{"point": p, "depth": k, "features": acts.features[p],
             "train_error": train_err[p][1], "val_error": val_err[p][1],
             "test_error": test_err[p][1], "test_loss": test_err[p][0],
             "lr": probe_lr(cfg, acts.features[p]),
             "epochs": epochs[p], "best_epoch": best[p][1], "diverged": diverged[p],
             "cached": p in acts.cached, "wall_time": wall}
            for k, p in enumerate(order)]


def steps_per_epoch(snapshot_steps: list[int], batch_size: int, n_available: int) -> int:
    """Minibatches per epoch such that every snapshot falls on an epoch's end.

    The largest divisor of the snapshot steps' gcd whose epoch (that many full
    batches) fits in ``n_available`` examples; train on the first
    ``steps * batch_size`` examples and snapshot ``s`` is after ``s / steps`` epochs.
    """
    g = math.gcd(*[s for s in snapshot_steps if s > 0]) if any(s > 0 for s in snapshot_steps) else 1
    fits = [d for d in range(1, g + 1) if g % d == 0 and d * batch_size <= n_available]
    if not fits:
        raise ValueError(f"not even one batch of {batch_size} fits in {n_available} examples")
    return max(fits)
