"""E5 and E6: sweeps of learning rate x batch size, trained as stacks, and their tidy rows.

A *run* is one model identified by ``(lr, batch, seed)``; a *sweep* is a set of
runs read at a number of epochs. Sweeps that share a run train it once, for
the most epochs any of them needs, and each reads its first ``epochs`` epochs
of history. That is exactly the run a shorter training would give: nothing in
an epoch depends on the total number of epochs (the batch order of epoch e is
the e-th draw of the run's seeded generator, there is no schedule, and
evaluation draws no random numbers). So E5's 10-epoch 1-D sweeps are read from
the 20-epoch grid runs (same lr, batch, seed and training subset) instead of
being trained twice; rows say so in ``run_epochs``.

Runs with the same batch size and epochs go in one stack (:func:`fit_stack`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .data import Tensors
from .stacked import fit_stack
from .training import RunResult

Key = tuple[float, int, int]  # (lr, batch, seed)


@dataclass(frozen=True)
class Sweep:
    name: str
    runs: list[Key]
    epochs: int


def plan(sweeps: list[Sweep], eval_every: int) -> dict[Key, tuple[int, set[int]]]:
    """Per distinct run: (epochs to train, epochs after which to evaluate)."""
    out: dict[Key, tuple[int, set[int]]] = {}
    for sw in sweeps:
        for key in sw.runs:
            epochs, evals = out.get(key, (0, set()))
            out[key] = (max(epochs, sw.epochs), evals | {sw.epochs})
    for key, (epochs, evals) in out.items():
        evals |= set(range(eval_every, epochs + 1, eval_every))
    return out


def train_runs(runs: dict[Key, tuple[int, set[int]]], build: Callable[[int], nn.Module],
               train: Tensors, test: Tensors, *, momentum: float,
               callback: Callable[[Key, int, dict], None] | None = None,
               log: Callable[[str], None] = print) -> tuple[dict[Key, RunResult], dict[Key, nn.Module]]:
    """Train every run, one stack per (batch size, epochs); ``build(seed)`` gives initial weights."""
    groups: dict[tuple[int, int], list[Key]] = {}
    for key, (epochs, _) in runs.items():
        groups.setdefault((key[1], epochs), []).append(key)
    results: dict[Key, RunResult] = {}
    trained: dict[Key, nn.Module] = {}
    for (batch, epochs), keys in sorted(groups.items()):
        keys.sort(key=lambda k: (k[2], k[0]))  # seed-major
        ms = [build(seed) for _, _, seed in keys]
        evals = set().union(*(runs[k][1] for k in keys))
        t0 = time.perf_counter()
        cbs = [] if callback is None else [lambda i, ep, m, keys=keys: callback(keys[i], ep, m)]
        res = fit_stack(ms, train, epochs=epochs, batch_size=batch, lrs=[k[0] for k in keys],
                        seeds=[k[2] for k in keys], momentum=momentum, eval_sets={"test": test},
                        eval_epochs=evals, callbacks=cbs, desc=f"batch {batch}")
        n_div = sum(r.diverged for r in res)
        log(f"batch {batch}: {len(keys)} models x {epochs} epochs in {time.perf_counter() - t0:.1f}s"
            f" ({n_div} diverged)")
        results.update(zip(keys, res))
        trained.update(zip(keys, ms))
    return results, trained


def _best(history: list[dict], key: str, better) -> float:
    vals = [h[key] for h in history if key in h]
    return better(vals) if vals else math.nan


def row(sweep: str, key: Key, epochs: int, res: RunResult) -> dict:
    """The tidy row of run ``key`` read at ``epochs`` (best: over the evaluated epochs)."""
    lr, batch, seed = key
    hist = [h for h in res.history if h["epoch"] <= epochs]
    diverged = res.diverged and res.diverged_epoch <= epochs
    last = hist[-1] if hist and not diverged else {}
    nan = math.nan
    return {
        "sweep": sweep, "lr": lr, "batch": batch, "seed": seed, "epochs": epochs,
        "noise_scale": lr / batch,
        "final_train_acc": last.get("train_acc", nan), "final_train_loss": last.get("train_loss", nan),
        "final_test_acc": last.get("test_acc", nan), "final_test_loss": last.get("test_loss", nan),
        "best_train_acc": _best(hist, "train_acc", max), "best_train_loss": _best(hist, "train_loss", min),
        "best_test_acc": _best(hist, "test_acc", max), "best_test_loss": _best(hist, "test_loss", min),
        "diverged": bool(diverged), "diverged_reason": res.diverged_reason if diverged else "",
        # 1-based epoch whose loss was not finite; 0 when the run did not diverge (by then)
        "diverged_epoch": int(res.diverged_epoch) if diverged else 0,
        "wall_time": sum(res.epoch_times[:epochs]),  # its share of its stack's training time
        "run_epochs": len(res.epoch_times),          # epochs the underlying run trained
    }
