"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016): the minimal L2 perturbation that flips a prediction.

Multi-class DeepFool linearises the classifier at the current point, steps to
the nearest linearised decision boundary between the original class ``k0``
and any other class ``k``::

    w_k = grad f_k - grad f_k0,   f'_k = f_k - f_k0,   l = argmin_k |f'_k| / ||w_k||
    r_i = (|f'_l| / ||w_l|| + 1e-4) * w_l / ||w_l||

accumulates ``r = sum r_i`` and stops once ``x + (1 + overshoot) r`` is
classified differently from ``x`` (or after ``max_iter`` steps). It returns
``(1 + overshoot) r``, as the authors' reference code does (the ``1e-4`` nudge
is theirs too).

:func:`deepfool` runs all examples as one batch: per iteration one forward pass
and one batched backward pass give the Jacobian of the logits with respect to
the inputs of every still-active example (``torch.func.vmap`` of ``jacrev``), and
examples that have crossed drop out, so they stop costing work.
:func:`deepfool_loop` is the way common attack libraries do it (one example at
a time, one backward pass per class): the reference the batched version is
tested and benchmarked against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

NUDGE = 1e-4  # added to each step's length, as in the authors' reference code


@dataclass
class DeepFoolResult:
    r: torch.Tensor           # (N, *input shape): the perturbation returned, (1 + overshoot) * sum of steps
    label: torch.Tensor       # (N,) the class predicted at x
    adv_label: torch.Tensor   # (N,) the class predicted at x + r
    iterations: torch.Tensor  # (N,) steps taken
    flipped: torch.Tensor     # (N,) bool: x + r is classified differently from x

    @property
    def norms(self) -> torch.Tensor:
        return self.r.flatten(1).norm(dim=1)


def _step(logits: torch.Tensor, jac: torch.Tensor, k0: torch.Tensor) -> torch.Tensor:
    """One DeepFool step per example: logits (M, C), jac (M, C, D), k0 (M,) -> r_i (M, D)."""
    m = torch.arange(len(k0), device=k0.device)
    w = jac - jac[m, k0].unsqueeze(1)                # (M, C, D)
    f = logits - logits[m, k0].unsqueeze(1)          # (M, C)
    w_norm = w.norm(dim=2)                           # (M, C)
    pert = f.abs() / w_norm
    pert[m, k0] = float("inf")                       # never the original class
    pert = torch.nan_to_num(pert, nan=float("inf"))  # w_k = 0: that boundary is unreachable
    l = pert.argmin(1)
    return ((pert[m, l] + NUDGE) / w_norm[m, l]).unsqueeze(1) * w[m, l]


def deepfool(model: nn.Module, x: torch.Tensor, *, overshoot: float = 0.02, max_iter: int = 50,
             batch_size: int | None = None) -> DeepFoolResult:
    """DeepFool on every example of ``x`` at once (``batch_size``: chunks of that many, to bound memory)."""
    if batch_size is not None and len(x) > batch_size:
        parts = [deepfool(model, x[i:i + batch_size], overshoot=overshoot, max_iter=max_iter)
                 for i in range(0, len(x), batch_size)]
        return DeepFoolResult(*(torch.cat([getattr(p, f) for p in parts]) for f in
                                ("r", "label", "adv_label", "iterations", "flipped")))
    was_training = model.training
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    shape = x.shape[1:]

    def logits_one(xi: torch.Tensor) -> torch.Tensor:  # one flat example -> its logits
        return functional_call(model, (params, buffers), (xi.view(1, *shape),))[0]

    def with_aux(z: torch.Tensor):
        out = logits_one(z)
        return out, out

    def logits_and_jac(xi: torch.Tensor):
        jac, out = jacrev(with_aux, has_aux=True)(xi)
        return out, jac
    batched = vmap(logits_and_jac)

    x = x.detach()
    flat = x.flatten(1)
    n = len(x)
    with torch.no_grad():
        label = model(x).argmax(1)
    r_tot = torch.zeros_like(flat)
    iterations = torch.zeros(n, dtype=torch.long, device=x.device)
    adv_label = label.clone()
    active = torch.arange(n, device=x.device)
    for _ in range(max_iter):
        if len(active) == 0:
            break
        point = flat[active] + (1 + overshoot) * r_tot[active]
        logits, jac = batched(point)
        logits, jac = logits.detach(), jac.detach()
        k = logits.argmax(1)
        adv_label[active] = k
        still = k == label[active]
        active = active[still]
        if len(active) == 0:
            break
        r_tot[active] += _step(logits[still], jac[still], label[active])
        iterations[active] += 1
    else:  # max_iter steps taken: classify the last points
        if len(active):
            with torch.no_grad():
                adv_label[active] = model((flat[active] + (1 + overshoot) * r_tot[active])
                                          .view(-1, *shape)).argmax(1)
    model.train(was_training)
    r = ((1 + overshoot) * r_tot).view_as(x)
    return DeepFoolResult(r, label, adv_label, iterations, adv_label != label)


def deepfool_loop(model: nn.Module, x: torch.Tensor, *, overshoot: float = 0.02,
                  max_iter: int = 50) -> DeepFoolResult:
    """DeepFool one example at a time with one backward pass per class (the reference)."""
    was_training = model.training
    model.eval()
    out = {f: [] for f in ("r", "label", "adv_label", "iterations", "flipped")}
    for xi in x:
        xi = xi.unsqueeze(0).detach()
        with torch.no_grad():
            logits = model(xi)[0]
        k0 = int(logits.argmax())
        n_classes = len(logits)
        r_tot = torch.zeros_like(xi)
        it = 0
        point = xi.clone().requires_grad_()
        logits = model(point)[0]
        k = int(logits.argmax())
        while k == k0 and it < max_iter:
            grads = [torch.autograd.grad(logits[c], point, retain_graph=True)[0].flatten()
                     for c in range(n_classes)]
            jac = torch.stack(grads).unsqueeze(0)
            r_i = _step(logits.detach().unsqueeze(0), jac, torch.tensor([k0], device=x.device))
            r_tot = r_tot + r_i.view_as(xi)
            it += 1
            point = (xi + (1 + overshoot) * r_tot).requires_grad_()
            logits = model(point)[0]
            k = int(logits.argmax())
        out["r"].append(((1 + overshoot) * r_tot)[0])
        out["label"].append(k0)
        out["adv_label"].append(k)
        out["iterations"].append(it)
        out["flipped"].append(k != k0)
    model.train(was_training)
    dev = x.device
    return DeepFoolResult(torch.stack(out["r"]), torch.tensor(out["label"], device=dev),
                          torch.tensor(out["adv_label"], device=dev),
                          torch.tensor(out["iterations"], device=dev),
                          torch.tensor(out["flipped"], device=dev))


def margin_summary(model: nn.Module, x: torch.Tensor, res: DeepFoolResult) -> dict[str, float]:
    """Per model: mean/median ||r||, rho = mean(||r|| / ||x||), share flipped, iterations."""
    norms = res.norms
    rel = norms / x.flatten(1).norm(dim=1)
    return {"margin_mean": norms.mean().item(), "margin_median": norms.median().item(),
            "rho": rel.mean().item(), "flipped_share": res.flipped.float().mean().item(),
            "iterations_mean": res.iterations.float().mean().item(),
            "iterations_max": int(res.iterations.max().item())}
