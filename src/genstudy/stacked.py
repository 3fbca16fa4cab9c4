"""Training a stack of same-shaped MLPs at once (E5's sweep and E6's margins).

A sweep trains dozens of small MLPs that differ only in learning rate and seed; at small
batches a step of one model is mostly overhead. :func:`fit_stack` trains K of them in one step:
weights stacked as ``(K, out, in)`` (``nn.Linear``'s layout), a batch ``(K, B, in)`` (each model
its own batch order), batched matmuls (``torch.baddbmm``), the backward pass written out, SGD with
momentum and a learning rate per model. (Measured faster here than ``torch.func`` + ``vmap``.)

A stacked model gives the run :func:`genstudy.training.fit` gives it alone (equal within float
tolerance): the same per-seed ``torch.randperm`` batch order (last batch may be short), SGD as
``torch.optim.SGD`` (dampening 0, no Nesterov), one :class:`~genstudy.training.RunResult` per model
with the same history names, and divergence judged per model
(:func:`~genstudy.training.divergence`): a diverged model leaves the stack and the others go on
undisturbed, since every operation of a step is per model. Evaluation may run at chosen epochs
only (``eval_epochs``), since on a small training set the test set costs more than training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Collection, Iterable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import Tensors
from .training import DIVERGE_FACTOR, RunResult, divergence, make_optimizer

StackCallback = Callable[[int, int, dict], None]  # (model index, epoch, metrics)
ACTIVATION_TYPES = (nn.ReLU, nn.Tanh, nn.SELU, nn.Sigmoid, nn.Identity)


DROPOUT_TYPES = (nn.Dropout, nn.AlphaDropout)


def _layers(model: nn.Module, dropout: bool = False
            ) -> tuple[list[nn.Linear], list[nn.Module], list[nn.Module | None]]:
    """The Linear layers, the activations between them and the dropout layer before each Linear
    (None where there is none) of an MLP. Dropout layers are refused unless ``dropout``."""
    linears, acts, drops = [], [], []
    pending = None
    for m in model.children():
        if isinstance(m, nn.Linear):
            linears.append(m)
            drops.append(pending)
            pending = None
        elif isinstance(m, ACTIVATION_TYPES):
            if len(acts) != len(linears) - 1:
                raise ValueError("stacking needs Linear and activation layers alternating")
            acts.append(m)
        elif dropout and isinstance(m, DROPOUT_TYPES) and pending is None:
            pending = m
        elif not isinstance(m, nn.Flatten):
            allowed = "Flatten, Linear, activations" + (", one dropout before each Linear" if dropout else "")
            raise ValueError(f"cannot stack a model with a {type(m).__name__} layer here "
                             f"(MLPs only: {allowed})")
    if not linears or len(acts) != len(linears) - 1 or pending is not None:
        raise ValueError("stacking needs an MLP: Linear layers with an activation between each two")
    return linears, acts, drops


def _activation_backward(act: nn.Module, z: torch.Tensor, h: torch.Tensor,
                         dh: torch.Tensor) -> torch.Tensor:
    """The gradient at the activation's input ``z`` from the one at its output ``h = act(z)``."""
    if isinstance(act, nn.ReLU):
        return dh.mul_(z > 0)
    if isinstance(act, nn.Tanh):
        return dh.mul_(1 - h * h)
    if isinstance(act, nn.Sigmoid):
        return dh.mul_(h * (1 - h))
    if isinstance(act, nn.SELU):  # scale for z > 0; scale * alpha * e^z = h + scale * alpha below
        scale, alpha = 1.0507009873554805, 1.6732632423543772
        return dh.mul_(torch.where(z > 0, scale, h + scale * alpha))
    return dh  # nn.Identity


def _stackable(models: Sequence[nn.Module], dropout: bool = False) -> list[tuple]:
    """Each model's :func:`_layers`, or a ValueError if they cannot share a stack."""
    layers = [_layers(m, dropout) for m in models]
    shapes = {tuple(tuple(l.weight.shape) for l in ls) for ls, _, _ in layers}
    if len(shapes) != 1:
        raise ValueError(f"models of different shapes cannot be stacked: {shapes}")
    kinds = {tuple(type(a) for a in acts) + tuple((type(d), d.p) if d else None for d in drops)
             for _, acts, drops in layers}
    if len(kinds) != 1:
        raise ValueError("models with different activations or dropout cannot be stacked")
    return layers


class StackedMLP:
    """K same-shaped MLPs as stacked weights ``W[l]: (K, out, in)``, ``b[l]: (K, 1, out)``.

    The weights keep ``nn.Linear``'s (out, in) layout: then the momentum update
    ``dz^T h`` and the forward ``h W^T`` stream the weights in the order the
    batched matmul reads them, which measured 1.2-1.7x faster at the sweep's
    small batches than the (in, out) layout.
    """

    def __init__(self, models: Sequence[nn.Module], dropout: bool = False):
        layers = _stackable(models, dropout)
        self.activations, self.dropouts = layers[0][1], layers[0][2]
        n_layers = len(layers[0][0])
        with torch.no_grad():
            self.weights = [torch.stack([ls[i].weight for ls, _, _ in layers]).contiguous()
                            for i in range(n_layers)]
            self.biases = [torch.stack([ls[i].bias for ls, _, _ in layers]).unsqueeze(1).contiguous()
                           for i in range(n_layers)]

    @property
    def params(self) -> list[torch.Tensor]:
        return [t for pair in zip(self.weights, self.biases) for t in pair]

    def __len__(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, B, classes)`` of inputs ``(K, B, in)``."""
        h = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w.transpose(1, 2))
            if i < len(self.activations):
                h = self.activations[i](h)
        return h

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, B, classes)`` of inputs ``(B, in)`` shared by all models.

        The first layer is one matmul against the models' weights side by side.
        """
        k, d_out, d_in = self.weights[0].shape
        h = (x @ self.weights[0].view(k * d_out, d_in).t()).view(len(x), k, d_out).transpose(0, 1)
        h = h + self.biases[0]
        for i, (w, b) in enumerate(zip(self.weights[1:], self.biases[1:]), start=1):
            h = self.activations[i - 1](h)
            h = torch.baddbmm(b, h, w.transpose(1, 2))
        return h

    @torch.no_grad()
    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor, momentum: float,
                 bufs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD (+ momentum) step of every model on its batch ``x (K, B, in)``, ``y (K, B)``.

        Returns the per-model mean CE loss ``(K,)`` and the logits. The backward
        pass is written out (softmax minus one-hot, then layer by layer), which
        measured 1.15-1.5x faster per step than autograd at the sweep's batch
        sizes 2-32. Each weight gradient ``dz^T h`` goes straight into its
        momentum buffer with one fused ``baddbmm_`` (beta = momentum), which
        saves a pass over the weights, and the weights then take
        ``W -= lr * buf`` (torch.optim.SGD's update).
        """
        hs, zs = [x], []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            zs.append(torch.baddbmm(b, hs[-1], w.transpose(1, 2)))
            if i < len(self.activations):
                hs.append(self.activations[i](zs[-1]))
        logits, y1 = zs[-1], y.unsqueeze(-1)
        log_p = logits.log_softmax(-1)
        nll = -log_p.gather(-1, y1)
        per_model = nll.mean((1, 2))
        dz = log_p.exp_().scatter_add_(-1, y1, torch.full_like(nll, -1.0)).div_(y.shape[1])
        for i in reversed(range(len(self.weights))):
            dh = torch.bmm(dz, self.weights[i]) if i > 0 else None  # before W changes
            bw, bb = bufs[2 * i], bufs[2 * i + 1]
            bw.baddbmm_(dz.transpose(1, 2), hs[i], beta=momentum)
            bb.mul_(momentum).add_(dz.sum(1, keepdim=True))
            self.weights[i].addcmul_(bw, lr, value=-1.0)
            self.biases[i].addcmul_(bb, lr, value=-1.0)
            if dh is not None:
                dz = _activation_backward(self.activations[i - 1], zs[i - 1], hs[i], dh)
        return per_model, logits

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the models at positions ``keep`` (a drop of diverged models)."""
        with torch.no_grad():
            self.weights = [w[keep] for w in self.weights]
            self.biases = [b[keep] for b in self.biases]

    def write_back(self, k: int, model: nn.Module) -> None:
        """Copy the stacked weights of position ``k`` into ``model``'s layers."""
        with torch.no_grad():
            for lin, w, b in zip(_layers(model, dropout=True)[0], self.weights, self.biases):
                lin.weight.copy_(w[k])
                lin.bias.copy_(b[k, 0])


@torch.no_grad()
def evaluate_stack(stack: StackedMLP, data: Tensors, batch_size: int = 1000
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per model (mean CE loss, accuracy) on ``data``, as two ``(K,)`` tensors."""
    k = len(stack)
    x = data.x.flatten(1)
    loss = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.float64)
    for i in range(0, len(data), batch_size):
        xb, yb = x[i:i + batch_size], data.y[i:i + batch_size]
        logits = stack.forward_shared(xb)
        ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(k), reduction="none")
        loss += ce.view(k, -1).sum(1)
        correct += (logits.argmax(-1) == yb).sum(1)
    n = max(len(data), 1)
    return loss / n, correct / n


# On a CPU a stack runs fastest while its weights and momentum buffers stay in the
# last-level cache: every step streams them once or more. Measured on this project's
# 2-core CPU (32 MiB L3), MLP 784-512-10 at batch 2: 0.17 ms per model-step in stacks
# of 4 (13 MB), 0.20 in stacks of 5, 0.29 in stacks of 8 (26 MB). A GPU takes the whole
# stack at once.
CPU_STACK_BYTES = 14 * 2**20


def default_max_stack(model: nn.Module, device: torch.device) -> int | None:
    """Models per stack: None (all) on a GPU; on a CPU as many as keep the stack's
    weights and momentum buffers within :data:`CPU_STACK_BYTES`."""
    if device.type != "cpu":
        return None
    per_model = 2 * sum(p.numel() * p.element_size() for p in model.parameters())
    return max(1, CPU_STACK_BYTES // per_model)


def fit_stack(models: Sequence[nn.Module], train: Tensors, *, epochs: int, batch_size: int,
              lrs: Sequence[float], seeds: Sequence[int], momentum: float = 0.0,
              eval_sets: dict[str, Tensors] | None = None,
              eval_epochs: Collection[int] | None = None, callbacks: Iterable[StackCallback] = (),
              max_stack: int | Literal["auto"] | None = "auto", desc: str | None = None,
              progress: bool = True,
              diverge_factor: float | None = DIVERGE_FACTOR) -> list[RunResult]:
    """Train ``models`` (same-shaped MLPs) in place, together, with SGD (+ momentum) on cross-entropy.

    Model ``k`` trains with ``lrs[k]`` and the batch order of ``seeds[k]``; its :class:`RunResult`
    is what :func:`training.fit` would return for it alone (``wall_time``: its share of its stack's
    time). ``eval_sets`` are evaluated after the epochs in ``eval_epochs`` (None: every epoch) and
    after the last. Callbacks get ``(k, epoch, metrics)``. ``diverge_factor`` as in ``fit``, per
    model. The models train in consecutive stacks of at most ``max_stack`` (None: all in one;
    "auto": :func:`default_max_stack`); the results do not depend on it.
    """
    k_all = len(models)
    if not (len(lrs) == len(seeds) == k_all) or k_all == 0:
        raise ValueError("fit_stack needs one lr and one seed per model")
    if max_stack == "auto":
        max_stack = default_max_stack(models[0], train.x.device)
    if max_stack is not None and max_stack < 1:
        raise ValueError(f"max_stack must be at least 1 or None (got {max_stack})")
    size = k_all if max_stack is None else max_stack
    results: list[RunResult] = []
    callbacks = list(callbacks)
    for start in range(0, k_all, size):
        part = slice(start, start + size)
        cbs = [lambda k, ep, m, cb=cb, off=start: cb(off + k, ep, m) for cb in callbacks]
        results += _fit_one_stack(models[part], train, epochs=epochs, batch_size=batch_size,
                                  lrs=lrs[part], seeds=seeds[part], momentum=momentum,
                                  eval_sets=eval_sets, eval_epochs=eval_epochs, callbacks=cbs,
                                  desc=desc, progress=progress, diverge_factor=diverge_factor)
    return results


def _fit_one_stack(models, train, *, epochs, batch_size, lrs, seeds, momentum, eval_sets,
                   eval_epochs, callbacks, desc, progress, diverge_factor) -> list[RunResult]:
    k_all = len(models)
    eval_sets = eval_sets or {}
    callbacks = list(callbacks)
    device = train.x.device
    stack = StackedMLP(models)
    bufs = [torch.zeros_like(p) for p in stack.params]
    lr = torch.tensor(list(lrs), dtype=bufs[0].dtype, device=device).view(-1, 1, 1)
    # One generator per distinct seed, as fit seeds one per run.
    distinct = sorted(set(seeds))
    gens = [torch.Generator(device=device).manual_seed(s) for s in distinct]
    seed_pos = torch.tensor([distinct.index(s) for s in seeds], device=device)
    active = torch.arange(k_all, device=device)  # original index of each stack position
    x_all, y_all, n = train.x.flatten(1), train.y, len(train)
    results = [RunResult() for _ in range(k_all)]
    start = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False, unit="ep")
    for epoch in bar:
        if len(active) == 0:
            break
        t0 = time.perf_counter()
        k = len(active)
        perms = torch.stack([torch.randperm(n, generator=g, device=device) for g in gens])
        perms = perms[seed_pos]  # (K, n): each model's batch order
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device, dtype=torch.float64)
        for i in range(0, n, batch_size):
            idx = perms[:, i:i + batch_size]
            xb, yb = x_all[idx], y_all[idx]
            per_model, logits = stack.sgd_step(xb, yb, lr, momentum, bufs)
            with torch.no_grad():
                loss_sum += per_model * idx.shape[1]
                correct += (logits.argmax(-1) == yb).sum(1)
        epoch_time = time.perf_counter() - t0
        train_loss = (loss_sum / n).tolist()
        train_acc = (correct / n).tolist()
        evaluated = {}
        reasons = [divergence(train_loss[pos], results[orig].first_loss, diverge_factor, epoch)
                   for pos, orig in enumerate(active.tolist())]
        healthy = [not r for r in reasons]
        if (eval_epochs is None or epoch in eval_epochs or epoch == epochs) and eval_sets and any(healthy):
            for name, data in eval_sets.items():
                el, ea = evaluate_stack(stack, data)
                evaluated[name] = (el.tolist(), ea.tolist())
        for pos, orig in enumerate(active.tolist()):
            res = results[orig]
            res.epoch_times.append(epoch_time / k)
            if reasons[pos]:
                res.diverged, res.diverged_epoch, res.diverged_reason = True, epoch, reasons[pos]
                continue
            metrics = {"epoch": epoch, "train_loss": train_loss[pos], "train_acc": train_acc[pos]}
            for name, (el, ea) in evaluated.items():
                metrics[f"{name}_loss"], metrics[f"{name}_acc"] = el[pos], ea[pos]
            metrics["time"] = epoch_time / k
            res.history.append(metrics)
            for cb in callbacks:
                cb(orig, epoch, metrics)
        if not all(healthy):  # drop the diverged models from the stack
            keep = torch.tensor([pos for pos, h in enumerate(healthy) if h], device=device,
                                dtype=torch.long)
            for pos, orig in enumerate(active.tolist()):
                if not healthy[pos]:
                    stack.write_back(pos, models[orig])  # its weights at divergence, as fit leaves them
            stack.select(keep)
            bufs = [b[keep] for b in bufs]
            lr, seed_pos, active = lr[keep], seed_pos[keep], active[keep]
        bar.set_postfix(active=len(active))
    bar.close()
    wall = time.perf_counter() - start
    for pos, orig in enumerate(active.tolist()):
        stack.write_back(pos, models[orig])
    for res in results:
        res.wall_time = wall / k_all
    return results


# --- Stacks trained by autograd with any optimizer, penalties, dropout and max-norm (E3) -------
#
# E3 trains the MLP 784-300-100-10 with Nadam at batch 32 in a dozen variants x seeds; a step of
# one model is mostly per-step overhead (autograd, the optimizer's loop over six tensors). Here
# K models take a step together: the forward pass as batched matmuls, autograd for the backward
# (the sum of the members' losses gives each member its own gradient), and one optimizer over
# the stacked tensors. Adam, Nadam and SGD are elementwise with one step count, so one optimizer
# over stacked tensors is each member's own optimizer. Each member keeps what makes its run:
# its seed's batch order, its dropout masks (drawn from its own copy of the global generator in
# the order ``fit`` draws them), its L1/L2 strengths and its max-norm radius.


@dataclass(frozen=True)
class Member:
    """One model's settings in :func:`fit_stack_autograd`: what ``fit`` would get for it alone."""
    seed: int            # batch order and dropout masks, as fit's ``seed``
    l1: float = 0.0      # objectives.penalized(l1, l2): over every kernel, not biases
    l2: float = 0.0
    max_norm: float | None = None  # objectives.max_norm(radius) on every hidden layer


def default_max_stack_autograd(model: nn.Module, device: torch.device) -> int | None:
    """Models per stack for :func:`fit_stack_autograd`: None (all) on a GPU; on a CPU
    :data:`AUTOGRAD_STACK` (measured by benchmarks/bench_regularization_stacked.py)."""
    return None if device.type != "cpu" else AUTOGRAD_STACK


AUTOGRAD_STACK = 12


def fit_stack_autograd(models: Sequence[nn.Module], train: Tensors, *, epochs: int,
                       batch_size: int, optimizer: str, lr: float, members: Sequence[Member],
                       momentum: float = 0.0, eval_sets: dict[str, Tensors] | None = None,
                       max_stack: int | Literal["auto"] | None = "auto", desc: str | None = None,
                       progress: bool = True,
                       diverge_factor: float | None = DIVERGE_FACTOR) -> list[RunResult]:
    """Train ``models`` (same-shaped MLPs, the same activations and dropout) in place, together,
    on cross-entropy plus each member's penalty, with ``optimizer`` (training.make_optimizer).

    Model ``k`` gets the :class:`RunResult` that :func:`training.fit` gives it alone with
    ``seed=members[k].seed``, ``objective=penalized(l1, l2)`` and a max-norm constraint on the
    hidden layers (equal within float tolerance; ``wall_time``: its share of its stack's time).
    Diverged models leave the stack. The models train in stacks of at most ``max_stack``
    (None: no limit; "auto": :func:`default_max_stack_autograd`), one seed per stack unless the
    input has dropout; the results do not depend on how they are stacked.
    """
    if len(members) != len(models) or not models:
        raise ValueError("fit_stack_autograd needs one member (seed, penalties) per model")
    if max_stack == "auto":
        max_stack = default_max_stack_autograd(models[0], train.x.device)
    if max_stack is not None and max_stack < 1:
        raise ValueError(f"max_stack must be at least 1 or None (got {max_stack})")
    size = len(models) if max_stack is None else max_stack
    # Without dropout on the input, members of one seed see the same batches: stacked together,
    # their first layer (most of the work) is one matmul against their weights side by side.
    input_dropout = _stackable(models, dropout=True)[0][2][0] is not None
    order = sorted(range(len(models)), key=lambda k: (0 if input_dropout else members[k].seed, k))
    parts, run = [], []
    for k in order:
        if run and (len(run) == size or (not input_dropout and members[k].seed != members[run[0]].seed)):
            parts.append(run)
            run = []
        run.append(k)
    parts.append(run)
    results: dict[int, RunResult] = {}
    for part in parts:
        out = _fit_autograd_stack([models[k] for k in part], train, [members[k] for k in part],
                                  epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                                  lr=lr, momentum=momentum, eval_sets=eval_sets or {},
                                  desc=desc, progress=progress, diverge_factor=diverge_factor)
        results.update(zip(part, out))
    return [results[k] for k in range(len(models))]


def _optimizer(params: list[torch.Tensor], name: str, lr: float, momentum: float):
    """:func:`training.make_optimizer`'s optimizer, with its multi-tensor (foreach) update: the same
    update up to float rounding; on the CPU Nadam's step over a stack of six E3 models took
    12 ms instead of 38 ms (benchmarks/bench_regularization_stacked.py times the whole)."""
    opt = make_optimizer(params, name, lr, momentum)
    for group in opt.param_groups:
        group["foreach"] = True
    return opt


class _AutogradStack:
    """The trainable state of one stack: leaf tensors, optimizer, per-member settings and
    generators; :meth:`keep` drops members (their optimizer state goes with them)."""

    def __init__(self, models, members, optimizer, lr, momentum):
        self.mlp = StackedMLP(models, dropout=True)
        for t in self.mlp.params:
            t.requires_grad_(True)
        self.opt_args = (optimizer, lr, momentum)
        self.opt = _optimizer(self.mlp.params, *self.opt_args)
        dev = self.mlp.weights[0].device
        self.l1 = torch.tensor([m.l1 for m in members], device=dev)
        self.l2 = torch.tensor([m.l2 for m in members], device=dev)
        radius = [m.max_norm if m.max_norm is not None else math.inf for m in members]
        self.radius = torch.tensor(radius, device=dev).view(-1, 1)
        self.penalized = (any(m.l1 for m in members), any(m.l2 for m in members))
        self.constrained = any(m.max_norm is not None for m in members)
        self.batch_gens = [torch.Generator(device=dev).manual_seed(m.seed) for m in members]
        # one seed and no input dropout: one batch for all, one matmul for the first layer
        self.shared = len({m.seed for m in members}) == 1 and self.mlp.dropouts[0] is None
        # fit seeds the global generator with its seed; dropout draws from it. Each member
        # keeps that generator's state as its own (swapped in around its dropout draws).
        self.rng_states = []
        with torch.random.fork_rng(devices=[]):
            for m in members:
                torch.manual_seed(m.seed)
                self.rng_states.append(torch.get_rng_state())

    def _dropout(self, module: nn.Module, h: torch.Tensor) -> torch.Tensor:
        out = []
        for k in range(h.shape[0]):
            torch.set_rng_state(self.rng_states[k])
            out.append(module(h[k]))
            self.rng_states[k] = torch.get_rng_state()
        return torch.stack(out)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step of every member on its batch; (per-member objective, logits)."""
        mlp, h = self.mlp, x
        dropout = any(d is not None for d in mlp.dropouts)
        with torch.random.fork_rng(devices=[], enabled=dropout):  # the members' draws leave it as it was
            for i, (w, b, drop) in enumerate(zip(mlp.weights, mlp.biases, mlp.dropouts)):
                if drop is not None:
                    h = self._dropout(drop, h)
                if h.dim() == 2:  # a batch (B, in) shared by all members
                    k, d_out, d_in = w.shape
                    h = (h @ w.view(k * d_out, d_in).t()).view(len(h), k, d_out).transpose(0, 1) + b
                else:
                    h = torch.baddbmm(b, h, w.transpose(1, 2))
                if i < len(mlp.activations):
                    h = mlp.activations[i](h)
        logits = h
        if y.dim() == 1:
            y = y.expand(logits.shape[0], -1)
        loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)
        if self.penalized[0]:
            loss = loss + self.l1 * sum(w.abs().sum((1, 2)) for w in mlp.weights)
        if self.penalized[1]:
            loss = loss + self.l2 * sum(w.square().sum((1, 2)) for w in mlp.weights)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.opt.step()
        if self.constrained:
            with torch.no_grad():
                for w in mlp.weights[:-1]:  # the hidden layers' incoming weights
                    norms = w.norm(dim=2)
                    w.mul_(torch.where(norms > self.radius, self.radius / norms,
                                       torch.ones_like(norms)).unsqueeze(-1))
        return loss.detach(), logits.detach()

    def keep(self, keep: list[int]) -> None:
        idx = torch.tensor(keep, dtype=torch.long, device=self.l1.device)
        old, state = self.mlp.params, self.opt.state
        with torch.no_grad():
            self.mlp.weights = [w[idx].requires_grad_(True) for w in self.mlp.weights]
            self.mlp.biases = [b[idx].requires_grad_(True) for b in self.mlp.biases]
        self.opt = _optimizer(self.mlp.params, *self.opt_args)
        for p_old, p_new in zip(old, self.mlp.params):
            self.opt.state[p_new] = {k: v[idx] if torch.is_tensor(v) and v.shape == p_old.shape else v
                                     for k, v in state[p_old].items()}
        self.l1, self.l2, self.radius = self.l1[idx], self.l2[idx], self.radius[idx]
        self.batch_gens = [self.batch_gens[i] for i in keep]
        self.rng_states = [self.rng_states[i] for i in keep]


def _fit_autograd_stack(models, train, members, *, epochs, batch_size, optimizer, lr, momentum,
                        eval_sets, desc, progress, diverge_factor) -> list[RunResult]:
    device = train.x.device
    stack = _AutogradStack(models, members, optimizer, lr, momentum)
    active = list(range(len(models)))  # the original index of each stack position
    x_all, y_all, n = train.x.flatten(1), train.y, len(train)
    results = [RunResult() for _ in models]
    start = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False, unit="ep")
    for epoch in bar:
        if not active:
            break
        t0 = time.perf_counter()
        perms = torch.stack([torch.randperm(n, generator=g, device=device) for g in stack.batch_gens])
        if stack.shared:
            perms = perms[0]
        loss_sum = torch.zeros(len(active), device=device)
        correct = torch.zeros(len(active), device=device, dtype=torch.long)
        for i in range(0, n, batch_size):
            idx = perms[..., i:i + batch_size]
            yb = y_all[idx]
            loss, logits = stack.step(x_all[idx], yb)
            loss_sum += loss * idx.shape[-1]
            correct += (logits.argmax(-1) == yb).sum(-1)
        epoch_time = time.perf_counter() - t0
        train_loss, train_acc = (loss_sum / n).tolist(), (correct / n).tolist()
        reasons = [divergence(train_loss[pos], results[orig].first_loss, diverge_factor, epoch)
                   for pos, orig in enumerate(active)]
        evaluated = {name: [t.tolist() for t in evaluate_stack(stack.mlp, data)]
                     for name, data in eval_sets.items()} if not all(reasons) else {}
        for pos, orig in enumerate(active):
            res = results[orig]
            res.epoch_times.append(epoch_time / len(active))
            if reasons[pos]:
                res.diverged, res.diverged_epoch, res.diverged_reason = True, epoch, reasons[pos]
                stack.mlp.write_back(pos, models[orig])  # its weights at divergence, as fit leaves them
                continue
            metrics = {"epoch": epoch, "train_loss": train_loss[pos], "train_acc": train_acc[pos]}
            for name, (el, ea) in evaluated.items():
                metrics[f"{name}_loss"], metrics[f"{name}_acc"] = el[pos], ea[pos]
            metrics["time"] = epoch_time / len(active)
            res.history.append(metrics)
        if any(reasons):
            keep = [pos for pos, r in enumerate(reasons) if not r]
            stack.keep(keep)
            active = [active[pos] for pos in keep]
        bar.set_postfix(active=len(active))
    bar.close()
    wall = time.perf_counter() - start
    for pos, orig in enumerate(active):
        stack.mlp.write_back(pos, models[orig])
    for res in results:
        res.wall_time = wall / len(models)
    return results
