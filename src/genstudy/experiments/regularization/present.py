"""E3 regularization, presentation: figures and report section from the compute stage's tables."""

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from genstudy import figures, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_text, ref_value, verdict

# --- figures ----------------------------------------------------------------------------------


def draw(outputs: Outputs, refs: dict) -> None:
    df, curves = outputs.table(diverged=True), outputs.table("curves.csv")
    fig_dir = outputs.dir / "figures"
    if "val_acc" in curves:  # some run finished an epoch
        plot_curves(curves, fig_dir)
    plot_summary(df, fig_dir)
    entropies = outputs.table("mc_entropy.csv")
    if len(entropies):  # an MC variant evaluated some model
        plot_entropy(entropies, outputs.params["mc_passes"], fig_dir)


def plot_curves(curves: pd.DataFrame, fig_dir: Path) -> None:
    long = curves.melt(id_vars=["variant", "seed", "epoch"], value_vars=["train_acc", "val_acc"],
                       var_name="curve", value_name="accuracy")
    long["curve"] = long["curve"].map({"train_acc": "train (running, regularized)",
                                       "val_acc": "validation"})
    g = sns.relplot(data=long, x="epoch", y="accuracy", hue="curve", col="variant", col_wrap=3,
                    kind="line", errorbar="sd", height=3.2, aspect=1.3)
    g.set_axis_labels("epoch", "accuracy").set_titles("{col_name}")
    g.figure.suptitle("E3: train and validation accuracy per variant (mean ± sd over seeds)", y=1.03)
    figures.save(g.figure, fig_dir, "val_curves")


def plot_summary(df: pd.DataFrame, fig_dir: Path) -> None:
    """Test accuracy and train − validation gap per variant: mean and 95 % CI over seeds, dots = seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.55 * df.variant.nunique() + 1.8), sharey=True)
    order = list(dict.fromkeys(df.variant))
    for ax, col, label in ((axes[0], "test_acc", "test accuracy"),
                           (axes[1], "gap", "train − validation accuracy (eval mode)")):
        sns.stripplot(data=df, y="variant", x=col, order=order, color="0.55", size=5, ax=ax)
        sns.pointplot(data=df, y="variant", x=col, order=order, errorbar=("ci", 95), color="C0",
                      linestyle="none", capsize=0.3, ax=ax)
        ax.set(ylabel="", xlabel=label)
    axes[0].set_title("final test accuracy")
    axes[1].set_title("generalization gap after the last epoch")
    fig.suptitle("E3: mean and 95 % CI over seeds (grey dots: one seed each)", y=1.02)
    fig.tight_layout()
    figures.save(fig, fig_dir, "test_acc_gap")


def plot_entropy(ent: pd.DataFrame, passes: int, fig_dir: Path) -> None:
    ent = ent.assign(prediction=ent.correct.map({True: "correct", False: "wrong"}),
                     method=ent.method.map({"plain": "dropout off (one pass)",
                                            "mc": f"MC dropout ({passes} passes)"}))
    g = sns.displot(data=ent, x="entropy", hue="prediction", col="method", kind="hist",
                    stat="density", common_norm=False, element="step", bins=40, height=3.5, aspect=1.3)
    g.set_axis_labels("predictive entropy (nats)", "density").set_titles("{col_name}")
    g.figure.suptitle("E3: uncertainty of correct vs wrong test predictions (all seeds)", y=1.04)
    figures.save(g.figure, fig_dir, "mc_entropy")


# --- report -----------------------------------------------------------------------------------

def penalty_families(definitions: dict) -> dict[str, dict[str, float]]:
    """{'l1': {variant: strength}, 'l2': {...}}: the variants that add one penalty and nothing else
    (ReLU, no dropout, no max-norm), by penalty."""
    fam: dict[str, dict[str, float]] = {"l1": {}, "l2": {}}
    for name, d in definitions.items():
        plain = (d.get("activation", "relu") == "relu" and not d.get("dropout") and d.get("max_norm") is None
                 and d.get("mc_dropout_of") is None)
        on = [k for k in ("l1", "l2") if d.get(k)]
        if plain and len(on) == 1:
            fam[on[0]][name] = float(d[on[0]])
    return fam


def section(out: Outputs, refs: dict) -> Section:
    df = out.table()
    p = out.params
    by_seed = lambda v, col: df[df.variant == v].set_index("seed")[col]  # noqa: E731  (seeds pair)
    ref = lambda key: ref_value(refs, "regularization", key)  # noqa: E731
    present_ = set(df.variant)
    # Each penalty at several strengths: the one with the best mean validation accuracy is chosen
    # (validation, not test: the test set stays untouched by the choice); it and the notebook's
    # strength are tested, the other strengths are shown.
    rows, chosen, shown_only = [], {}, set()
    for pen, strengths in penalty_families(p.get("definitions", {})).items():
        strengths = {v: s for v, s in strengths.items() if v in present_}
        if len(strengths) < 2:
            continue
        val = {v: df[df.variant == v].best_val_acc.mean() for v in strengths}
        best = max(val, key=val.get)
        chosen[pen] = best
        shown_only |= {v for v, s in strengths.items() if v != best and s != ref("notebook_penalty")}
        rows.append(Row(f"{pen.upper()} strength chosen by validation accuracy (mean best validation accuracy "
                        "per strength)", f"{strengths[best]:g} ({best}); " + ", ".join(
                            f"{strengths[v]:g}: {val[v]:.3f}" for v in sorted(strengths, key=strengths.get)),
                        f"{ref('notebook_penalty'):g} (the notebook's)"))
    claims, underfit = {}, []
    for v, g in df.groupby("variant", sort=False):
        nb = ref_text(refs, "regularization", "dropout_test_acc") + " (2 epochs)" if v == "dropout" else ""
        gap = fmt_series(g.gap, 3) if g.gap.notna().any() else "—"
        rows.append(Row(f"{v}: test accuracy / best validation accuracy / train − validation gap",
                        f"{fmt_series(g.test_acc, 3)} / {fmt_series(g.best_val_acc, 3)} / {gap}", nb))
        if v == "none":
            continue
        # The notebook's claim is better generalization: test accuracy is the primary outcome. A
        # regularizer helps when it costs no test accuracy beyond the margin (non-inferiority)
        # and narrows the gap; one that narrows the gap by losing train and test accuracy under-fits.
        test = stats.paired(by_seed(v, "test_acc"), by_seed("none", "test_acc"))
        rows.append(Row(f"{v}: test accuracy − none's", test.text("paired by seed").partition(": ")[2]))
        if "train_acc" in g and g.train_acc.notna().any():
            train = stats.paired(by_seed(v, "train_acc"), by_seed("none", "train_acc"))
            rows.append(Row(f"{v}: train accuracy − none's", train.text("paired by seed").partition(": ")[2]))
            if train.ci()[1] < 0 and test.ci()[1] < 0:
                underfit.append(v)
        if v in shown_only:
            continue
        tag = " (strength chosen by validation)" if v in chosen.values() else ""
        claims[v] = [(f"{v}{tag} costs no test accuracy beyond −{ref('test_acc_margin'):g} (− none's)",
                      verdicts.noninferior(test, +1, ref("test_acc_margin")))]
        if g.gap.notna().any():  # an MC variant has no gap of its own
            claims[v].append((f"{v}{tag} narrows the gap of none",
                              verdicts.effect(stats.paired(by_seed(v, "gap"), by_seed("none", "gap")), -1,
                                              ref("min_gap_effect"))))
    judged = verdicts.family([part for parts in claims.values() for part in parts])
    by_name = dict(judged)
    helps = {v: verdicts.all_of([by_name[name].label for name, _ in parts]) for v, parts in claims.items()}
    # The claim is that regularization helps: reproduced where every regularizer does, partly
    # where some do; where none does, inconclusive while some might, else not reproduced.
    labels = list(helps.values())
    label = (verdicts.REPRODUCED if labels and all(x == verdicts.REPRODUCED for x in labels) else
             verdicts.PARTLY if verdicts.REPRODUCED in labels else
             verdicts.INCONCLUSIVE if verdicts.INCONCLUSIVE in labels or not labels else verdicts.NOT_REPRODUCED)
    mc = df[df.trained_as != df.variant]
    if len(mc) and "mc_entropy_correct" in mc:
        rows.append(Row("MC dropout: predictive entropy, correct / wrong predictions (nats)",
                        f"{fmt_series(mc.mc_entropy_correct, 3)} / {fmt_series(mc.mc_entropy_wrong, 3)}"))
    note = (f"A regularizer helps when it loses no test accuracy beyond {ref('test_acc_margin'):g} and, "
            "where it has a gap of its own, narrows it (both parts): "
            + "; ".join(f"{v} {x}" for v, x in helps.items())
            + f". Under-fit (train and test accuracy both below none's, 95 % CIs): {', '.join(underfit) or 'none'}."
            + (f" Penalty strengths shown but not tested (neither chosen nor the notebook's): "
               f"{', '.join(sorted(shown_only))}." if shown_only else ""))
    size = "the whole train split" if p["train_size"] is None else f"the first {p['train_size']:,} images of the train split"
    return Section(
        "regularization", "E3 Regularization",
        "Do L1/L2 penalties, dropout, MC dropout, SELU with AlphaDropout and max-norm make an MLP "
        f"{'-'.join(map(str, p['sizes']))}, trained {p['training']['epochs']} epochs on {size}, "
        "generalize better: as accurate on the test set as without them, with a smaller "
        "train-validation gap?", rows, verdict(judged, note, label))
