"""E7 probes, compute: train the models, probe every snapshot, write the tables (see the package doc)."""

import time
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from pydantic import Field, field_validator

from genstudy import data, models, outputs, params
from genstudy.objectives import penalized
from genstudy.probes import ProbeConfig, steps_per_epoch, train_probes
from genstudy.training import evaluate, fit, lr_decay, make_optimizer

Decay = Annotated[float, Field(gt=0, le=1)]


class ProbeParams(params.Schema):
    train_size: params.PositiveInt | None  # first N train images for the probes (val split inside)
    test_size: params.PositiveInt | None   # first N test images for the probes' test error
    val_fraction: params.Fraction
    epochs: params.PositiveInt             # most epochs per probe
    patience: params.PositiveInt           # per-probe early stopping on validation loss
    batch_size: params.PositiveInt
    lr: params.PositiveFloat               # Adam
    lr_features: params.PositiveInt | None  # a probe on n > lr_features features: lr * lr_features / n
    cache_mb: Annotated[float, Field(ge=0)]  # activations held in memory (MiB), deepest points first


class ConvnetParams(params.Training):
    train_size: params.PositiveInt | None
    lr_decay: Decay                        # lr multiplied by this after every epoch
    dropout: Annotated[float, Field(ge=0, lt=1)]  # after the dense layer's ReLU, as the notebook
    # Keras l2(l2) on both dense layers' kernels and biases, as the notebook: + l2 * sum w^2
    l2: Annotated[float, Field(ge=0)]


class DeepMLPParams(params.Schema):
    seeds: params.Seeds
    depth: params.PositiveInt
    width: params.PositiveInt
    skip_layer: Annotated[int, Field(ge=0)]  # layer whose input gets the flattened image (0: none)
    negative_slope: Annotated[float, Field(ge=0, lt=1)]
    init: Literal[models.INITS]  # type: ignore[valid-type]
    snapshot_steps: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    batch_size: params.PositiveInt
    optimizer: params.Optimizer
    lr: params.PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)]  # SGD's (adam and nadam have none: ignored)
    lr_decay: Decay

    @field_validator("snapshot_steps")
    @classmethod
    def _increasing(cls, v):
        if sorted(set(v)) != v:
            raise ValueError("must be strictly increasing")
        return v


class Params(params.Experiment):
    probe: ProbeParams
    convnet: ConvnetParams
    deep_mlp: DeepMLPParams


# --- run --------------------------------------------------------------------------------------

def probe_config(p: ProbeParams) -> ProbeConfig:
    return ProbeConfig(epochs=p.epochs, patience=p.patience, batch_size=p.batch_size, lr=p.lr,
                       lr_features=p.lr_features, val_fraction=p.val_fraction,
                       cache_bytes=int(p.cache_mb * 2**20))


def figure5(p: Params, train_all, probe_train, test, device, curves, models_dir: Path):
    cfg, c = probe_config(p.probe), p.convnet
    train = train_all.head(c.train_size).to(device)
    rows, runs = [], []
    for seed in p.seeds:
        model = models.seeded(seed, models.convnet_e7, c.dropout).to(device)
        for snapshot in ("untrained", "trained"):
            res = None
            if snapshot == "trained":
                opt = make_optimizer(model.parameters(), c.optimizer, c.lr, c.momentum)
                res = fit(model, train, epochs=c.epochs, batch_size=c.batch_size, optimizer=opt,
                          seed=seed, eval_sets={"test": test}, desc=f"convnet_s{seed}",
                          objective=penalized(l2=c.l2, layers=["fc1", "fc2"], biases=True),
                          callbacks=[lr_decay(opt, c.lr_decay),
                                     curves.callback(f"convnet_s{seed}")])
                outputs.save_model(models_dir / f"convnet_s{seed}.pt", model, seed=seed,
                                   params=c.model_dump())
            t0 = time.perf_counter()
            probe_rows = train_probes(model, models.CONVNET_E7_POINTS, probe_train, test, cfg, seed,
                                      desc=f"probes convnet_s{seed} {snapshot}")
            rows += [{"seed": seed, "snapshot": snapshot, **r} for r in probe_rows]
            loss, acc = evaluate(model, test)
            runs.append({"figure": "fig5", "model": "convnet", "seed": seed, "snapshot": snapshot,
                         "steps": len(res.history) * -(-len(train) // c.batch_size) if res else 0,
                         "model_test_acc": acc, "model_test_loss": loss,
                         "diverged": bool(res and res.diverged),
                         "train_time": res.wall_time if res else 0.0,
                         "probe_time": time.perf_counter() - t0,
                         "mean_probe_test_error": sum(r["test_error"] for r in probe_rows) / len(probe_rows)})
            print(f"probes fig5 s{seed} {snapshot}: model test_acc={acc:.4f}; probe test error "
                  + " ".join(f"{r['point']}={r['test_error']:.3f}" for r in probe_rows))
    return pd.DataFrame(rows), runs


def figure8(p: Params, train_all, probe_train, test, device, curves, models_dir: Path):
    cfg, d = probe_config(p.probe), p.deep_mlp
    k = steps_per_epoch(d.snapshot_steps, d.batch_size, len(train_all))
    train = train_all.head(k * d.batch_size).to(device)  # every epoch is exactly k minibatches
    points = models.deep_mlp_points(d.depth)
    rows, runs = [], []
    for seed in d.seeds:
        model = models.seeded(seed, models.DeepSkipMLP, depth=d.depth, width=d.width,
                              skip_layer=d.skip_layer, negative_slope=d.negative_slope,
                              init=d.init).to(device)
        opt = make_optimizer(model.parameters(), d.optimizer, d.lr, d.momentum)
        decay = lr_decay(opt, d.lr_decay)
        done, diverged, train_time = 0, False, 0.0
        for steps in d.snapshot_steps:
            if steps > done and not diverged:
                res = fit(model, train, epochs=(steps - done) // k, batch_size=d.batch_size,
                          optimizer=opt, seed=seed * 100_003 + done, desc=f"deep_mlp_s{seed}",
                          callbacks=[decay, curves.callback(f"deep_mlp_s{seed}")])
                diverged, train_time = res.diverged, train_time + res.wall_time
                done = steps
            outputs.save_model(models_dir / f"deep_mlp_s{seed}_step{steps}.pt", model, seed=seed,
                               steps=steps, params=d.model_dump())
            t0 = time.perf_counter()
            probe_rows = train_probes(model, points, probe_train, test, cfg, seed,
                                      desc=f"probes deep_mlp_s{seed} step {steps}")
            rows += [{"seed": seed, "snapshot": f"{steps} minibatches", "steps": steps, **r}
                     for r in probe_rows]
            loss, acc = evaluate(model, test)
            runs.append({"figure": "fig8", "model": "deep_mlp", "seed": seed,
                         "snapshot": f"{steps} minibatches", "steps": done if diverged else steps,
                         "model_test_acc": acc, "model_test_loss": loss, "diverged": diverged,
                         "train_time": train_time, "probe_time": time.perf_counter() - t0,
                         "mean_probe_test_error": sum(r["test_error"] for r in probe_rows) / len(probe_rows)})
            print(f"probes fig8 s{seed} step {steps}: model test_acc={acc:.4f}, probe test error "
                  f"input={probe_rows[0]['test_error']:.3f} last={probe_rows[-1]['test_error']:.3f}")
    return pd.DataFrame(rows), runs


def run(p: Params, out: Path, models_dir: Path) -> None:
    device = params.resolve_device(p.device)
    train_all, test = data.load(p.dataset)
    probe_train = train_all.head(p.probe.train_size).to(device)
    test = test.head(p.probe.test_size).to(device)
    curves = outputs.Curves()
    t0 = time.perf_counter()
    fig5, runs5 = figure5(p, train_all, probe_train, test, device, curves, models_dir)
    t5 = time.perf_counter() - t0
    fig8, runs8 = figure8(p, train_all, probe_train, test, device, curves, models_dir)
    t8 = time.perf_counter() - t0 - t5
    curves.write(out / "curves.csv")
    columns = ["seed", "snapshot", "point", "depth", "features", "test_error", "train_error",
               "val_error", "test_loss", "epochs", "best_epoch", "diverged", "cached"]
    outputs.write_table(out / "fig5.csv", fig5[columns])
    outputs.write_table(out / "fig8.csv", fig8[["steps"] + columns])
    runs = pd.DataFrame(runs5 + runs8)
    outputs.write_results(out, runs, ["figure", "model", "seed", "snapshot"])
    # The runs and probes the report uses: a probe that diverged is left out like a model run.
    ok, ok5, ok8 = outputs.converged(runs), outputs.converged(fig5), outputs.converged(fig8)
    first, logits = fig5.point.iloc[0], fig5.point.iloc[-1]  # forward order, diverged probes or not
    trained = ok5[ok5.snapshot == "trained"].groupby("point", sort=False).test_error.mean()
    last = ok8[(ok8.steps == fig8.steps.max()) & (ok8.depth == fig8.depth.max())]
    outputs.write_json(out / "metrics.json", {  # headline numbers only: what dvc metrics diff shows
        "fig5_convnet_test_acc": ok[(ok.figure == "fig5") & (ok.snapshot == "trained")].model_test_acc.mean(),
        "input_probe_error": trained.get(first), "logits_probe_error": trained.get(logits),
        "fig8_last_layer_error": last.test_error.mean(), "diverged_runs": len(runs) - len(ok)})
    print(f"probes: figure 5 took {t5:.0f}s, figure 8 {t8:.0f}s")
