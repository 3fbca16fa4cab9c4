"""Baselines, presentation: figure and report section from the compute stage's tables."""

import seaborn as sns

from genstudy import figures, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_text, ref_value, verdict

# --- figures ----------------------------------------------------------------------------------

def draw(outputs: Outputs, refs: dict) -> None:
    """Train and test accuracy per epoch of each model, mean ± sd over seeds."""
    curves = outputs.table("curves.csv")
    if curves.empty:  # every run diverged in its first epoch: no curve to draw
        return
    curves["model"] = curves.run.str.replace(r"_s\d+$", "", regex=True)
    long = curves.melt(id_vars=["model", "run", "epoch"], value_vars=["train_acc", "test_acc"],
                       var_name="set", value_name="accuracy")
    long["set"] = long["set"].str.replace("_acc", "")
    g = sns.relplot(long, x="epoch", y="accuracy", hue="set", col="model", kind="line", errorbar="sd",
                    height=3.6, aspect=1.2, facet_kws={"sharey": False})
    g.set_axis_labels("epoch", "accuracy (mean ± sd over seeds)")
    g.figure.suptitle("Baselines: accuracy per epoch (cross-entropy)", y=1.03)
    figures.save(g.figure, outputs.dir / "figures", "accuracy_curves")


# --- report -----------------------------------------------------------------------------------

def section(out: Outputs, refs: dict) -> Section:
    df = out.table()
    conv, mlp = df[df.model == "convnet"], df[df.model == "mlp"]
    ref = ref_value(refs, "baselines", "convnet_test_acc")
    draw = stats.prediction(conv.test_acc, ref)  # the notebook's number is one run: one draw
    lo, hi = draw.ci()
    parts = verdicts.family([(f"our convnet's mean test accuracy − the notebook's {ref:g}", verdicts.draw(draw))])
    n_train, batch = out.params["convnet"]["train_size"], out.params["convnet"]["batch_size"]
    nb_batch = int(ref_value(refs, "baselines", "convnet_batch_size"))
    note = "" if n_train is None else (f"The convnet trained on the first {n_train:,} training images; "
                                       "the notebook on all of them. ")
    if batch != nb_batch:
        note += (f"Deviation: the convnet trains at batch {batch}, the notebook's baseline at Keras' default "
                 f"{nb_batch} (its gradient-loss arm at 100); the reason and its measured cost are in "
                 "params.yaml (baselines.convnet.batch_size).")
    note = note.strip()
    return Section(
        "baselines", "Baselines: the cross-entropy models",
        "The cross-entropy models the experiments compare against: E2's convnet (the gradient loss's "
        "baseline arm) and E3's MLP 784-300-100-10 without regularization.",
        [Row("convnet test accuracy", fmt_series(conv.test_acc), ref_text(refs, "baselines", "convnet_test_acc")),
         Row("convnet: 95 % prediction interval for one more run of ours",
             f"{ref + lo:.4f}..{ref + hi:.4f}" if draw.n_min >= 2 else "n/a (fewer than 2 seeds)",
             f"{ref:g} (one run)"),
         Row("convnet test loss", fmt_series(conv.test_loss)),
         Row("MLP 784-300-100-10 test accuracy", fmt_series(mlp.test_acc))],
        verdict(parts, note))
