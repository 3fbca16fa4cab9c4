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

import time
from typing import Callable, Collection, Iterable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import Tensors
from .training import DIVERGE_FACTOR, RunResult, divergence

StackCallback = Callable[[int, int, dict], None]  # (model index, epoch, metrics)
ACTIVATION_TYPES = (nn.ReLU, nn.Tanh, nn.SELU, nn.Sigmoid, nn.Identity)


def _layers(model: nn.Module) -> tuple[list[nn.Linear], list[nn.Module]]:
    """The Linear layers and the activations between them of a plain MLP."""
    linears, acts = [], []
    for m in model.children():
        if isinstance(m, nn.Linear):
            linears.append(m)
        elif isinstance(m, ACTIVATION_TYPES):
            if len(acts) != len(linears) - 1:
                raise ValueError("stacking needs Linear and activation layers alternating")
            acts.append(m)
        elif not isinstance(m, nn.Flatten):
            raise ValueError(f"cannot stack a model with a {type(m).__name__} layer "
                             "(plain MLPs only: Flatten, Linear, activations)")
    if not linears or len(acts) != len(linears) - 1:
        raise ValueError("stacking needs an MLP: Linear layers with an activation between each two")
    return linears, acts


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


class StackedMLP:
    """K same-shaped MLPs as stacked weights ``W[l]: (K, out, in)``, ``b[l]: (K, 1, out)``.

    The weights keep ``nn.Linear``'s (out, in) layout: then the momentum update
    ``dz^T h`` and the forward ``h W^T`` stream the weights in the order the
    batched matmul reads them, which measured 1.2-1.7x faster at the sweep's
    small batches than the (in, out) layout.
    """

    def __init__(self, models: Sequence[nn.Module]):
        layers = [_layers(m) for m in models]
        shapes = {tuple(tuple(l.weight.shape) for l in ls) for ls, _ in layers}
        if len(shapes) != 1:
            raise ValueError(f"models of different shapes cannot be stacked: {shapes}")
        self.activations = layers[0][1]
        n_layers = len(layers[0][0])
        with torch.no_grad():
            self.weights = [torch.stack([ls[i].weight for ls, _ in layers]).contiguous()
                            for i in range(n_layers)]
            self.biases = [torch.stack([ls[i].bias for ls, _ in layers]).unsqueeze(1).contiguous()
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
            for lin, w, b in zip(_layers(model)[0], self.weights, self.biases):
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
