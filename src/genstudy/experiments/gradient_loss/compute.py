"""E2 gradient loss, compute: train the gradient-loss convnets, score both arms under noise (see the package doc)."""

from pathlib import Path
from typing import Annotated

import pandas as pd
import torch
from pydantic import Field

from genstudy import data, measures, models, outputs, params
from genstudy.objectives import gradient_loss
from genstudy.params import ParamsError
from genstudy.training import fit, make_optimizer

# --- params -----------------------------------------------------------------------------------


class Params(params.Experiment, params.Training):
    train_size: params.PositiveInt | None   # must equal baselines.convnet.train_size; null: all
    test_size: params.PositiveInt | None    # null: all
    sigmas: Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1)]
    noise_seed: Annotated[int, Field(ge=0)]
    clip: bool


# --- run --------------------------------------------------------------------------------------

# The baseline arm is the baselines stage's convnet of the same seed (read, not retrained).
BASELINE_REPORTS, BASELINE_MODELS = outputs.stage_dirs("baselines")
ARMS = ("gradient_loss", "cross_entropy")


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
    ok = outputs.converged(df)  # the runs the report uses
    sigmas = sorted({p.sigmas[0], max(p.sigmas)})
    acc = ok.groupby(["arm", "sigma"]).test_acc.mean().reindex(  # every arm diverged: null
        pd.MultiIndex.from_product([ARMS, sigmas], names=["arm", "sigma"]))
    runs = df.drop_duplicates(["arm", "seed"])  # one row per (arm, seed) run
    outputs.write_json(out / "metrics.json", {  # headline numbers only (dvc metrics diff)
        **{f"{arm}_test_acc_sigma{s:g}": acc[arm, s] for arm in ARMS for s in sigmas},
        "diverged_runs": len(runs) - len(outputs.converged(runs))})
