"""gradient_loss (E2): the convnet trained on the gradient loss vs the cross-entropy baseline.

The gradient arm trains E2's convnet on ``objectives.gradient_loss`` over the
configured seeds; the baseline arm is the baselines stage's convnet of the
same seed, read from ``models/baselines`` (it must have been trained on the
same train subset). Both arms are scored on the test set under additive
Gaussian noise for each sigma, from one noise draw shared by every model.
"""

from pathlib import Path
from typing import Annotated

import pandas as pd
import seaborn as sns
import torch
from matplotlib import pyplot as plt
from pydantic import Field

from genstudy import data, figures, measures, models, outputs, params
from genstudy.cli import run_stage
from genstudy.objectives import gradient_loss
from genstudy.params import ParamsError
from genstudy.training import fit, make_optimizer


class GradientLossParams(params.Experiment, params.Training):
    train_size: params.PositiveInt | None = 10000   # must equal baselines.convnet.train_size
    test_size: params.PositiveInt | None = None
    sigmas: Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1)] = [
        0.0, 0.05, 0.1, 0.2, 0.3, 0.5]
    noise_seed: Annotated[int, Field(ge=0)] = 12345
    clip: bool = False


OUT = Path("reports/gradient_loss")
MODELS = Path("models/gradient_loss")
BASELINES = Path("models/baselines")
BASELINE_RESULTS = Path("reports/baselines/results.csv")


def load_baseline(seed: int, p: GradientLossParams, device) -> tuple[torch.nn.Module, dict]:
    """The baselines stage's convnet of ``seed``; it must share this stage's train subset."""
    path = BASELINES / f"convnet_s{seed}.pt"
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


def main() -> None:
    p = params.load("gradient_loss", GradientLossParams)
    device = params.resolve_device(p.device)
    baselines = {seed: load_baseline(seed, p, device) for seed in p.seeds}  # fail before training
    base_runs = pd.read_csv(BASELINE_RESULTS).query("model == 'convnet'").set_index("seed")
    train_all, test = data.load(p.dataset)
    train = train_all.head(p.train_size).to(device)
    test = test.head(p.test_size).to(device)
    noise = measures.gaussian_noise(test.x.shape, p.noise_seed, device)
    live = outputs.open_live(OUT / "live")
    rows = []
    for seed in p.seeds:
        model = models.seeded(seed, models.convnet_e2).to(device)
        opt = make_optimizer(model.parameters(), p.optimizer, p.lr, p.momentum)
        run = f"gradient_s{seed}"
        res = fit(model, train, epochs=p.epochs, batch_size=p.batch_size, optimizer=opt, seed=seed,
                  objective=gradient_loss, eval_sets={"test": test}, desc=run,
                  callbacks=[outputs.live_callback(live, run)])
        outputs.save_model(MODELS / f"convnet_s{seed}.pt", model, model="convnet", seed=seed,
                           objective="gradient_loss", params=p.model_dump())
        base_model, base_params = baselines[seed]
        b = base_runs.loc[seed] if seed in base_runs.index else None
        arms = {
            "gradient_loss": (model, len(res.history), res.diverged,
                              res.wall_time / max(len(res.history), 1),
                              sum(res.epoch_times) / max(len(res.epoch_times), 1)),
            # the baselines stage records only its wall time (training + per-epoch test eval)
            "cross_entropy": (base_model, int(b["epochs"]) if b is not None else base_params.get("epochs"),
                              bool(b["diverged"]) if b is not None else None,
                              float(b["wall_time"] / b["epochs"]) if b is not None else float("nan"),
                              float("nan")),
        }
        for arm, (m, epochs, diverged, time_per_epoch, train_time_per_epoch) in arms.items():
            for r in measures.accuracy_under_noise(m, test, p.sigmas, noise, clip=p.clip):
                rows.append({"arm": arm, "seed": seed, **r, "epochs": epochs, "diverged": diverged,
                             "time_per_epoch": time_per_epoch,
                             "train_time_per_epoch": train_time_per_epoch})
        acc = {r["arm"]: r["test_acc"] for r in rows if r["seed"] == seed and r["sigma"] == p.sigmas[0]}
        print(f"gradient_loss: seed {seed} sigma={p.sigmas[0]} acc gradient={acc['gradient_loss']:.4f} "
              f"baseline={acc['cross_entropy']:.4f} ({res.wall_time:.0f}s)")
    live.end()
    df = pd.DataFrame(rows)
    outputs.write_table(OUT / "results.csv", df)
    by = df.assign(key=df.arm + "_sigma" + df.sigma.map("{:g}".format))
    per_arm = df.drop_duplicates(["arm", "seed"])
    outputs.write_json(OUT / "metrics.json", {
        "test_acc": outputs.summary_dict(by, "key", ["test_acc"]),
        "time_per_epoch_s": outputs.summary_dict(per_arm, "arm", ["time_per_epoch"]),
        "gradient_train_time_per_epoch_s": outputs.summary_dict(
            per_arm[per_arm.arm == "gradient_loss"], "arm", ["train_time_per_epoch"]),
    })
    draw(df, OUT / "figures")


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


if __name__ == "__main__":
    run_stage(main)
