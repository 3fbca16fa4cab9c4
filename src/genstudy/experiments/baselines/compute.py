"""Baselines, compute: train the cross-entropy convnet and MLP, write models and tables (see the package doc)."""

from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from pydantic import Field

from genstudy import data, models, outputs, params
from genstudy.training import evaluate, fit, make_optimizer

# --- params -----------------------------------------------------------------------------------


class BaselineModel(params.Training):
    train_size: params.PositiveInt | None  # first N train images; null: all 60,000


class Mlp(BaselineModel):
    sizes: Annotated[list[params.PositiveInt], Field(min_length=2)]  # layer widths, input to logits
    init: Literal[models.INITS]  # type: ignore[valid-type]  # weight initialiser (biases zero)


class Params(params.Experiment):
    test_size: params.PositiveInt | None  # first N test images; null: all 10,000
    convnet: BaselineModel  # E2's convnet (models.convnet_e2)
    mlp: Mlp


# --- run --------------------------------------------------------------------------------------

NETWORKS = ("convnet", "mlp")


def network(name: str, cfg: BaselineModel):
    """A builder of network ``name`` (for models.seeded)."""
    if name == "convnet":
        return models.convnet_e2
    return lambda: models.mlp(cfg.sizes, init=cfg.init)


def run(p: Params, out: Path, models_dir: Path) -> None:
    device = params.resolve_device(p.device)
    train_all, test = data.load(p.dataset)
    test = test.head(p.test_size).to(device)
    curves = outputs.Curves()
    rows = []
    for name in NETWORKS:
        cfg: BaselineModel = getattr(p, name)
        train = train_all.head(cfg.train_size).to(device)
        for seed in p.seeds:
            model = models.seeded(seed, network(name, cfg)).to(device)
            opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum)
            tag = f"{name}_s{seed}"
            res = fit(model, train, epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=opt,
                      seed=seed, eval_sets={"test": test}, desc=tag,
                      callbacks=[curves.callback(tag)])
            test_loss, test_acc = evaluate(model, test)
            rows.append({"model": name, "seed": seed, "epochs": len(res.history),
                         "train_loss": res.final.get("train_loss"), "train_acc": res.final.get("train_acc"),
                         "test_loss": test_loss, "test_acc": test_acc, "diverged": res.diverged, "diverged_reason": res.diverged_reason,
                         # training alone (E2's cost ratio), and with the per-epoch test evaluation
                         "train_time": sum(res.epoch_times), "wall_time": res.wall_time})
            outputs.save_model(models_dir / f"{tag}.pt", model, model=name, seed=seed,
                               params=cfg.model_dump())
            print(f"baselines: {tag} test_acc={test_acc:.4f} ({res.wall_time:.0f}s)")
    curves.write(out / "curves.csv")
    df = pd.DataFrame(rows)
    outputs.write_results(out, df, ["model", "seed"])
    ok = outputs.converged(df)  # the runs the report uses
    mean = ok.groupby("model").test_acc.mean().reindex(list(NETWORKS))  # all diverged: null
    outputs.write_json(out / "metrics.json", {  # headline numbers only: what dvc metrics diff shows
        **{f"{m}_test_acc": mean[m] for m in NETWORKS}, "diverged_runs": len(df) - len(ok)})
