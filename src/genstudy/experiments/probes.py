"""E7 probes: linear classifier probes (Alain & Bengio 2016, figures 5 and 8).

Figure 5: the convnet's ten probe points, probed at random init and after
training, over the configured seeds. Figure 8: the deep skip MLP, probed after
every layer at each snapshot step. All probes of one snapshot train at once
(genstudy.probes). Writes the probe tables (DVC plots), per-model results,
headline metrics, the two figures, training curves and the models.
"""

import time
from pathlib import Path
from typing import Annotated, Literal

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from pydantic import Field, field_validator

from genstudy import data, figures, models, outputs, params, stats, verdicts
from genstudy.objectives import penalized
from genstudy.probes import ProbeConfig, steps_per_epoch, train_probes
from genstudy.report import Outputs, Row, Section, fmt_series, ref_text, ref_value, verdict
from genstudy.training import evaluate, fit, lr_decay, make_optimizer

Decay = Annotated[float, Field(gt=0, le=1)]


class ProbeParams(params.Schema):
    train_size: params.PositiveInt | None  # first N train images for the probes (val split inside)
    test_size: params.PositiveInt | None   # first N test images for the probes' test error
    val_fraction: params.Fraction
    epochs: params.PositiveInt             # most epochs per probe
    patience: params.PositiveInt           # per-probe early stopping on validation loss
    batch_size: params.PositiveInt
    lr: params.PositiveFloat               # Adam
    lr_features: params.PositiveInt | None  # a probe on n > lr_features features: lr * lr_features / n
    cache_mb: Annotated[float, Field(ge=0)]  # activations held in memory (MiB), deepest points first


class ConvnetParams(params.Training):
    train_size: params.PositiveInt | None
    lr_decay: Decay                        # lr multiplied by this after every epoch
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5  # after the dense layer's ReLU, as the notebook
    # Keras l2(l2) on both dense layers' kernels and biases, as the notebook: + l2 * sum w^2
    l2: Annotated[float, Field(ge=0)] = 5e-4


class DeepMLPParams(params.Schema):
    seeds: params.Seeds
    depth: params.PositiveInt
    width: params.PositiveInt
    skip_layer: Annotated[int, Field(ge=0)]  # layer whose input gets the flattened image (0: none)
    negative_slope: Annotated[float, Field(ge=0, lt=1)]
    init: Literal[models.INITS]  # type: ignore[valid-type]
    snapshot_steps: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    batch_size: params.PositiveInt
    optimizer: params.Optimizer
    lr: params.PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    lr_decay: Decay

    @field_validator("snapshot_steps")
    @classmethod
    def _increasing(cls, v):
        if sorted(set(v)) != v:
            raise ValueError("must be strictly increasing")
        return v


class Params(params.Experiment):
    probe: ProbeParams
    convnet: ConvnetParams
    deep_mlp: DeepMLPParams


# --- run --------------------------------------------------------------------------------------

def probe_config(p: ProbeParams) -> ProbeConfig:
    return ProbeConfig(epochs=p.epochs, patience=p.patience, batch_size=p.batch_size, lr=p.lr,
                       lr_features=p.lr_features, val_fraction=p.val_fraction,
                       cache_bytes=int(p.cache_mb * 2**20))


def figure5(p: Params, train_all, probe_train, test, device, curves, models_dir: Path):
    cfg, c = probe_config(p.probe), p.convnet
    train = train_all.head(c.train_size).to(device)
    rows, runs = [], []
    for seed in p.seeds:
        model = models.seeded(seed, models.convnet_e7, c.dropout).to(device)
        for snapshot in ("untrained", "trained"):
            res = None
            if snapshot == "trained":
                opt = make_optimizer(model.parameters(), c.optimizer, c.lr, c.momentum)
                res = fit(model, train, epochs=c.epochs, batch_size=c.batch_size, optimizer=opt,
                          seed=seed, eval_sets={"test": test}, desc=f"convnet_s{seed}",
                          objective=penalized(l2=c.l2, layers=["fc1", "fc2"], biases=True),
                          callbacks=[lr_decay(opt, c.lr_decay),
                                     curves.callback(f"convnet_s{seed}")])
                outputs.save_model(models_dir / f"convnet_s{seed}.pt", model, seed=seed,
                                   params=c.model_dump())
            t0 = time.perf_counter()
            probe_rows = train_probes(model, models.CONVNET_E7_POINTS, probe_train, test, cfg, seed,
                                      desc=f"probes convnet_s{seed} {snapshot}")
            rows += [{"seed": seed, "snapshot": snapshot, **r} for r in probe_rows]
            loss, acc = evaluate(model, test)
            runs.append({"figure": "fig5", "model": "convnet", "seed": seed, "snapshot": snapshot,
                         "steps": len(res.history) * -(-len(train) // c.batch_size) if res else 0,
                         "model_test_acc": acc, "model_test_loss": loss,
                         "diverged": bool(res and res.diverged),
                         "train_time": res.wall_time if res else 0.0,
                         "probe_time": time.perf_counter() - t0,
                         "mean_probe_test_error": sum(r["test_error"] for r in probe_rows) / len(probe_rows)})
            print(f"probes fig5 s{seed} {snapshot}: model test_acc={acc:.4f}; probe test error "
                  + " ".join(f"{r['point']}={r['test_error']:.3f}" for r in probe_rows))
    return pd.DataFrame(rows), runs


def figure8(p: Params, train_all, probe_train, test, device, curves, models_dir: Path):
    cfg, d = probe_config(p.probe), p.deep_mlp
    k = steps_per_epoch(d.snapshot_steps, d.batch_size, len(train_all))
    train = train_all.head(k * d.batch_size).to(device)  # every epoch is exactly k minibatches
    points = models.deep_mlp_points(d.depth)
    rows, runs = [], []
    for seed in d.seeds:
        model = models.seeded(seed, models.DeepSkipMLP, depth=d.depth, width=d.width,
                              skip_layer=d.skip_layer, negative_slope=d.negative_slope,
                              init=d.init).to(device)
        opt = make_optimizer(model.parameters(), d.optimizer, d.lr, d.momentum)
        decay = lr_decay(opt, d.lr_decay)
        done, diverged, train_time = 0, False, 0.0
        for steps in d.snapshot_steps:
            if steps > done and not diverged:
                res = fit(model, train, epochs=(steps - done) // k, batch_size=d.batch_size,
                          optimizer=opt, seed=seed * 100_003 + done, desc=f"deep_mlp_s{seed}",
                          callbacks=[decay, curves.callback(f"deep_mlp_s{seed}")])
                diverged, train_time = res.diverged, train_time + res.wall_time
                done = steps
            outputs.save_model(models_dir / f"deep_mlp_s{seed}_step{steps}.pt", model, seed=seed,
                               steps=steps, params=d.model_dump())
            t0 = time.perf_counter()
            probe_rows = train_probes(model, points, probe_train, test, cfg, seed,
                                      desc=f"probes deep_mlp_s{seed} step {steps}")
            rows += [{"seed": seed, "snapshot": f"{steps} minibatches", "steps": steps, **r}
                     for r in probe_rows]
            loss, acc = evaluate(model, test)
            runs.append({"figure": "fig8", "model": "deep_mlp", "seed": seed,
                         "snapshot": f"{steps} minibatches", "steps": done if diverged else steps,
                         "model_test_acc": acc, "model_test_loss": loss, "diverged": diverged,
                         "train_time": train_time, "probe_time": time.perf_counter() - t0,
                         "mean_probe_test_error": sum(r["test_error"] for r in probe_rows) / len(probe_rows)})
            print(f"probes fig8 s{seed} step {steps}: model test_acc={acc:.4f}, probe test error "
                  f"input={probe_rows[0]['test_error']:.3f} last={probe_rows[-1]['test_error']:.3f}")
    return pd.DataFrame(rows), runs


def run(p: Params, out: Path, models_dir: Path) -> None:
    device = params.resolve_device(p.device)
    train_all, test = data.load(p.dataset)
    probe_train = train_all.head(p.probe.train_size).to(device)
    test = test.head(p.probe.test_size).to(device)
    curves = outputs.Curves()
    figures.setup()
    t0 = time.perf_counter()
    fig5, runs5 = figure5(p, train_all, probe_train, test, device, curves, models_dir)
    t5 = time.perf_counter() - t0
    fig8, runs8 = figure8(p, train_all, probe_train, test, device, curves, models_dir)
    t8 = time.perf_counter() - t0 - t5
    curves.write(out / "curves.csv")
    columns = ["seed", "snapshot", "point", "depth", "features", "test_error", "train_error",
               "val_error", "test_loss", "epochs", "best_epoch", "diverged", "cached"]
    outputs.write_table(out / "fig5.csv", fig5[columns])
    outputs.write_table(out / "fig8.csv", fig8[["steps"] + columns])
    runs = pd.DataFrame(runs5 + runs8)
    outputs.write_results(out, runs, ["figure", "model", "seed", "snapshot"])
    trained = fig5[fig5.snapshot == "trained"].groupby("point", sort=False).test_error.mean()
    last = fig8[fig8.steps == fig8.steps.max()]
    outputs.write_json(out / "metrics.json", {  # headline numbers only: what dvc metrics diff shows
        "fig5_convnet_test_acc": runs[(runs.figure == "fig5") & (runs.snapshot == "trained")].model_test_acc.mean(),
        "input_probe_error": trained.iloc[0], "logits_probe_error": trained.iloc[-1],
        "fig8_last_layer_error": last[last.depth == last.depth.max()].test_error.mean()})
    plot5(fig5, out / "figures")
    plot8(fig8, p.deep_mlp.skip_layer, out / "figures")
    print(f"probes: figure 5 took {t5:.0f}s, figure 8 {t8:.0f}s")


# --- figures ----------------------------------------------------------------------------------

def plot5(df: pd.DataFrame, fig_dir: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    sns.lineplot(df, x="point", y="test_error", hue="snapshot", marker="o", errorbar="sd", ax=ax,
                 sort=False)
    ax.set(xlabel="probe point (in forward order)", ylabel="probe test error (fraction)",
           title=f"Figure 5: linear probes on the convnet (mean ± sd over {df.seed.nunique()} seeds)")
    ax.tick_params(axis="x", rotation=30)
    figures.save(fig, fig_dir, "fig5_convnet_probes")


def plot8(df: pd.DataFrame, skip_layer: int, fig_dir: Path) -> None:
    snaps = list(dict.fromkeys(df.snapshot))
    fig, axes = plt.subplots(len(snaps), 1, figsize=(10, 2.6 * len(snaps)), sharex=True, sharey=True,
                             squeeze=False)
    for ax, snap in zip(axes[:, 0], snaps):
        part = df[df.snapshot == snap]
        sns.lineplot(part, x="depth", y="test_error", errorbar="sd", ax=ax, marker=".")
        ax.axhline(0.9, ls=":", c="gray", label="chance (10 classes)")
        if skip_layer:
            ax.axvline(skip_layer, ls="--", c="C3", label=f"input joins layer {skip_layer}")
        ax.set(ylabel="probe test error", title=f"after {snap}", ylim=(0, 1))
    axes[0, 0].legend(loc="lower left")
    axes[-1, 0].set_xlabel("probe after layer (0 = input)")
    fig.suptitle("Figure 8: linear probes on the deep skip MLP", fontweight="bold")
    figures.save(fig, fig_dir, "fig8_deep_mlp_probes")


# --- report -----------------------------------------------------------------------------------

def _rises(trained: pd.DataFrame) -> list[str]:
    """Depth steps where the mean probe error rises by more than the seeds' spread of that rise."""
    wide = trained.pivot(index="seed", columns="point", values="test_error")[list(dict.fromkeys(trained.point))]
    steps = wide.diff(axis=1).iloc[:, 1:]
    spread = steps.std(ddof=1).fillna(0.0) if len(wide) > 1 else 0.0 * steps.mean()
    return [f"{a}→{b}" for (a, b), m, s in zip(zip(wide.columns, wide.columns[1:]), steps.mean(), spread)
            if m > s and m > 0]


def _probe_training(q: dict) -> str:
    """How the probes trained, naming the deviation from the notebook's one learning rate."""
    scaled = (f", divided by n / {q['lr_features']} for a probe on n > {q['lr_features']} features "
              "(the notebook used one rate: with it, Adam moves the logits of a probe in proportion "
              "to its number of features, and the conv1 probes, on 32 times the image's features, "
              "stopped far from their optimum)") if q["lr_features"] else ""
    return (f"Each probe trains with Adam at learning rate {q['lr']}{scaled}, stopped early on its "
            f"validation loss (patience {q['patience']}).")


def section(out: Outputs, refs: dict) -> Section:
    f5, f8 = out.table("fig5.csv"), out.table("fig8.csv")
    ref = lambda key: ref_value(refs, "probes", key)  # noqa: E731
    err = lambda df, point: df[df.point == point].set_index("seed").test_error  # noqa: E731
    runs = out.table()
    trained_acc = runs[(runs.figure == "fig5") & (runs.snapshot == "trained")].model_test_acc
    rows = [Row("figure 5: the convnet's test accuracy after training", fmt_series(trained_acc))]
    for snap, g in f5.groupby("snapshot", sort=False):
        m = g.groupby("point", sort=False).test_error.mean()
        rows.append(Row(f"figure 5, {snap}: probe test error {m.index[0]} → {m.index[-1]}",
                        " → ".join(f"{v:.3f}" for v in m.values)))
    trained, untrained = f5[f5.snapshot == "trained"], f5[f5.snapshot == "untrained"]
    rises = _rises(trained)
    rows += [Row("figure 5, trained: depth steps where the error rises by more than its seed spread",
                 f"{len(rises)} of {trained.point.nunique() - 1}" + (f" ({', '.join(rises)})" if rises else "")),
             Row("figure 5, trained: conv1 pre-activation − input probe error",
                 stats.paired(err(trained, "conv1_pre"), err(trained, "input")).text("paired by seed"),
                 "≤ 0 for an optimal probe (an injective linear map of the input: it can express "
                 "every input probe)")]
    fig5 = [("trained: probe error vs depth",
             verdicts.judge_trend(stats.spearman(trained.depth, trained.test_error), -1)),
            ("untrained: the first ReLU lowers the error (conv1 post − pre)",
             verdicts.judge(stats.paired(err(untrained, "conv1_post"), err(untrained, "conv1_pre")), -1,
                            ref("min_error_effect")))]
    skip = int(out.params["deep_mlp"]["skip_layer"])
    by_steps = lambda part: {k: g.droplevel("steps") for k, g in  # noqa: E731  {steps: per-seed mean}
                             part.groupby(["steps", "seed"]).test_error.mean().groupby(level="steps")}
    before = by_steps(f8[(f8.depth >= 1) & (f8.depth < skip)])
    after = by_steps(f8[f8.depth >= skip])
    none = pd.Series(dtype=float)
    first, last = f8.steps.min(), f8.steps.max()
    for steps in sorted(f8.steps.unique()):
        rows.append(Row(f"figure 8, after {steps} minibatches: mean probe error, layers 1–{skip - 1} / {skip}+",
                        f"{fmt_series(before.get(steps, none), 3)} / {fmt_series(after.get(steps, none), 3)}",
                        f"near chance ({ref_text(refs, 'probes', 'chance_test_error')}) / improving"))
    fig8 = [(f"layers {skip}+ improve with training (error at {last} − at {first} minibatches)",
             verdicts.judge(stats.paired(after.get(last, none), after.get(first, none)), -1, ref("min_error_effect"))),
            (f"layers 1–{skip - 1} stay near chance at {last} minibatches (error − chance)",
             verdicts.judge_equal(stats.versus(before.get(last, none), ref("chance_test_error")), ref("chance_margin")))]
    by_figure = " ".join(f"Figure {k}: {verdicts.overall([(n, j.label) for n, j in part])}."
                         for k, part in (("5", fig5), ("8", fig8)))
    p = out.params
    return Section(
        "probes", "E7 Linear classifier probes",
        "How linearly separable are the classes at each depth of a network (Alain & Bengio 2016)? "
        f"A linear probe on the frozen activations of each layer of a convnet, before and after training "
        f"on {p['dataset']} (the paper and the notebook used MNIST); and a 'pathologically deep' "
        f"{p['deep_mlp']['depth']}-layer MLP whose input also skips to layer {skip}. "
        + _probe_training(p["probe"]),
        rows, verdict([(f"figure 5, {n}", j) for n, j in fig5] + [(f"figure 8, {n}", j) for n, j in fig8],
                      by_figure))
