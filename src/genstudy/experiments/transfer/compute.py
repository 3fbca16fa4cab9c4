"""E4 transfer, compute: train model A, B from scratch and the transferred model per seed, write the tables (see the package doc)."""

import copy
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import torch
from pydantic import Field, model_validator

from genstudy import data, models, outputs, params
from genstudy.training import evaluate, fit, make_optimizer
from genstudy.transfer import fine_tune, state_equal, transferred_model

# --- params -----------------------------------------------------------------------------------

ClassId = Annotated[int, Field(ge=0, le=9)]


class Net(params.Training):
    sizes: Annotated[list[params.PositiveInt], Field(min_length=2)]


class Transferred(params.Schema):
    reuse_upto: str                        # last copied layer of model A
    head: Annotated[list[params.PositiveInt], Field(min_length=1)]
    frozen_epochs: Annotated[int, Field(ge=0)]
    unfrozen_epochs: Annotated[int, Field(ge=0)]
    batch_size: params.PositiveInt
    optimizer: params.Optimizer
    lr: params.PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)]  # SGD's (0 for plain SGD; adam/nadam ignore it)


class FairControl(params.Schema):
    # The from-scratch control trained on to the transferred model's train accuracy (same net,
    # init, optimizer and batches as model_b): at most this many epochs.
    max_epochs: params.PositiveInt


class Params(params.Experiment):
    val_fraction: params.Fraction
    split_seed: Annotated[int, Field(ge=0)]
    b_classes: tuple[ClassId, ClassId]
    b_train_size: params.PositiveInt
    b_subset: Literal["random", "first"]
    a_train_size: params.PositiveInt | None  # first N task-A training images; null: all
    init: Literal[models.INITS]  # type: ignore[valid-type]
    model_a: Net
    model_b: Net
    transferred: Transferred
    fair_control: FairControl

    @model_validator(mode="after")
    def _check(self):
        if self.b_classes[0] == self.b_classes[1]:
            raise ValueError("b_classes must be two different classes")
        if self.model_a.sizes[-1] != 8:
            raise ValueError(f"model_a.sizes must end in 8 (task A's classes), got {self.model_a.sizes}")
        if self.model_b.sizes[-1] != 1 or self.transferred.head[-1] != 1:
            raise ValueError("model_b.sizes and transferred.head must end in 1 (a binary logit)")
        if self.model_a.sizes[0] != 784 or self.model_b.sizes[0] != 784:
            raise ValueError("the MLPs take 784 inputs (28 x 28 images)")
        return self


# --- run --------------------------------------------------------------------------------------

def b_subset(b_train: data.Tensors, n: int, how: str, seed: int) -> data.Tensors:
    if n > len(b_train):
        raise params.ParamsError(f"transfer.b_train_size: {n} > the {len(b_train)} task-B images")
    if how == "first":
        return b_train.head(n)
    g = torch.Generator().manual_seed(seed)
    return b_train.take(torch.randperm(len(b_train), generator=g)[:n])


def _train_accuracy(model, train: data.Tensors):
    """A fit callback: the eval-mode accuracy on the training images after each epoch (``fit_acc``)."""
    def callback(epoch: int, m: dict) -> None:
        m["fit_acc"] = evaluate(model, train, "bce")[1]
    return callback


def run(p: Params, out: Path, models_dir: Path) -> None:
    device = params.resolve_device(p.device)
    train_all, test = data.load(p.dataset)
    train, val = data.split(train_all, p.val_fraction, p.split_seed)
    (a_train, b_train), (a_val, b_val), (a_test, b_test) = (
        data.split_tasks(d, p.b_classes) for d in (train, val, test))
    a_train = a_train.head(p.a_train_size).to(device)
    a_val, a_test, b_val, b_test = (d.to(device) for d in (a_val, a_test, b_val, b_test))
    rows, curves = [], []
    tr = p.transferred

    def record(arm, seed, task, model, results, train_set, test_set, loss, curve=True):
        history = [h for r in results for h in r.history]
        if curve:  # the fair control's epochs (up to fair_control.max_epochs) are counted, not drawn
            curves.extend({"run": f"{arm}_s{seed}", **{k: v for k, v in h.items() if k != "time"},
                           "arm": arm, "seed": seed} for h in history)
        test_loss, test_acc = evaluate(model, test_set, loss)
        rows.append({"arm": arm, "seed": seed, "task": task, "train_size": len(train_set),
                     "epochs": len(history), "train_acc": evaluate(model, train_set, loss)[1],
                     "test_acc": test_acc, "test_loss": test_loss,
                     "final_val_acc": history[-1].get("val_acc", float("nan")) if history else float("nan"),
                     "diverged": any(r.diverged for r in results),
                     "diverged_reason": "; ".join(r.diverged_reason for r in results if r.diverged),
                     "wall_time": sum(r.wall_time for r in results)})
        outputs.save_model(models_dir / f"{arm}_s{seed}.pt", model, arm=arm, seed=seed)
        print(f"transfer: {arm}_s{seed} task {task} test_acc={test_acc:.4f} "
              f"({rows[-1]['wall_time']:.0f}s)")

    for seed in p.seeds:
        b_sub = b_subset(b_train, p.b_train_size, p.b_subset, seed).to(device)
        b_sets = {"val": b_val, "test": b_test}

        ma = p.model_a
        model_a = models.seeded(seed, models.mlp, ma.sizes, init=p.init).to(device)
        res_a = fit(model_a, a_train, epochs=ma.epochs, batch_size=ma.batch_size, seed=seed,
                    optimizer=make_optimizer(model_a.parameters(), ma.optimizer, ma.lr, ma.momentum),
                    eval_sets={"val": a_val}, desc=f"model_a_s{seed}")
        record("model_a", seed, "A", model_a, [res_a], a_train, a_test, "ce")

        mb = p.model_b
        scratch = models.seeded(seed, models.mlp, mb.sizes, init=p.init).to(device)
        res_b = fit(scratch, b_sub, epochs=mb.epochs, batch_size=mb.batch_size, seed=seed, loss="bce",
                    optimizer=make_optimizer(scratch.parameters(), mb.optimizer, mb.lr, mb.momentum),
                    eval_sets=b_sets, desc=f"scratch_s{seed}")
        record("scratch", seed, "B", scratch, [res_b], b_sub, b_test, "bce")

        before = copy.deepcopy(model_a)
        model_tr, reused = models.seeded(seed, transferred_model, model_a, tr.reuse_upto, tr.head,
                                         init=p.init)
        model_tr = model_tr.to(device)
        res_tr = fine_tune(model_tr, reused, b_sub, frozen_epochs=tr.frozen_epochs,
                           unfrozen_epochs=tr.unfrozen_epochs, batch_size=tr.batch_size,
                           optimizer=tr.optimizer, lr=tr.lr, momentum=tr.momentum, seed=seed,
                           loss="bce", eval_sets=b_sets, desc=f"transferred_s{seed}")
        if not state_equal(model_a, before):  # the transferred model copies A's layers, never shares them
            raise RuntimeError("training the transferred model changed model A")
        record("transferred", seed, "B", model_tr, res_tr, b_sub, b_test, "bce")

        # The fair control: model B from scratch (same init, optimizer and batches) trained on
        # until it fits its task-B images as well as the transferred model does, so the gain of
        # transfer is not a difference of how far each arm got in a fixed number of steps.
        target = rows[-1]["train_acc"]
        fair = models.seeded(seed, models.mlp, mb.sizes, init=p.init).to(device)
        res_f = fit(fair, b_sub, epochs=p.fair_control.max_epochs, batch_size=mb.batch_size, seed=seed,
                    loss="bce", optimizer=make_optimizer(fair.parameters(), mb.optimizer, mb.lr, mb.momentum),
                    callbacks=[_train_accuracy(fair, b_sub)], until=lambda m: m["fit_acc"] >= target,
                    desc=f"scratch_fit_s{seed}")
        record("scratch_fit", seed, "B", fair, [res_f], b_sub, b_test, "bce", curve=False)

    df = pd.DataFrame(rows)
    outputs.write_results(out, df, ["arm", "seed"])
    curves_df = pd.DataFrame(curves)
    outputs.write_table(out / "curves.csv", curves_df)
    ok = outputs.converged(df)  # the runs the report uses
    mean = ok.groupby("arm").test_acc.mean().reindex(["scratch", "transferred", "scratch_fit"])
    outputs.write_json(out / "metrics.json", {  # headline numbers only: what dvc metrics diff shows
        "scratch_test_acc": mean["scratch"], "transferred_test_acc": mean["transferred"],
        "scratch_fit_test_acc": mean["scratch_fit"], "gain": mean["transferred"] - mean["scratch"],
        "gain_over_fair_control": mean["transferred"] - mean["scratch_fit"], "diverged_runs": len(df) - len(ok)})
