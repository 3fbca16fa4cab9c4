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
the number of features times it). Probes on equally many features are stacked
and trained as one batched matmul (figure 8's 129 probes: one ``baddbmm`` per
batch instead of 129 small layers). A validation split stops each probe on
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
        # the cached points held as one (examples, points, features) block per feature count, so a
        # batch is one gather of whole rows per block, not one per point (figure 8: 129 points, one)
        self.blocks: dict[int, tuple[list[str], torch.Tensor]] = {}
        if chosen:
            parts = [capture(model, x[i:i + batch_size], {p: self.points[p] for p in chosen}, truncate)
                     for i in range(0, len(x), batch_size)]
            for f in dict.fromkeys(self.features[p] for p in chosen):
                ps = [p for p in self.order if p in chosen and self.features[p] == f]
                self.blocks[f] = (ps, torch.stack([torch.cat([b[p] for b in parts]) for p in ps], dim=1))
        self.cached = {p: (f, i) for f, (ps, _) in self.blocks.items() for i, p in enumerate(ps)}

    @property
    def cache_bytes_used(self) -> int:
        return sum(t.numel() * t.element_size() for _, t in self.blocks.values())

    def batch(self, idx: torch.Tensor, points: list[str]) -> dict[str, torch.Tensor]:
        """Activations of the examples ``idx`` at ``points``."""
        streamed = {p: self.points[p] for p in points if p not in self.cached}
        out = capture(self.model, self.x[idx], streamed, self.truncate) if streamed else {}
        wanted_points = set(points)
        wanted = {self.cached[p][0] for p in points if p in self.cached}
        for f in wanted:
            ps, block = self.blocks[f]
            rows = block[idx]
            out.update({p: rows[:, i] for i, p in enumerate(ps) if p in wanted_points})
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
    stack: bool = True           # probes on equally many features as one batched matmul (False: one each)


def probe_lr(cfg: ProbeConfig, features: int) -> float:
    """Adam's learning rate for a probe on ``features`` features."""
    if cfg.lr_features is None or features <= cfg.lr_features:
        return cfg.lr
    return cfg.lr * cfg.lr_features / features


class _Probes(nn.Module):
    """Every probe's weights and biases; with ``stack`` the probes on the same number of features
    are one (probes, classes, features) tensor, so a batch is one ``baddbmm`` per feature count,
    not one small matmul per probe (figure 8's 129 probes of 128 features: one). Each probe is
    initialised as ``nn.Linear(features, classes)``, in ``order``, from the current RNG state, so
    stacked or not, the probes start alike; Adam's update is per element, so they train alike."""

    def __init__(self, features: dict[str, int], order: list[str], classes: int = 10, stack: bool = True):
        super().__init__()
        init = {p: nn.Linear(features[p], classes) for p in order}
        groups: dict[str, list[str]] = {}
        for p in order:
            groups.setdefault(str(features[p]) if stack else p, []).append(p)
        self.groups = groups
        self.where = {p: (g, i) for g, ps in groups.items() for i, p in enumerate(ps)}
        # (probes, classes, features): each probe's weight as nn.Linear holds it
        self.weight = nn.ParameterDict({g: nn.Parameter(torch.stack([init[p].weight.detach() for p in ps]))
                                        for g, ps in groups.items()})
        self.bias = nn.ParameterDict({g: nn.Parameter(torch.stack([init[p].bias.detach() for p in ps]))
                                      for g, ps in groups.items()})

    def logits(self, acts: dict[str, torch.Tensor], points: list[str]) -> list[tuple[list[str], torch.Tensor]]:
        """The logits of the probes at ``points`` on their activations ``acts``, one stack at a
        time: ``[(its points, logits (points x batch x classes))]``."""
        out = []
        by_group: dict[str, list[str]] = {}
        for p in points:
            by_group.setdefault(self.where[p][0], []).append(p)
        for g, ps in by_group.items():
            w, b = self.weight[g], self.bias[g]
            if len(ps) < len(self.groups[g]):  # some probes of the group have stopped
                idx = torch.tensor([self.where[p][1] for p in ps], device=w.device)
                w, b = w[idx], b[idx]
            if len(ps) == 1:  # a probe alone: exactly nn.Linear's computation
                out.append((ps, F.linear(acts[ps[0]], w[0], b[0]).unsqueeze(0)))
            else:
                a = torch.stack([acts[p] for p in ps])
                out.append((ps, torch.baddbmm(b.unsqueeze(1), a, w.transpose(1, 2))))
        return out

    def loss(self, acts: dict[str, torch.Tensor], points: list[str], y: torch.Tensor) -> torch.Tensor:
        """The sum over the probes at ``points`` of each one's mean cross-entropy on ``y``."""
        return sum(F.cross_entropy(logits.flatten(0, 1), y.repeat(len(ps))) * len(ps)
                   for ps, logits in self.logits(acts, points))

    def get(self, p: str) -> tuple[torch.Tensor, torch.Tensor]:
        g, i = self.where[p]
        return self.weight[g][i].detach().clone(), self.bias[g][i].detach().clone()

    @torch.no_grad()
    def put(self, p: str, state: tuple[torch.Tensor, torch.Tensor]) -> None:
        g, i = self.where[p]
        self.weight[g][i], self.bias[g][i] = state


@torch.no_grad()
def _errors(probes: _Probes, acts: Activations, y: torch.Tensor, idx: torch.Tensor,
            points: list[str], batch_size: int) -> dict[str, tuple[float, float]]:
    """``{point: (mean loss, error rate)}`` of the probes on the examples ``idx``."""
    loss, wrong = {}, {}  # per stack: tensors summed over the batches, read once at the end
    for i in range(0, len(idx), batch_size):
        b = idx[i:i + batch_size]
        for ps, logits in probes.logits(acts.batch(b, points), points):
            key = tuple(ps)
            per = F.cross_entropy(logits.transpose(1, 2), y[b].expand(len(ps), -1), reduction="none").sum(1)
            miss = (logits.argmax(2) != y[b]).sum(1)
            loss[key] = loss[key] + per if key in loss else per
            wrong[key] = wrong[key] + miss if key in wrong else miss
    n = max(len(idx), 1)
    out = {}
    for key in loss:
        out.update({p: (l_ / n, w_ / n) for p, l_, w_ in zip(key, loss[key].tolist(), wrong[key].tolist())})
    return {p: out[p] for p in points}


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
        probes = _Probes(acts.features, order, stack=cfg.stack).to(device)
    # one parameter group per stack (its probes share a feature count, so a learning rate); a
    # stopped probe drops out of the loss, and the weights it ends with are its best ones (below)
    opt = torch.optim.Adam([{"params": [probes.weight[g], probes.bias[g]],
                             "lr": probe_lr(cfg, acts.features[ps[0]])} for g, ps in probes.groups.items()])
    gen = torch.Generator(device=device).manual_seed(seed)
    best = {p: (math.inf, 0) for p in order}  # (val loss, epoch)
    best_state = {p: probes.get(p) for p in order}
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
            loss = probes.loss(acts.batch(b, active), active, y[b])
            opt.zero_grad(set_to_none=True)
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
                best_state[p] = probes.get(p)
                stale[p] = 0
            else:
                stale[p] += 1
                if stale[p] >= cfg.patience:
                    active.remove(p)
        bar.set_postfix(active=len(active))
    bar.close()
    for p in order:
        probes.put(p, best_state[p])
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
