"""E2 gradient loss: the convnet trained on the gradient loss vs the cross-entropy baseline.

The gradient arm trains E2's convnet on ``objectives.gradient_loss`` over the
configured seeds; the baseline arm is the baselines stage's convnet of the
same seed, read from ``models/baselines`` (it must have been trained on the
same train subset). Both arms are scored on the test set under additive
Gaussian noise for each sigma, from one noise draw shared by every model.
"""

from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib import pyplot as plt
from pydantic import Field

from genstudy import data, figures, measures, models, outputs, params, stats, verdicts
from genstudy.objectives import gradient_loss
from genstudy.params import ParamsError
from genstudy.report import Outputs, Row, Section, fmt_series, ref_text, ref_value, verdict
from genstudy.training import fit, make_optimizer

# --- params -----------------------------------------------------------------------------------


class Params(params.Experiment, params.Training):
    train_size: params.PositiveInt | None = 10000   # must equal baselines.convnet.train_size
    test_size: params.PositiveInt | None = None
    sigmas: Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1)] = [
        0.0, 0.05, 0.1, 0.2, 0.3, 0.5]
    noise_seed: Annotated[int, Field(ge=0)] = 12345
    clip: bool = False


# --- run --------------------------------------------------------------------------------------

# The baseline arm is the baselines stage's convnet of the same seed (read, not retrained).
BASELINE_REPORTS, BASELINE_MODELS = outputs.stage_dirs("baselines")


def load_baseline(seed: int, p: Params, device) -> tuple[torch.nn.Module, dict]:
    """The baselines stage's convnet of ``seed``; it must share this stage's train subset."""
    path = BASELINE_MODELS / f"convnet_s{seed}.pt"
    if not path.is_file():
        raise ParamsError(f"gradient_loss.seeds: no baseline model {path} for seed {seed}; "
                          f"gradient_loss.seeds must be among baselines.seeds (run `dvc repro baselines`)")
    saved = torch.load(path, map_location=device, weights_only=False)
    trained = saved.get("params", {})
    if saved.get("seed") != seed or trained.get("train_size", "missing") != p.train_size:
        raise ParamsError(
            f"gradient_loss.train_size: {path} was trained with seed {saved.get('seed')} on "
            f"train_size={trained.get('train_size', 'missing')}, but this stage trains seed {seed} "
            f"on train_size={p.train_size}; set gradient_loss.train_size and "
            f"baselines.convnet.train_size to the same value")
    model = models.convnet_e2().to(device)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), trained


def run(p: Params, out: Path, models_dir: Path) -> None:
    device = params.resolve_device(p.device)
    baselines = {seed: load_baseline(seed, p, device) for seed in p.seeds}  # fail before training
    base_runs = pd.read_csv(BASELINE_REPORTS / "results.csv").query("model == 'convnet'").set_index("seed")
    train_all, test = data.load(p.dataset)
    train = train_all.head(p.train_size).to(device)
    test = test.head(p.test_size).to(device)
    noise = measures.gaussian_noise(test.x.shape, p.noise_seed, device)
    curves = outputs.Curves()
    rows, timing = [], []
    for seed in p.seeds:
        model = models.seeded(seed, models.convnet_e2).to(device)
        opt = make_optimizer(model.parameters(), p.optimizer, p.lr, p.momentum)
        tag = f"gradient_s{seed}"
        res = fit(model, train, epochs=p.epochs, batch_size=p.batch_size, optimizer=opt, seed=seed,
                  objective=gradient_loss, eval_sets={"test": test}, desc=tag,
                  callbacks=[curves.callback(tag)])
        outputs.save_model(models_dir / f"convnet_s{seed}.pt", model, model="convnet", seed=seed,
                           objective="gradient_loss", params=p.model_dump())
        base_model, base_params = baselines[seed]
        b = base_runs.loc[seed] if seed in base_runs.index else None
        arms = {"gradient_loss": (model, len(res.history), res.diverged),
                "cross_entropy": (base_model, int(b["epochs"]) if b is not None else base_params.get("epochs"),
                                  bool(b["diverged"]) if b is not None else None)}
        for arm, (m, epochs, diverged) in arms.items():
            for r in measures.accuracy_under_noise(m, test, p.sigmas, noise, clip=p.clip):
                rows.append({"arm": arm, "seed": seed, **r, "epochs": epochs, "diverged": diverged})
        # time per epoch with the per-epoch test evaluation, and of training alone (the cost
        # ratio; the baseline arm's is in the baselines stage's timing.csv)
        timing.append({"arm": "gradient_loss", "seed": seed,
                       "time_per_epoch": res.wall_time / max(len(res.history), 1),
                       "train_time_per_epoch": sum(res.epoch_times) / max(len(res.epoch_times), 1)})
        acc = {r["arm"]: r["test_acc"] for r in rows if r["seed"] == seed and r["sigma"] == p.sigmas[0]}
        print(f"gradient_loss: seed {seed} sigma={p.sigmas[0]} acc gradient={acc['gradient_loss']:.4f} "
              f"baseline={acc['cross_entropy']:.4f} ({res.wall_time:.0f}s)")
    curves.write(out / "curves.csv")
    df = pd.DataFrame(rows)
    outputs.write_table(out / "results.csv", df)
    outputs.write_table(out / "timing.csv", pd.DataFrame(timing))
    acc = df.groupby(["arm", "sigma"]).test_acc.mean()  # headline numbers only (dvc metrics diff)
    outputs.write_json(out / "metrics.json", {
        f"{arm}_test_acc_sigma{s:g}": acc[arm, s] for arm in ("gradient_loss", "cross_entropy")
        for s in sorted({p.sigmas[0], max(p.sigmas)})})
    draw(df, out / "figures")


# --- figures ----------------------------------------------------------------------------------

def draw(df: pd.DataFrame, out: Path) -> None:
    figures.setup()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sns.lineplot(df, x="sigma", y="test_acc", hue="arm", style="arm", markers=True, dashes=False,
                 errorbar="sd", err_style="band", ax=ax)
    sns.scatterplot(df, x="sigma", y="test_acc", hue="arm", ax=ax, legend=False, alpha=0.35, s=18)
    ax.set(xlabel="σ of additive Gaussian noise on inputs in [0, 1]",
           ylabel="test accuracy (mean ± sd over seeds)",
           title="E2 convnet: robustness to input noise")
    ax.legend(title="training loss")
    figures.save(fig, out, "accuracy_vs_sigma")


# --- report -----------------------------------------------------------------------------------

ARMS = {"gradient_loss": "gradient loss", "cross_entropy": "cross-entropy baseline"}


def section(out: Outputs, refs: dict) -> Section:
    df = out.table()
    acc = df.pivot_table(index=["sigma", "seed"], columns="arm", values="test_acc").reindex(
        columns=list(ARMS))  # seeds pair
    ref = lambda key: ref_value(refs, "gradient_loss", key)  # noqa: E731
    sigma_nb = ref("notebook_sigma")
    rows, parts = [], []
    for sigma, g in acc.groupby(level="sigma"):
        g = g.droplevel("sigma")
        diff = stats.paired(g["gradient_loss"], g["cross_entropy"])
        nb = lambda arm: ref_text(refs, "gradient_loss", f"{arm}_test_acc_" + (  # noqa: E731
            "clean" if sigma == 0 else f"sigma{sigma:g}"))
        rows += [Row(f"σ {sigma:g}: test accuracy, {ARMS['gradient_loss']} / {ARMS['cross_entropy']}",
                     f"{fmt_series(g['gradient_loss'])} / {fmt_series(g['cross_entropy'])}",
                     " / ".join(filter(None, (nb("gradient"), nb("baseline"))))),
                 Row(f"σ {sigma:g}: difference, gradient loss − baseline", diff.text("paired by seed"))]
        if sigma == 0:
            parts.append(("similar clean accuracy (gradient loss − baseline)",
                          verdicts.judge_equal(diff, ref("clean_margin"))))
        elif np.isclose(sigma, sigma_nb):
            parts.append((f"more accurate under noise σ {sigma:g} (gradient loss − baseline)",
                          verdicts.judge(diff, +1, ref("min_effect"))))
    # training alone, per epoch: this stage's gradient arm over the baselines stage's (same seeds)
    grad = out.table("timing.csv").set_index("seed").train_time_per_epoch if (out.dir / "timing.csv").is_file() \
        else pd.Series(dtype=float)
    base_dir = Outputs(out.dir.parent, "baselines")
    base = pd.Series(dtype=float)
    if (base_dir.dir / "timing.csv").is_file():
        bt = base_dir.table("timing.csv").merge(base_dir.table(), on=["model", "seed"]).query("model == 'convnet'")
        base = (bt.train_time / bt.epochs).set_axis(bt.seed)
    ratio = (grad / base).dropna()
    rows.append(Row("training time per epoch, gradient loss / cross-entropy (training alone, "
                    "measured in two stages; benchmarks/bench_gradient_loss.py compares them in one run)",
                    fmt_series(ratio, 2) if len(ratio) else "n/a (this run did not time training apart "
                    "from evaluation)", ref_text(refs, "gradient_loss", "cost_ratio_per_epoch")))
    note = "" if parts else f"The run has no σ {sigma_nb:g} (the notebook's) to test robustness at."
    return Section(
        "gradient_loss", "E2 The gradient loss (double backpropagation) and robustness to noise",
        "Does training on the gradient of the loss with respect to inputs and targets give a model "
        "as accurate as cross-entropy but more robust to Gaussian noise on its input, at about "
        "twice the cost?", rows, verdict(parts, note))
