"""E4 transfer: reuse model A's lower layers for task B, against training B from scratch.

Task A: the 8 classes other than ``b_classes`` (labels re-indexed 0..7);
task B: ``b_classes[0]`` (label 0) vs ``b_classes[1]`` (label 1), on only
``b_train_size`` training images. As in the notebook, both tasks' training
images come from the 75 % part of a fixed 75/25 split of the train set
(``split_seed``); the 25 % part gives the validation curves; test sets are the
test set filtered the same way.

Per seed s, three models are trained:
- model A (MLP 784-200-150-100-50-8) on task A: init and batch order from s;
- model B from scratch (MLP 784-300-150-100-80-1) on the B subset: init and order from s;
- the transferred model: a *copy* of model A (seed s) up to ``reuse_upto``, a new head
  (init from s), ``frozen_epochs`` with the copied layers frozen, then
  ``unfrozen_epochs`` with everything trainable (batch order from s).
Which ``b_train_size`` images form the B subset: ``b_subset: random`` draws them with a
generator seeded with s (each seed its own subset: the notebook's "first 100" were
taken after train_test_split's shuffle, so they were a random draw too);
``b_subset: first`` takes the first ones of the split's (fixed) order for every seed,
so that only initialisation and batch order vary.
"""

import copy
from pathlib import Path
from typing import Annotated, Literal

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from pydantic import Field, model_validator

from genstudy import data, figures, models, outputs, params, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_text, ref_value, verdict
from genstudy.training import evaluate, fit, make_optimizer
from genstudy.transfer import fine_tune, state_equal, transferred_model

# --- params -----------------------------------------------------------------------------------

ClassId = Annotated[int, Field(ge=0, le=9)]


class Net(params.Training):
    sizes: Annotated[list[params.PositiveInt], Field(min_length=2)]


class Transferred(params.Schema):
    reuse_upto: str = "act3"               # last copied layer of model A
    head: Annotated[list[params.PositiveInt], Field(min_length=1)] = [80, 1]
    frozen_epochs: Annotated[int, Field(ge=0)] = 4
    unfrozen_epochs: Annotated[int, Field(ge=0)] = 16
    batch_size: params.PositiveInt = 32
    optimizer: params.Optimizer = "sgd"
    lr: params.PositiveFloat = 1e-3
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0


class Params(params.Experiment):
    seeds: params.Seeds = [0, 1, 2, 3, 4]
    val_fraction: params.Fraction = 0.25
    split_seed: Annotated[int, Field(ge=0)] = 42
    b_classes: tuple[ClassId, ClassId] = (4, 5)
    b_train_size: params.PositiveInt = 100
    b_subset: Literal["random", "first"] = "random"
    a_train_size: params.PositiveInt | None = None  # first N task-A training images; null: all
    init: Literal[models.INITS] = "glorot_uniform"  # type: ignore[valid-type]
    model_a: Net
    model_b: Net
    transferred: Transferred

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

    def record(arm, seed, task, model, results, train_set, test_set, loss):
        history = [h for r in results for h in r.history]
        curves.extend({"run": f"{arm}_s{seed}", **{k: v for k, v in h.items() if k != "time"},
                       "arm": arm, "seed": seed} for h in history)
        test_loss, test_acc = evaluate(model, test_set, loss)
        rows.append({"arm": arm, "seed": seed, "task": task, "train_size": len(train_set),
                     "epochs": len(history), "train_acc": evaluate(model, train_set, loss)[1],
                     "test_acc": test_acc, "test_loss": test_loss,
                     "final_val_acc": history[-1]["val_acc"] if history else float("nan"),
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

    df = pd.DataFrame(rows)
    outputs.write_results(out, df, ["arm", "seed"])
    curves_df = pd.DataFrame(curves)
    outputs.write_table(out / "curves.csv", curves_df)
    mean = df.groupby("arm").test_acc.mean()
    outputs.write_json(out / "metrics.json", {  # headline numbers only: what dvc metrics diff shows
        "scratch_test_acc": mean["scratch"], "transferred_test_acc": mean["transferred"],
        "gain": mean["transferred"] - mean["scratch"]})
    figures.setup()
    plot_arms(df, out / "figures")
    plot_curves(curves_df, tr.frozen_epochs, out / "figures")


# --- figures ----------------------------------------------------------------------------------

def plot_arms(df: pd.DataFrame, fig_dir: Path) -> None:
    b = df[df.task == "B"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for seed, g in b.groupby("seed"):
        g = g.set_index("arm").loc[["scratch", "transferred"]]
        ax.plot([0, 1], g.test_acc, color="grey", alpha=0.6, marker="o", lw=1)
    sns.pointplot(data=b, x="arm", y="test_acc", order=["scratch", "transferred"], errorbar="sd",
                  color="C3", capsize=0.1, linestyle="none", ax=ax)
    ax.set(xlabel="", ylabel="task-B test accuracy",
           title=f"E4: from scratch vs transferred\n(grey: one seed each, n={b.seed.nunique()}; "
                 "red: mean ± sd)")
    figures.save(fig, fig_dir, "arms")


def plot_curves(curves: pd.DataFrame, frozen_epochs: int, fig_dir: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    b = curves[curves.arm != "model_a"]
    sns.lineplot(data=b, x="epoch", y="test_acc", hue="arm", units="seed", estimator=None,
                 lw=0.8, alpha=0.35, legend=False, ax=axes[0])
    sns.lineplot(data=b, x="epoch", y="test_acc", hue="arm", errorbar=None, lw=2.5, ax=axes[0])
    if frozen_epochs:
        axes[0].axvline(frozen_epochs + 0.5, ls="--", color="grey")
        axes[0].text(frozen_epochs + 0.6, axes[0].get_ylim()[0], " unfrozen", color="grey", va="bottom")
    axes[0].set(xlabel="epoch", ylabel="task-B test accuracy", title="task B (thin: one seed each; thick: mean)")
    a = curves[curves.arm == "model_a"].melt(id_vars=["epoch", "seed"], value_vars=["train_acc", "val_acc"],
                                             var_name="curve", value_name="accuracy")
    a["curve"] = a["curve"].map({"train_acc": "train (running)", "val_acc": "validation"})
    sns.lineplot(data=a, x="epoch", y="accuracy", hue="curve", errorbar="sd", ax=axes[1])
    axes[1].set(xlabel="epoch", ylabel="task-A accuracy", title="model A on task A (band: ± sd over seeds)")
    figures.save(fig, fig_dir, "learning_curves")


# --- report -----------------------------------------------------------------------------------

def section(out: Outputs, refs: dict) -> Section:
    df = out.table()
    b = df[df.task == "B"]
    acc = b.pivot(index="seed", columns="arm", values="test_acc").reindex(
        columns=["scratch", "transferred"])  # per seed: the same B subset
    gain = stats.paired(acc["transferred"], acc["scratch"])
    nb = lambda key: ref_value(refs, "transfer", key)  # noqa: E731
    train_acc = (lambda arm: fmt_series(b[b.arm == arm].train_acc)) if "train_acc" in b else (lambda arm: "n/a")
    rows = [Row("task B test accuracy, from scratch", fmt_series(acc["scratch"]),
                ref_text(refs, "transfer", "scratch_test_acc")),
            Row("task B test accuracy, transferred", fmt_series(acc["transferred"]),
                ref_text(refs, "transfer", "transferred_test_acc")),
            Row("gain of transfer, transferred − scratch", gain.text("paired by seed"),
                f"{nb('transferred_test_acc') - nb('scratch_test_acc'):+.4f} (one run)"),
            Row("seeds where transfer wins", f"{int((acc['transferred'] > acc['scratch']).sum())} of {len(acc)}"),
            Row("task B train accuracy after training, from scratch / transferred",
                f"{train_acc('scratch')} / {train_acc('transferred')}"),
            Row("model A, task A test accuracy", fmt_series(df[df.arm == "model_a"].test_acc),
                ref_text(refs, "transfer", "model_a_test_acc"))]
    p = out.params
    t = p["transferred"]
    note = (f"Both task-B arms train a fixed number of epochs, as the notebook: from scratch "
            f"{p['model_b']['epochs']}, transferred {t['frozen_epochs']} frozen + {t['unfrozen_epochs']}; "
            "their train accuracy is shown above. Model A is trained once per seed and reused by that seed's "
            "transferred model.")
    return Section(
        "transfer", "E4 Transfer learning",
        f"Does reusing the lower layers of a model trained on the other 8 classes help learn class "
        f"{p['b_classes'][0]} vs {p['b_classes'][1]} (coat vs sandal) from {p['b_train_size']} images? "
        f"The notebook's single run said yes ({ref_text(refs, 'transfer', 'scratch_test_acc')} -> "
        f"{ref_text(refs, 'transfer', 'transferred_test_acc')}); we run {len(acc)} seeds to see the spread.",
        rows, verdict([("transfer helps (transferred − scratch)",
                        verdicts.judge(gain, +1, nb("min_gain")))], note))
