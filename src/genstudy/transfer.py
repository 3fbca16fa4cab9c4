"""Transfer learning (E4): reuse the lower layers of a trained model under a new head.

The reused layers are *copied* (``copy.deepcopy``), never shared, so training
the new model leaves the source model exactly as it was (the Keras notebook's
``Sequential(model_A.layers[:-2])`` shares the layers and so changes model A).
Fine-tuning runs in two phases through :func:`genstudy.training.fit`: first
with the reused layers frozen (``requires_grad = False`` and absent from the
optimizer), then with every layer trainable and a fresh optimizer (as the
notebook recompiles the model).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Iterable

import torch
from torch import nn

from .data import Tensors
from .models import ACTIVATIONS, init_weights
from .training import Callback, RunResult, fit, make_optimizer

PHASE2_SEED_OFFSET = 1_000_003  # the unfrozen phase's batch order: a stream apart from the first


def reuse_layers(source: nn.Sequential, upto: str) -> nn.Sequential:
    """A deep copy of ``source``'s layers from the first up to and including the one named ``upto``."""
    names = [n for n, _ in source.named_children()]
    if upto not in names:
        raise ValueError(f"no layer {upto!r} in the source model; its layers: {', '.join(names)}")
    keep = names[:names.index(upto) + 1]
    return nn.Sequential(OrderedDict((n, copy.deepcopy(getattr(source, n))) for n in keep))


def _out_features(model: nn.Sequential) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the reused layers hold no Linear layer")
    return linears[-1].out_features


def transferred_model(source: nn.Sequential, upto: str, head_sizes: list[int],
                      activation: str = "relu", init: str = "glorot_uniform"
                      ) -> tuple[nn.Sequential, list[str]]:
    """(model, names of the reused layers): ``source`` copied up to ``upto``, then a new head.

    The head is Dense layers of ``head_sizes`` (an ``activation`` between them,
    none after the last: it outputs logits), named on from the copied ones
    (``fc4``, ``act4``, ``fc5`` after ``fc1..fc3``), initialised with ``init``
    from torch's global generator (wrap in :func:`genstudy.models.seeded`).
    """
    body = reuse_layers(source, upto)
    reused = [n for n, _ in body.named_children()]
    n_fc = sum(isinstance(m, nn.Linear) for m in body.children())
    head: list[tuple[str, nn.Module]] = []
    width = _out_features(body)
    for i, size in enumerate(head_sizes):
        k = n_fc + i + 1
        head.append((f"fc{k}", nn.Linear(width, size)))
        if i < len(head_sizes) - 1:
            head.append((f"act{k}", ACTIVATIONS[activation]()))
        width = size
    head_module = init_weights(nn.Sequential(OrderedDict(head)), init)
    layers = list(body.named_children()) + list(head_module.named_children())
    return nn.Sequential(OrderedDict(layers)), reused


def set_trainable(model: nn.Module, names: Iterable[str], trainable: bool) -> None:
    """Freeze (or unfreeze) the parameters of the named child layers."""
    for name in names:
        for p in getattr(model, name).parameters():
            p.requires_grad_(trainable)


def _shifted(callbacks: Iterable[Callback], offset: int) -> list[Callback]:
    def wrap(cb):
        def shifted(epoch, metrics):
            cb(epoch + offset, {**metrics, "epoch": epoch + offset})
        return shifted
    return [wrap(cb) for cb in callbacks]


def fine_tune(model: nn.Module, reused: list[str], train: Tensors, *, frozen_epochs: int,
              unfrozen_epochs: int, batch_size: int, optimizer: str, lr: float,
              momentum: float = 0.0, seed: int = 0, loss: str = "bce",
              eval_sets: dict[str, Tensors] | None = None,
              callbacks: Iterable[Callback] = (), desc: str | None = None,
              progress: bool = True) -> list[RunResult]:
    """Train ``frozen_epochs`` with the ``reused`` layers frozen, then ``unfrozen_epochs`` with all.

    Each phase has its own optimizer over the parameters trainable in it.
    Callbacks and the results' histories count epochs across both phases
    (1..frozen+unfrozen).
    Returns the phases' results (a phase of 0 epochs is skipped; a diverged
    first phase ends the run).
    """
    callbacks = list(callbacks)
    results = []
    phases = [(frozen_epochs, False, seed, 0, "frozen"),
              (unfrozen_epochs, True, seed + PHASE2_SEED_OFFSET, frozen_epochs, "unfrozen")]
    for epochs, trainable, phase_seed, offset, phase in phases:
        if epochs == 0:
            continue
        set_trainable(model, reused, trainable)
        opt = make_optimizer(model.parameters(), optimizer, lr, momentum)
        res = fit(model, train, epochs=epochs, batch_size=batch_size, optimizer=opt,
                  seed=phase_seed, loss=loss, eval_sets=eval_sets,
                  callbacks=_shifted(callbacks, offset),
                  desc=f"{desc} ({phase})" if desc else phase, progress=progress)
        for h in res.history:  # one epoch count across both phases
            h["epoch"] += offset
        results.append(res)
        if res.diverged:
            break
    set_trainable(model, reused, True)
    return results


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    """Whether two modules hold the same parameters and buffers (NaN equal to NaN, so a model
    whose training diverged still compares equal to its own copy)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and bool(((sa[k] == sb[k]) | (sa[k].isnan() & sb[k].isnan())).all())
        if sa[k].is_floating_point() else torch.equal(sa[k], sb[k]) for k in sa)
