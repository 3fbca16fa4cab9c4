"""baselines: the cross-entropy models the experiments compare against.

E2's convnet and E3's MLP 784-300-100-10 (no regularization), trained on the
Fashion-MNIST train set over the configured seeds. Writes the models
(DVC-cached), per-seed and mean/std test metrics, and per-epoch curves.
"""

from pathlib import Path

import pandas as pd

from genstudy import data, models, outputs, params
from genstudy.cli import run_stage
from genstudy.training import evaluate, fit, make_optimizer


class BaselineModel(params.Training):
    train_size: params.PositiveInt | None = None  # first N train images; null: all 60,000


class BaselinesParams(params.Experiment):
    test_size: params.PositiveInt | None = None  # first N test images; null: all 10,000
    convnet: BaselineModel
    mlp: BaselineModel


BUILDERS = {
    "convnet": lambda: models.convnet_e2(),
    "mlp": lambda: models.mlp([784, 300, 100, 10], init="he_normal"),
}
OUT = Path("reports/baselines")
MODELS = Path("models/baselines")


def main() -> None:
    p = params.load("baselines", BaselinesParams)
    device = params.resolve_device(p.device)
    train_all, test = data.load(p.dataset)
    test = test.head(p.test_size).to(device)
    live = outputs.open_live(OUT / "live")
    rows = []
    for name in BUILDERS:
        cfg: BaselineModel = getattr(p, name)
        train = train_all.head(cfg.train_size).to(device)
        for seed in p.seeds:
            model = models.seeded(seed, BUILDERS[name]).to(device)
            opt = make_optimizer(model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum)
            run = f"{name}_s{seed}"
            res = fit(model, train, epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=opt,
                      seed=seed, eval_sets={"test": test}, desc=run,
                      callbacks=[outputs.live_callback(live, run)])
            test_loss, test_acc = evaluate(model, test)
            rows.append({"model": name, "seed": seed, "epochs": len(res.history),
                         "train_loss": res.final.get("train_loss"), "train_acc": res.final.get("train_acc"),
                         "test_loss": test_loss, "test_acc": test_acc, "diverged": res.diverged,
                         "wall_time": res.wall_time})
            outputs.save_model(MODELS / f"{run}.pt", model, model=name, seed=seed,
                               params=cfg.model_dump())
            print(f"baselines: {run} test_acc={test_acc:.4f} ({res.wall_time:.0f}s)")
    live.end()
    df = pd.DataFrame(rows)
    outputs.write_table(OUT / "results.csv", df)
    outputs.write_json(OUT / "metrics.json", {
        "summary": outputs.summary_dict(df, "model", ["test_acc", "test_loss"]),
        "per_seed": {f"{r.model}_s{r.seed}": {"test_acc": r.test_acc, "test_loss": r.test_loss}
                     for r in df.itertuples()},
    })


if __name__ == "__main__":
    run_stage(main)
