"""E1b Keskar's F1, presentation: figures and report section from the compute stage's tables."""

import seaborn as sns

from genstudy import figures, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_value, verdict

# How a data set is named in prose (the report), by its params name.
DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}
ARMS = ("SB", "LB")


# --- figures

def draw(outputs: Outputs, refs: dict) -> None:
    df, out = outputs.table("results.csv", diverged=True), outputs.dir / "figures"
    cols = [c for c in df.columns if c.startswith("sharpness_lbfgsb_") or c.startswith("sharpness_ascent_")]
    long = df.melt(id_vars=["arm", "batch_size", "seed"], value_vars=cols, value_name="sharpness")
    parts = long.variable.str.extract(r"^sharpness_(lbfgsb_eval|lbfgsb|ascent)_(.+)$")
    long["method"] = parts[0].map({"lbfgsb": "L-BFGS-B, batch statistics", "ascent": "sign ascent, batch statistics",
                                   "lbfgsb_eval": "L-BFGS-B, eval mode (not the paper's)"})
    long["eps"] = "eps " + parts[1]
    long["arm"] = long.arm + " (batch " + long.batch_size.astype(str) + ")"
    # log scale: LB and SB may differ by orders of magnitude; 0 (no increase found) drawn at 1e-3
    long["sharpness"] = long.sharpness.clip(lower=1e-3)
    g = sns.catplot(long, x="arm", y="sharpness", hue="method", col="eps", kind="strip", dodge=True,
                    size=6, alpha=0.8, height=4, aspect=1.1, log_scale=True)
    for ax, (_, sub) in zip(g.axes.flat, long.groupby("eps", sort=False)):
        sns.pointplot(sub, x="arm", y="sharpness", hue="method", dodge=0.4, errorbar=None, markers="_",
                      markersize=25, linestyle="none", palette=["0.2"] * sub.method.nunique(), legend=False, ax=ax)
    g.set_titles("{col_name}")
    g.set_axis_labels("", "Keskar sharpness (%, log scale)")
    g.legend.set_title("maximiser")
    g.figure.suptitle("F1: sharpness of small- vs large-batch minima (dots = seeds, bar = mean)", y=1.04)
    figures.save(g.figure, out, "sharpness")


# --- report

def _ref(refs: dict, key: str, scale: float = 1.0, digits: int = 2) -> str:
    """A paper's number in the table's units (``scale`` 100: a fraction shown in percent)."""
    r = (refs.get("keskar") or {}).get(key)
    if not r or r.get("value") is None:
        return ""
    f = lambda x: f"{scale * x:.{digits}f}"  # noqa: E731
    return f(r["value"]) + (f" ± {f(r['std'])}" if r.get("std") is not None else "")


QUESTION = ("Do large batches converge to sharper minima than small ones, and generalize worse, with "
            "Keskar et al.'s own network F1 (5 x 512 with batch norm, Adam, SB 256 vs LB 10 % of the "
            "data), both trained to the same training accuracy?")


def section(out: Outputs, refs: dict) -> Section:
    df = out.table()
    title = "E1b Keskar's F1: sharp minima of large batches"
    if df.empty:  # every run diverged: nothing to measure
        return Section("keskar", title, QUESTION, [], verdict([], "Every run diverged: no minimum to measure."))
    first = df.iloc[0]
    name = DATASET_NAMES.get(first.dataset, first.dataset)
    eps_keys = [c.removeprefix("sharpness_lbfgsb_") for c in df.columns
                if c.startswith("sharpness_lbfgsb_") and not c.startswith("sharpness_lbfgsb_eval_")]
    arms = {a: df[df.arm == a] for a in ARMS}
    rows = []
    for a, g in arms.items():
        if g.empty:
            continue
        lab, low = f"{a} (batch {g.batch_size.iloc[0]:,})", a.lower()
        rows += [Row(f"{lab}: train accuracy (%)", fmt_series(100 * g.train_acc, 2), _ref(refs, f"train_acc_{low}", 100)),
                 Row(f"{lab}: test accuracy (%)", fmt_series(100 * g.test_acc, 2), _ref(refs, f"test_acc_{low}", 100)),
                 Row(f"{lab}: generalization gap (train - test, points)", fmt_series(100 * g.gap, 2)),
                 Row(f"{lab}: epochs to the criterion (reached by {int(g.reached.sum())} of {len(g)})",
                     fmt_series(g.epochs, 1))]
        for k in eps_keys:
            rows += [Row(f"{lab}: sharpness eps {k}, L-BFGS-B, batch statistics (%)",
                         fmt_series(g[f"sharpness_lbfgsb_{k}"], 2), _ref(refs, f"sharpness_{low}_eps{k}"))]
            if f"sharpness_lbfgsb_eval_{k}" in g:
                rows.append(Row(f"{lab}: sharpness eps {k}, L-BFGS-B, eval mode (running statistics; not the "
                                "paper's measure, %)", fmt_series(g[f"sharpness_lbfgsb_eval_{k}"], 2)))
            ratio = g[f"sharpness_ascent_{k}"] / g[f"sharpness_lbfgsb_{k}"]
            rows.append(Row(f"{lab}: sharpness eps {k}, sign ascent (cross-check, %) / its ratio to L-BFGS-B's",
                            f"{fmt_series(g[f'sharpness_ascent_{k}'], 2)} / {fmt_series(ratio, 2)}"))
    sb, lb = arms["SB"], arms["LB"]
    for k in eps_keys:
        col, paper_sb, paper_lb = (f"sharpness_lbfgsb_{k}", ref_value(refs, "keskar", f"sharpness_sb_eps{k}"),
                                   ref_value(refs, "keskar", f"sharpness_lb_eps{k}"))
        if len(sb) and len(lb) and sb[col].mean() > 0:
            rows.append(Row(f"LB / SB mean sharpness, eps {k} (batch statistics)",
                            f"{lb[col].mean() / sb[col].mean():.1f}x", f"{paper_lb / paper_sb:.0f}x"))
    conv = out.table("convergence.csv") if (out.dir / "convergence.csv").is_file() else None
    if conv is not None and len(conv):
        for (arm, seed, eps), c in conv.groupby(["arm", "seed", "eps"], sort=False):
            rows.append(Row(f"{arm} seed {seed}: L-BFGS-B sharpness at eps {eps:g} (batch statistics) after "
                            + " / ".join(map(str, c.iterations)) + " iterations",
                            " / ".join(f"{v:.2f}" for v in c.sharpness)))
    acc = stats.welch(100 * lb.test_acc, 100 * sb.test_acc)
    paper = {k: ref_value(refs, "keskar", f"test_acc_{k}") for k in ("lb", "sb")}
    rows.append(Row("LB − SB test accuracy (points)", acc.text("difference", 2).partition(": ")[2],
                    f"{100 * (paper['lb'] - paper['sb']):+.2f}"))
    # The paper's claims, each LB against SB over independent seeds (different batch orders, so
    # the seeds do not pair): LB's minima are sharper, and LB generalizes worse.
    claims = [(f"LB − SB sharpness at eps {k} (L-BFGS-B, %)",
               verdicts.effect(stats.welch(lb[f"sharpness_lbfgsb_{k}"], sb[f"sharpness_lbfgsb_{k}"]), +1,
                               ref_value(refs, "keskar", "min_sharpness_effect"), digits=2)) for k in eps_keys]
    claims.append(("LB − SB test accuracy (points)",
                   verdicts.effect(acc, -1, 100 * ref_value(refs, "keskar", "min_accuracy_effect"), digits=2)))
    notes = [f"Data set: {name}" + ("" if first.dataset == "mnist" else ", where Keskar et al. used MNIST") +
             f"; {int(first.train_size):,} training images, sharpness evaluated on the first "
             f"{int(first.sharpness_size):,} of them (the paper: the whole training set, 60,000).",
             "Sharpness is measured as the paper's network computed its loss: batch norm normalizes with "
             "the statistics of the batch it sees (Keras 1's BatchNormalization(mode=2) in Keskar et al.'s "
             "released code), so a perturbation's shift of the pre-activations is re-normalized; the "
             "eval-mode value (fixed running statistics, which pass that shift on un-normalized) is the "
             "second line. What still differs from the paper: the data set, the "
             "training-set size and so the LB batch (10 % of it), the lr (the paper gives none), and the "
             "batch over which the statistics are taken; how far SB's sharpness stays above the paper's "
             "is an open question this run reports, not tunes away."]
    return Section("keskar", title, QUESTION, rows, verdict(verdicts.family(claims), " ".join(notes)))
