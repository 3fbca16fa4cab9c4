"""E7 probes, presentation: figures and report section from the compute stage's tables."""

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from genstudy import figures, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_value, verdict

# --- figures ----------------------------------------------------------------------------------


def draw(outputs: Outputs, refs: dict) -> None:
    fig_dir = outputs.dir / "figures"
    plot5(outputs.table("fig5.csv", diverged=True), fig_dir)
    skip_layer = int(outputs.params["deep_mlp"]["skip_layer"])
    chance = refs.get("probes", {}).get("chance_test_error", {}).get("value")
    plot8(outputs.table("fig8.csv", diverged=True), skip_layer, chance, fig_dir)


def plot5(df: pd.DataFrame, fig_dir: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    sns.lineplot(df, x="point", y="test_error", hue="snapshot", marker="o", errorbar="sd", ax=ax,
                 sort=False)
    ax.set(xlabel="probe point (in forward order)", ylabel="probe test error (fraction)",
           title=f"Figure 5: linear probes on the convnet (mean ± sd over {df.seed.nunique()} seeds)")
    ax.tick_params(axis="x", rotation=30)
    figures.save(fig, fig_dir, "fig5_convnet_probes")


def plot8(df: pd.DataFrame, skip_layer: int, chance: float | None, fig_dir: Path) -> None:
    snaps = list(dict.fromkeys(df.snapshot))
    fig, axes = plt.subplots(len(snaps), 1, figsize=(10, 2.6 * len(snaps)), sharex=True, sharey=True,
                             squeeze=False)
    for ax, snap in zip(axes[:, 0], snaps):
        part = df[df.snapshot == snap]
        sns.lineplot(part, x="depth", y="test_error", errorbar="sd", ax=ax, marker=".")
        if chance is not None:
            ax.axhline(chance, ls=":", c="gray", label=f"chance ({chance:g})")
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
    fig5 = [("trained: probe error falls with depth (mean per-seed Spearman rho)",
             verdicts.effect(stats.trend_over_seeds(trained, "depth", "test_error"), -1, ref("min_rho"), digits=2)),
            ("untrained: the first ReLU lowers the error (conv1 post − pre)",
             verdicts.effect(stats.paired(err(untrained, "conv1_post"), err(untrained, "conv1_pre")), -1,
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
                        "unchanged by training / improving"))
    chance = ref("chance_test_error")
    rows.append(Row(f"figure 8, layers 1–{skip - 1} after {last} minibatches: error − chance ({chance:g}; "
                    "the paper's picture, not the notebook's claim)",
                    stats.versus(before.get(last, none), chance).text("x", 3).partition(": ")[2]))
    fig8 = [(f"layers {skip}+ improve with training (error at {last} − at {first} minibatches)",
             verdicts.effect(stats.paired(after.get(last, none), after.get(first, none)), -1, ref("min_error_effect"))),
            (f"layers 1–{skip - 1} are ignored: their error unchanged by training (at {last} − at {first} minibatches)",
             verdicts.equal(stats.paired(before.get(last, none), before.get(first, none)), ref("min_error_effect")))]
    judged = verdicts.family([(f"figure 5, {n}", c) for n, c in fig5] + [(f"figure 8, {n}", c) for n, c in fig8])
    by_figure = " ".join(f"Figure {k}: {verdicts.overall([(n, j.label) for n, j in judged if n.startswith(f'figure {k}')])}."
                         for k in ("5", "8"))
    p = out.params
    return Section(
        "probes", "E7 Linear classifier probes",
        "How linearly separable are the classes at each depth of a network (Alain & Bengio 2016)? "
        f"A linear probe on the frozen activations of each layer of a convnet, before and after training "
        f"on {p['dataset']} (the paper and the notebook used MNIST); and a 'pathologically deep' "
        f"{p['deep_mlp']['depth']}-layer MLP whose input also skips to layer {skip}. "
        + _probe_training(p["probe"]),
        rows, verdict(judged, by_figure))
