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
examples that have crossed drop out, so they stop costing work. When the first
layer is a narrowing Linear (an MLP), the Jacobian is taken w.r.t. its output and
the boundary distances use the Gram matrix of its weight, so the 784-wide input
gradients of all classes are never formed (same numbers, a fraction of the work).
:func:`deepfool_loop` is the way common attack libraries do it (one example at
a time, one backward pass per class): the reference the batched version is
tested and benchmarked against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


def _step(logits: torch.Tensor, jac: torch.Tensor, k0: torch.Tensor,
          proj: torch.Tensor | None = None, gram: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """One DeepFool step per example: logits (M, C), jac (M, C, H), k0 (M,) -> (r_i (M, D), ok (M,)).

    ``ok`` is False where no boundary is reachable (every ``w_k`` is zero, e.g. all
    ReLUs dead): those examples cannot move, and their step is zero.

    ``jac`` is the Jacobian of the logits w.r.t. the input (H = D), or w.r.t. the
    first layer's output when the first layer is linear: then the input-space
    gradients are ``jac @ proj`` and their squared norms ``g^T gram g`` with
    ``gram = proj proj^T`` (H x H), so only the chosen direction is ever mapped
    back to the input.
    """
    m = torch.arange(len(k0), device=k0.device)
    w = jac - jac[m, k0].unsqueeze(1)                # (M, C, H)
    f = logits - logits[m, k0].unsqueeze(1)          # (M, C)
    if gram is None:
        w_norm = w.norm(dim=2)                       # (M, C)
    else:
        w_norm = ((w @ gram) * w).sum(2).clamp_min(0).sqrt()
    pert = f.abs() / w_norm
    pert[m, k0] = float("inf")                       # never the original class
    pert = torch.nan_to_num(pert, nan=float("inf"), posinf=float("inf"))  # w_k = 0: unreachable
    l = pert.argmin(1)
    ok = torch.isfinite(pert[m, l])
    direction = w[m, l] if proj is None else w[m, l] @ proj
    scale = torch.where(ok, (pert[m, l] + NUDGE) / w_norm[m, l], 0.0)
    return scale.unsqueeze(1) * direction, ok


def _first_linear(model: nn.Module, d_in: int):
    """(first Linear layer, the rest) of a Sequential MLP whose first layer is a narrowing Linear."""
    if not isinstance(model, nn.Sequential):
        return None
    children = list(model.children())
    i = 1 if children and isinstance(children[0], nn.Flatten) else 0
    if len(children) <= i + 1 or not isinstance(children[i], nn.Linear):
        return None
    first = children[i]
    if first.in_features != d_in or first.out_features >= d_in:
        return None
    return first, nn.Sequential(*children[i + 1:])


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
    shape = x.shape[1:]
    split = _first_linear(model, shape.numel())
    proj = gram = None
    if split is None:  # Jacobian w.r.t. the input
        net, pre = model, (lambda p: p.view(-1, *shape))
    else:  # Jacobian w.r.t. the first layer's output; its weight maps it back to the input
        first, net = split
        proj = first.weight.detach()                        # (H, D)
        gram = proj @ proj.T                                # (H, H)
        pre = (lambda p: F.linear(p, proj, first.bias.detach()))
    params = {k: v.detach() for k, v in net.named_parameters()}
    buffers = {k: v.detach() for k, v in net.named_buffers()}

    def with_aux(z: torch.Tensor):
        out = functional_call(net, (params, buffers), (z.unsqueeze(0),))[0]
        return out, out

    def logits_and_jac(z: torch.Tensor):
        jac, out = jacrev(with_aux, has_aux=True)(z)
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
        with torch.no_grad():
            z = pre(point)
        logits, jac = batched(z)
        logits, jac = logits.detach(), jac.detach().flatten(2)
        k = logits.argmax(1)
        adv_label[active] = k
        still = k == label[active]
        active = active[still]
        if len(active) == 0:
            break
        r_i, ok = _step(logits[still], jac[still], label[active], proj, gram)
        r_tot[active] += r_i
        iterations[active[ok]] += 1
        active = active[ok]  # stuck examples (no reachable boundary) stop here
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
            r_i, ok = _step(logits.detach().unsqueeze(0), jac, torch.tensor([k0], device=x.device))
            if not ok.item():
                break
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
    """Per model: mean/median ||r||, rho = mean(||r|| / ||x||), share flipped, iterations.

    The norms are over the examples DeepFool flipped (an example it could not
    flip has no minimal perturbation: its margin is unknown, not its partial
    ``r``); ``flipped_share`` says how many that is. NaN when none flipped.
    """
    ok = res.flipped
    norms = res.norms[ok]
    rel = norms / x.flatten(1).norm(dim=1)[ok]
    nan = float("nan")
    return {"margin_mean": norms.mean().item() if ok.any() else nan,
            "margin_median": norms.median().item() if ok.any() else nan,
            "rho": rel.mean().item() if ok.any() else nan,
            "flipped_share": ok.float().mean().item(),
            "iterations_mean": res.iterations.float().mean().item(),
            "iterations_max": int(res.iterations.max().item())}
