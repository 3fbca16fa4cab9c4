"""Baselines: the cross-entropy models the experiments compare against.

E2's convnet and E3's MLP 784-300-100-10 (no regularization), trained on the
Fashion-MNIST train set over the configured seeds. Writes the models
(DVC-cached), per-seed and mean/std test metrics, and per-epoch curves.
"""

from pathlib import Path

import pandas as pd

from genstudy import data, models, outputs, params, stats, verdicts
from genstudy.report import Outputs, Row, Section, fmt_series, ref_text, ref_value, verdict
from genstudy.training import evaluate, fit, make_optimizer

# --- params -----------------------------------------------------------------------------------


class BaselineModel(params.Training):
    train_size: params.PositiveInt | None = None  # first N train images; null: all 60,000


class Params(params.Experiment):
    test_size: params.PositiveInt | None = None  # first N test images; null: all 10,000
    convnet: BaselineModel
    mlp: BaselineModel


# --- run --------------------------------------------------------------------------------------

NETWORKS = {
    "convnet": lambda: models.convnet_e2(),
    "mlp": lambda: models.mlp([784, 300, 100, 10], init="he_normal"),
}


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
            model = models.seeded(seed, NETWORKS[name]).to(device)
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
    mean = df.groupby("model").test_acc.mean()  # headline numbers only: what dvc metrics diff shows
    outputs.write_json(out / "metrics.json", {f"{m}_test_acc": mean[m] for m in NETWORKS if m in mean})


# --- report -----------------------------------------------------------------------------------

def section(out: Outputs, refs: dict) -> Section:
    df = out.table()
    conv, mlp = df[df.model == "convnet"], df[df.model == "mlp"]
    ref = ref_value(refs, "baselines", "convnet_test_acc")
    j = verdicts.judge_equal(stats.versus(conv.test_acc, ref), ref_value(refs, "baselines", "accuracy_margin"))
    n_train = out.params["convnet"]["train_size"]
    note = "" if n_train is None else (f"The convnet trained on the first {n_train:,} training images; "
                                       "the notebook on all of them.")
    return Section(
        "baselines", "Baselines: the cross-entropy models",
        "The cross-entropy models the experiments compare against: E2's convnet (the gradient loss's "
        "baseline arm) and E3's MLP 784-300-100-10 without regularization.",
        [Row("convnet test accuracy", fmt_series(conv.test_acc), ref_text(refs, "baselines", "convnet_test_acc")),
         Row("convnet test loss", fmt_series(conv.test_loss)),
         Row("MLP 784-300-100-10 test accuracy", fmt_series(mlp.test_acc))],
        verdict([(f"convnet test accuracy minus the notebook's {ref:g}", j)], note))
