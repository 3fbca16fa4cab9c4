"""E3 regularization, compute: train every variant, MC-evaluate, write the tables (see the package doc)."""

from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import torch
from pydantic import Field, model_validator

from genstudy import data, models, outputs, params, uncertainty
from genstudy.stacked import Member, fit_stack_autograd
from genstudy.training import evaluate

# --- params -----------------------------------------------------------------------------------

NonNegFloat = Annotated[float, Field(ge=0)]


class Variant(params.Schema):
    # The one schema with defaults: each field defaults to "off" (plain ReLU/He, no penalty, no
    # dropout, no max-norm, trained), so a variant in params.yaml lists only what it turns on.
    activation: Literal["relu", "selu"] = "relu"
    init: Literal[models.INITS] = "he_normal"  # type: ignore[valid-type]
    l1: NonNegFloat = 0.0                 # l1 * sum|W| over every kernel (not biases)
    l2: NonNegFloat = 0.0                 # l2 * sum W^2 over every kernel (not biases)
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # rate, before every dense layer
    alpha_dropout: bool = False           # AlphaDropout instead of Dropout (for SELU)
    max_norm: params.PositiveFloat | None = None  # radius for the hidden layers' incoming weights
    mc_dropout_of: str | None = None      # train nothing: MC-evaluate this variant's models


class Params(params.Experiment):
    val_fraction: params.Fraction
    split_seed: Annotated[int, Field(ge=0)]
    train_size: params.PositiveInt | None  # first N of the train split; null: all
    val_size: params.PositiveInt | None    # first N of the validation split; null: all
    test_size: params.PositiveInt | None   # first N test images; null: all 10,000
    sizes: Annotated[list[params.PositiveInt], Field(min_length=2)]  # the MLP's layer widths
    training: params.Training
    mc_passes: params.PositiveInt
    variants: Annotated[list[str], Field(min_length=1)]
    definitions: dict[str, Variant]

    @model_validator(mode="after")
    def _check_variants(self):
        unknown = [v for v in self.variants if v not in self.definitions]
        if unknown:
            raise ValueError(f"variants {unknown} have no entry in definitions "
                             f"(defined: {', '.join(self.definitions)})")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("variants lists a name twice")
        for name in self.variants:
            base = self.definitions[name].mc_dropout_of
            if base is None:
                continue
            if base not in self.variants:
                raise ValueError(f"variant {name!r} reuses {base!r}, which is not in variants")
            b = self.definitions[base]
            if b.mc_dropout_of is not None or b.dropout == 0:
                raise ValueError(f"variant {name!r} reuses {base!r}, which is not a trained dropout model")
        return self


# --- run --------------------------------------------------------------------------------------

ENTROPY_COLUMNS = ["seed", "method", "entropy", "correct"]


def build(v: Variant, sizes: list[int]) -> torch.nn.Sequential:
    return models.mlp(sizes, activation=v.activation, dropout=v.dropout,
                      alpha_dropout=v.alpha_dropout, init=v.init)


def mc_rows(name, base, seed, model, test, val_row, passes):
    """The MC variant's row, and its per-example entropies (MC and plain) for the figure."""
    plain = uncertainty.probabilities(model, test.x)
    mc = uncertainty.mc_dropout_probabilities(model, test.x, passes=passes, seed=seed)
    per_example, summary = [], {}
    for method, probs in (("plain", plain), ("mc", mc)):
        wrong = probs.argmax(-1) != test.y
        ent = uncertainty.entropy(probs)
        per_example.append(pd.DataFrame({"seed": seed, "method": method, "entropy": ent.cpu().numpy(),
                                         "correct": (~wrong).cpu().numpy()}))
        summary[method] = {"acc": 1 - wrong.float().mean().item(),
                           "entropy_correct": ent[~wrong].mean().item(),
                           "entropy_wrong": ent[wrong].mean().item() if wrong.any() else float("nan"),
                           "error_auroc": uncertainty.error_auroc(ent, wrong)}
    row = {**val_row, "variant": name, "trained_as": base, "test_acc": summary["mc"]["acc"],
           "test_loss": torch.nn.functional.nll_loss(mc.clamp_min(1e-12).log(), test.y).item(),
           "train_acc": float("nan"), "gap": float("nan"),
           "mc_entropy_correct": summary["mc"]["entropy_correct"],
           "mc_entropy_wrong": summary["mc"]["entropy_wrong"],
           "mc_error_auroc": summary["mc"]["error_auroc"],
           "plain_error_auroc": summary["plain"]["error_auroc"]}
    return row, pd.concat(per_example)


def run(p: Params, out: Path, models_dir: Path) -> None:
    device = params.resolve_device(p.device)
    train_all, test = data.load(p.dataset)
    train, val = data.split(train_all, p.val_fraction, p.split_seed)
    train, val, test = data.standardize(train, val, test)
    train, val = train.head(p.train_size).to(device), val.head(p.val_size).to(device)
    test = test.head(p.test_size).to(device)
    t = p.training
    rows, curves, entropies = [], [], []
    mc_variants = {n: p.definitions[n].mc_dropout_of for n in p.variants
                   if p.definitions[n].mc_dropout_of}
    trained = [n for n in p.variants if n not in mc_variants]
    # Variants that differ only in penalties and max-norm share one architecture: their models
    # (every seed, every strength) train together as stacks (stacked.fit_stack_autograd), each
    # exactly the run fit would give it alone.
    groups: dict[tuple, list[tuple[str, int]]] = {}
    for name in trained:
        v = p.definitions[name]
        groups.setdefault((v.activation, v.dropout, v.alpha_dropout), []).extend(
            (name, seed) for seed in p.seeds)
    fitted = {}
    for runs in groups.values():
        stack = [models.seeded(seed, build, p.definitions[name], p.sizes).to(device)
                 for name, seed in runs]
        members = [Member(seed, p.definitions[name].l1, p.definitions[name].l2,
                          p.definitions[name].max_norm) for name, seed in runs]
        results = fit_stack_autograd(stack, train, epochs=t.epochs, batch_size=t.batch_size,
                                     optimizer=t.optimizer, lr=t.lr, momentum=t.momentum,
                                     members=members, eval_sets={"val": val},
                                     desc=f"{runs[0][0]}.. ({len(runs)} models)")
        fitted.update(zip(runs, zip(stack, results)))
    for name in trained:
        v = p.definitions[name]
        for seed in p.seeds:
            tag = f"{name}_s{seed}"
            model, res = fitted[name, seed]
            hist = pd.DataFrame(res.history)
            curves.append(hist.drop(columns="time", errors="ignore").assign(run=tag, variant=name, seed=seed))
            train_acc = evaluate(model, train)[1]
            test_loss, test_acc = evaluate(model, test)
            best = hist.loc[hist["val_acc"].idxmax()] if len(hist) else None
            row = {"variant": name, "seed": seed, "trained_as": name, "epochs": len(hist),
                   "test_acc": test_acc, "test_loss": test_loss,
                   "best_val_acc": best["val_acc"] if best is not None else float("nan"),
                   "best_epoch": int(best["epoch"]) if best is not None else 0,
                   "final_val_acc": res.final.get("val_acc", float("nan")),
                   "train_acc": train_acc, "gap": train_acc - res.final.get("val_acc", float("nan")),
                   "final_train_loss": res.final.get("train_loss", float("nan")),
                   "diverged": res.diverged, "diverged_reason": res.diverged_reason, "wall_time": res.wall_time}
            rows.append(row)
            outputs.save_model(models_dir / f"{tag}.pt", model, variant=name, seed=seed,
                               params=v.model_dump(), sizes=p.sizes)
            print(f"regularization: {tag} test_acc={test_acc:.4f} best_val={row['best_val_acc']:.4f} "
                  f"gap={row['gap']:+.4f} ({res.wall_time:.0f}s)")
            for mc_name, base in mc_variants.items():
                if base == name and not res.diverged:
                    keep = {k: row[k] for k in ("seed", "epochs", "best_val_acc", "best_epoch",
                                                "final_val_acc", "final_train_loss", "diverged")}
                    mc_row, ent = mc_rows(mc_name, base, seed, model, test, keep, p.mc_passes)
                    rows.append({**mc_row, "wall_time": 0.0})
                    entropies.append(ent)
                    print(f"regularization: {mc_name}_s{seed} test_acc={mc_row['test_acc']:.4f} "
                          f"(MC over {p.mc_passes} passes)")
    df = pd.DataFrame(rows)
    curves_df = pd.concat(curves, ignore_index=True)
    outputs.write_results(out, df, ["variant", "seed"])
    outputs.write_table(out / "curves.csv", curves_df)
    # Per test example, MC and plain: the entropy figure's data (no rows without an MC variant).
    outputs.write_table(out / "mc_entropy.csv", pd.concat(entropies, ignore_index=True) if entropies
                        else pd.DataFrame(columns=ENTROPY_COLUMNS))
    ok = outputs.converged(df)  # the runs the report uses
    mean = ok.groupby("variant", sort=False)[["test_acc", "gap"]].mean()
    outputs.write_json(out / "metrics.json", {  # headline numbers only: what dvc metrics diff shows
        "none_test_acc": mean.test_acc.get("none"), "none_gap": mean.gap.get("none"),
        "best_test_acc": mean.test_acc.max(), "diverged_runs": len(df) - len(ok)})
