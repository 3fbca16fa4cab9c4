"""What the report says about each experiment: its question, its table, its verdict.

Every number comes from a table a stage wrote (``reports/<stage>/*.csv``) or
from ``references.yaml`` (what the notebooks reported); the verdicts are
rules on those numbers, stated in the verdict text itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .report import Outputs, Row, Section, fmt, fmt_series, stage_params


def _ref(refs: dict, stage: str, key: str, digits: int = 4) -> str:
    r = (refs.get(stage) or {}).get(key)
    if not r or r.get("value") is None:
        return ""
    s = f"{r['value']:.{digits}g}" if isinstance(r["value"], float) else str(r["value"])
    return s + (f" ± {r['std']}" if r.get("std") is not None else "")


def _refv(refs: dict, stage: str, key: str) -> float:
    return float(refs[stage][key]["value"])


def _differs(a: pd.Series, b: pd.Series) -> bool:
    """Means further apart than two standard errors of their difference (a rough test).

    With one seed there is no spread to compare against: only the sign counts.
    """
    a, b = a.dropna(), b.dropna()
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if min(len(a), len(b)) > 1 else 0.0
    return abs(a.mean() - b.mean()) > 2 * se


def baselines(out: Outputs, refs: dict) -> Section:
    df = out.table()
    conv, mlp = df[df.model == "convnet"], df[df.model == "mlp"]
    p = stage_params("baselines")
    n_train = p.get("convnet", {}).get("train_size") or 60000
    ref = _refv(refs, "baselines", "convnet_test_acc")
    diff = conv.test_acc.mean() - ref
    if abs(diff) <= max(0.01, 2 * conv.test_acc.std(ddof=1) if len(conv) > 1 else 0.01):
        verdict = f"reproduced: the convnet's test accuracy is within {abs(diff):.3f} of the notebook's."
    else:
        verdict = (f"not reproduced: the convnet's test accuracy is {abs(diff):.3f} "
                   f"{'below' if diff < 0 else 'above'} the notebook's; it trained on the first "
                   f"{n_train:,} images, the notebook on 60,000.")
    return Section(
        "baselines", "Baselines: the cross-entropy models",
        "The cross-entropy models the experiments compare against: E2's convnet (the gradient loss's "
        "baseline arm) and E3's MLP 784-300-100-10 without regularization.",
        [Row("convnet test accuracy", fmt_series(conv.test_acc), _ref(refs, "baselines", "convnet_test_acc")),
         Row("convnet test loss", fmt_series(conv.test_loss)),
         Row("MLP 784-300-100-10 test accuracy", fmt_series(mlp.test_acc))],
        verdict)


def flatness(out: Outputs, refs: dict) -> Section:
    df = out.table()
    rows = []
    for bs, g in df.groupby("batch_size"):
        rows += [Row(f"batch {bs}: test accuracy / generalization gap",
                     f"{fmt_series(g.test_acc, 3)} / {fmt_series(g.gap, 3)}"),
                 Row(f"batch {bs}: input sensitivity (mean ‖∂L/∂x‖ over the evaluation set)",
                     fmt_series(g.sensitivity_mean, 3)),
                 Row(f"batch {bs}: Keskar sharpness (eps {stage_params('flatness').get('sharpness', {}).get('eps', 1e-3)})",
                     fmt_series(g.sharpness, 2),
                     _ref(refs, "flatness", "keskar_sharpness_small_batch" if bs == df.batch_size.min()
                          else "keskar_sharpness_large_batch") if bs in (df.batch_size.min(), df.batch_size.max())
                     else "")]
    small, large = df[df.batch_size == df.batch_size.min()], df[df.batch_size == df.batch_size.max()]
    up = large.sharpness.mean() > small.sharpness.mean()
    sharp_txt = (f"sharpness {'rises' if up else 'falls'} from {small.sharpness.mean():.2f} (batch "
                 f"{small.batch_size.iloc[0]}) to {large.sharpness.mean():.2f} (batch {large.batch_size.iloc[0]})")
    gap_txt = (f"the generalization gap goes from {small.gap.mean():.3f} to {large.gap.mean():.3f}")
    if up and _differs(large.sharpness, small.sharpness):
        verdict = f"reproduced qualitatively: {sharp_txt}, as Keskar et al. found; {gap_txt}."
    else:
        n_train = stage_params("flatness").get("train_size") or 60000
        why = (f" — at a fixed number of epochs small batches take {large.batch_size.iloc[0] // small.batch_size.iloc[0]}x "
               f"more steps on the {n_train:,} images and over-fit more" if small.gap.mean() > large.gap.mean() else "")
        verdict = (f"not reproduced: {sharp_txt} and {gap_txt}{why}; Keskar et al. found large batches "
                   "sharper (trained to the same training loss, not the same epochs).")
    return Section(
        "flatness", "E1 Flatness vs generalization and batch size",
        "Do large batches find sharp minima that generalize worse (Keskar et al. 2017)? An MLP "
        "784-16-16-10 is trained for each batch size on 3,000 images; for every model we measure "
        "the generalization gap, the input sensitivity and Keskar's epsilon-sharpness.",
        rows, verdict)


def gradient_loss(out: Outputs, refs: dict) -> Section:
    df = out.table()
    arms = {"gradient_loss": "gradient loss", "cross_entropy": "cross-entropy baseline"}
    rows = []
    drops = {}
    for arm, label in arms.items():
        a = df[df.arm == arm]
        clean = a[a.sigma == 0].set_index("seed").test_acc
        noisy = a[np.isclose(a.sigma, 0.1)].set_index("seed").test_acc
        drops[arm] = clean - noisy
        key = "gradient" if arm == "gradient_loss" else "baseline"
        rows += [Row(f"{label}: clean test accuracy", fmt_series(clean), _ref(refs, "gradient_loss", f"{key}_test_acc_clean")),
                 Row(f"{label}: test accuracy, noise sigma 0.1", fmt_series(noisy),
                     _ref(refs, "gradient_loss", f"{key}_test_acc_sigma0.1")),
                 Row(f"{label}: accuracy lost to sigma 0.1", fmt_series(drops[arm]),
                     f"{_refv(refs, 'gradient_loss', f'{key}_test_acc_clean') - _refv(refs, 'gradient_loss', f'{key}_test_acc_sigma0.1'):.4f}")]
    for s in sorted(df.sigma.unique()):
        if s not in (0, 0.1):
            rows.append(Row(f"test accuracy at sigma {s:g}: gradient loss / baseline",
                            f"{fmt_series(df[(df.arm == 'gradient_loss') & (df.sigma == s)].test_acc, 3)} / "
                            f"{fmt_series(df[(df.arm == 'cross_entropy') & (df.sigma == s)].test_acc, 3)}"))
    t = df.drop_duplicates(["arm", "seed"]).groupby("arm").time_per_epoch.mean()
    ratio = t["gradient_loss"] / t["cross_entropy"]
    rows.append(Row("time per epoch, gradient loss / cross-entropy (stage wall times, measured in "
                    "different stages; benchmarks/bench_gradient_loss.py compares them in one run)",
                    f"{ratio:.2f}x", _ref(refs, "gradient_loss", "cost_ratio_per_epoch") + "x"))
    g, b = drops["gradient_loss"], drops["cross_entropy"]
    ref_drop = {k: _refv(refs, "gradient_loss", f"{k}_test_acc_clean") - _refv(refs, "gradient_loss", f"{k}_test_acc_sigma0.1")
                for k in ("gradient", "baseline")}
    more_robust = g.mean() < b.mean() and _differs(g, b)
    by_sigma = df[df.sigma > 0].groupby(["sigma", "arm"]).test_acc.mean().unstack()
    worse = [f"{sg:g}" for sg, r in by_sigma.iterrows() if r["gradient_loss"] < r["cross_entropy"]]
    caveat = (f"; but at sigma {', '.join(worse)} the baseline keeps more accuracy" if worse else
              "; the gradient-loss model keeps more accuracy at every sigma of the grid")
    verdict = (f"{'reproduced qualitatively' if more_robust else 'not reproduced'}: under sigma 0.1 the "
               f"gradient-loss model loses {g.mean():.3f} of accuracy and the baseline {b.mean():.3f} "
               f"(the notebook: {ref_drop['gradient']:.3f} and {ref_drop['baseline']:.3f}){caveat}; an epoch cost {ratio:.1f}x in this run's "
               "stage times.")
    return Section(
        "gradient_loss", "E2 The gradient loss (double backpropagation) and robustness to noise",
        "Does training on the gradient of the loss with respect to inputs and targets give a model "
        "as accurate as cross-entropy but more robust to Gaussian noise on its input, at about "
        "twice the cost?", rows, verdict)


def regularization(out: Outputs, refs: dict) -> Section:
    df = out.table()
    rows = []
    for v, g in df.groupby("variant", sort=False):
        ref = _ref(refs, "regularization", "dropout_test_acc") + " (2 epochs)" if v == "dropout" else ""
        gap = fmt_series(g.gap, 3) if g.gap.notna().any() else "—"
        rows.append(Row(f"{v}: test accuracy / best validation accuracy / train-validation gap",
                        f"{fmt_series(g.test_acc, 3)} / {fmt_series(g.best_val_acc, 3)} / {gap}", ref))
    mc = df[df.trained_as != df.variant]
    if len(mc) and "mc_entropy_correct" in mc:
        rows.append(Row("MC dropout: predictive entropy, correct / wrong predictions (nats)",
                        f"{fmt_series(mc.mc_entropy_correct, 3)} / {fmt_series(mc.mc_entropy_wrong, 3)}"))
    none = df[df.variant == "none"]
    regs = df[(df.variant != "none") & df.gap.notna()].groupby("variant").gap.mean()
    narrower = [v for v, gp in regs.items() if gp < none.gap.mean()]
    best = df.groupby("variant", sort=False).test_acc.mean()
    verdict = (f"reproduced qualitatively: {len(narrower)} of {len(regs)} regularizers narrow the "
               f"train-validation gap of the unregularized model ({none.gap.mean():.3f}); the best test "
               f"accuracy is {best.idxmax()}'s {best.max():.4f} (none: {best.get('none', float('nan')):.4f})."
               if narrower else "not reproduced: no regularizer narrows the train-validation gap.")
    return Section(
        "regularization", "E3 Regularization",
        "How much do L1/L2 penalties, dropout, MC dropout, SELU with AlphaDropout and max-norm "
        "change over-fitting of an MLP 784-300-100-10, trained long enough to over-fit?",
        rows, verdict)


def transfer(out: Outputs, refs: dict) -> Section:
    df = out.table()
    b = df[df.task == "B"].pivot(index="seed", columns="arm", values="test_acc")
    gain = b["transferred"] - b["scratch"]
    wins = int((gain > 0).sum())
    rows = [Row("task B test accuracy, from scratch", fmt_series(b["scratch"]), _ref(refs, "transfer", "scratch_test_acc")),
            Row("task B test accuracy, transferred", fmt_series(b["transferred"]),
                _ref(refs, "transfer", "transferred_test_acc")),
            Row("gain of transfer (per seed)", fmt_series(gain),
                f"{_refv(refs, 'transfer', 'transferred_test_acc') - _refv(refs, 'transfer', 'scratch_test_acc'):.4f}"),
            Row("seeds where transfer wins", f"{wins} of {len(gain)}"),
            Row("model A, task A test accuracy", fmt_series(df[df.arm == "model_a"].test_acc),
                _ref(refs, "transfer", "model_a_test_acc"))]
    if gain.mean() > 0 and wins > len(gain) / 2:
        verdict = (f"reproduced qualitatively: transfer helps on {wins} of {len(gain)} seeds, by "
                   f"{gain.mean():.3f} ± {gain.std(ddof=1) if len(gain) > 1 else 0:.3f} on average "
                   f"(the notebook's single run: {_refv(refs, 'transfer', 'transferred_test_acc') - _refv(refs, 'transfer', 'scratch_test_acc'):.3f}).")
    else:
        verdict = f"not reproduced: transfer helps on only {wins} of {len(gain)} seeds (mean gain {gain.mean():.3f})."
    return Section(
        "transfer", "E4 Transfer learning",
        "Does reusing the lower layers of a model trained on 8 Fashion-MNIST classes help learn "
        f"coat vs sandal from 100 images? The notebook's single run said yes "
        f"({_ref(refs, 'transfer', 'scratch_test_acc')} -> {_ref(refs, 'transfer', 'transferred_test_acc')}); "
        "we run several seeds to see the spread.", rows, verdict)


def sweep(out: Outputs, refs: dict) -> Section:
    df = out.table()
    lr = df[df.sweep == "lr"].groupby("lr")[["final_train_acc", "final_test_acc"]].mean()
    bt = df[df.sweep == "batch"]
    grid = df[df.sweep == "grid"].groupby(["lr", "batch"]).final_test_acc.mean()
    small = bt[bt.batch <= 8].final_test_acc
    rows = [Row("lr sweep (batch 128, 10 epochs): best final train accuracy (at lr)",
                f"{lr.final_train_acc.max():.3f} (lr {lr.final_train_acc.idxmax():g})",
                _ref(refs, "sweep", "lr_sweep_best_final_train_acc") + " (lr 0.05-0.1)")]
    for v, key in ((0.1, "lr_sweep_test_acc_lr0.1"), (0.5, "lr_sweep_test_acc_lr0.5")):
        if v in lr.index:
            rows.append(Row(f"lr sweep: final test accuracy at lr {v}",
                            fmt_series(df[(df.sweep == "lr") & (df.lr == v)].final_test_acc, 3), _ref(refs, "sweep", key)))
    if len(small):
        rows.append(Row("batch sweep (lr 0.1): test accuracy at batch 2-8", fmt_series(small, 3),
                        _ref(refs, "sweep", "batch_sweep_acc_batch2to8")))
    if len(grid):
        (blr, bb), best = grid.idxmax(), grid.max()
        rows.append(Row("grid (20 epochs): best test accuracy (lr, batch)", f"{best:.3f} (lr {blr:g}, batch {bb})",
                        _ref(refs, "sweep", "grid_best_test_acc") + " (lr 0.05, batch 64)"))
        rows.append(Row("grid: runs diverged", f"{int(df[df.sweep == 'grid'].diverged.sum())} of "
                                               f"{len(df[df.sweep == 'grid'])}"))
    checks = []
    if len(small):
        checks.append(("batch 2-8 at lr 0.1 do not train", small.mean() < 0.2))
    if {0.1, 0.5} <= set(lr.index):
        checks.append(("lr 0.5 is worse than lr 0.1", lr.final_test_acc[0.5] < lr.final_test_acc[0.1]))
    if len(grid):
        checks.append((f"the grid's best test accuracy is within 0.02 of {_ref(refs, 'sweep', 'grid_best_test_acc')}",
                       abs(grid.max() - _refv(refs, "sweep", "grid_best_test_acc")) <= 0.02))
    held = [c for c, ok in checks if ok]
    failed = [c for c, ok in checks if not ok]
    if not failed:
        verdict = "reproduced: " + "; ".join(held) + "."
    else:
        verdict = (("reproduced qualitatively: " + "; ".join(held) + "; but " if held else "not reproduced: ")
                   + "; ".join(f"not: {c}" for c in failed) + ".")
    return Section(
        "sweep", "E5 Learning rate x batch size",
        "How do the learning rate and the batch size of SGD shape what an MLP 784-512-10 learns? "
        "Runs with the same ratio lr/batch (the SGD noise scale) should behave alike.",
        rows, verdict)


def margins(out: Outputs, refs: dict) -> Section:
    df = out.table()
    threshold = out.json("metrics.json")["fitted_train_acc"]
    ok = df[df.margin_mean.notna()]
    # E6's premise is models that fit their training set (the stage marks them); the margins
    # of one that did not (e.g. lr 0.05 at batch 16) measure a different thing, so the
    # comparison leaves them out
    fitted = ok[ok.fitted]
    left_out = df[~df.index.isin(fitted.index)].groupby(["lr", "batch"]).train_acc.agg(["size", "mean"])
    # one value per (lr, batch): the mean over seeds, as the notebook's one run per setting
    per_cfg = ok.groupby(["lr", "batch"])[["margin_mean", "rho"]].mean().reset_index()
    over = f"range over the {len(per_cfg)} (lr, batch), mean of {df.seed.nunique()} seed(s)"
    rows = [Row(f"mean DeepFool margin ‖r‖, {over}",
                f"{per_cfg.margin_mean.min():.3f} – {per_cfg.margin_mean.max():.3f}",
                f"{_ref(refs, 'margins', 'margin_mean_min')} – {_ref(refs, 'margins', 'margin_mean_max')}"),
            Row(f"rho = mean(‖r‖/‖x‖), {over}", f"{per_cfg.rho.min():.3f} – {per_cfg.rho.max():.3f}",
                f"paper (MNIST): {_ref(refs, 'margins', 'paper_rho_fc500_150_10_mnist')} FC500-150-10, "
                f"{_ref(refs, 'margins', 'paper_rho_lenet_mnist')} LeNet"),
            Row("share of examples flipped", fmt_series(df.flipped_share, 3)),
            Row(f"models at ≥ {threshold} train accuracy (the rows below compare these)",
                f"{len(fitted)} of {len(df)}")]
    if fitted.empty:
        verdict = (f"not evaluated: no model reached {threshold} train accuracy, the premise of the "
                   "comparison (train longer: margins.epochs)")
    else:
        by_lr = fitted.groupby("lr")[["margin_mean", "test_acc"]].mean()
        top_lr, best_acc_lr = by_lr.margin_mean.idxmax(), by_lr.test_acc.idxmax()
        top = fitted[fitted.lr == top_lr].groupby("batch").margin_mean.mean()
        acc_at = lambda lr: fitted[fitted.lr == lr].test_acc  # noqa: E731
        rows += [Row("learning rate with the largest mean margin",
                     f"{top_lr:g} (margins {top.min():.2f}–{top.max():.2f})",
                     f"0.05 ({_ref(refs, 'margins', 'margin_mean_lr0.05_low')}–"
                     f"{_ref(refs, 'margins', 'margin_mean_max')})"),
                 Row(f"test accuracy at lr {top_lr:g}", fmt_series(acc_at(top_lr), 3),
                     f"{_ref(refs, 'margins', 'test_acc_lr0.05_low')} (lr 0.05)")]
        if best_acc_lr != top_lr:
            rows.append(Row(f"test accuracy at lr {best_acc_lr:g} (the best)", fmt_series(acc_at(best_acc_lr), 3)))
        rows.append(Row("correlation of margin and test accuracy over the fitted models",
                        f"{fitted.margin_mean.corr(fitted.test_acc):.2f}" if len(fitted) > 2 else "n/a"))
        if top_lr == best_acc_lr:
            verdict = (f"reproduced{'' if top_lr == 0.05 else ' qualitatively'}: lr {top_lr:g} gives both the "
                       "largest margins and the best test accuracy" + ("" if top_lr == 0.05 else " (the notebook: lr 0.05)"))
        elif not _differs(acc_at(top_lr), acc_at(best_acc_lr)):
            verdict = (f"reproduced qualitatively: lr {top_lr:g} gives the largest margins, and its test accuracy "
                       f"{by_lr.test_acc[top_lr]:.3f} is within noise of the best, lr {best_acc_lr:g}'s "
                       f"{by_lr.test_acc[best_acc_lr]:.3f} (less than two standard errors apart)")
        else:
            verdict = (f"not reproduced: the largest margins come at lr {top_lr:g} but the best test accuracy "
                       f"at lr {best_acc_lr:g}")
    if len(left_out):
        verdict += "; left out, not fitting the training set: " + ", ".join(
            f"lr {lr:g} batch {b} ({int(r['size'])} model(s), train accuracy {r['mean']:.2f})"
            for (lr, b), r in left_out.iterrows())
    return Section(
        "margins", "E6 DeepFool margins",
        "Do the models that generalize better also sit further from their decision boundaries? "
        "DeepFool finds the smallest L2 perturbation that flips each of 1,000 training examples, "
        "for 16 MLPs trained to ~100% train accuracy with different lr and batch size.",
        rows, verdict + ".")


def probes(out: Outputs, refs: dict) -> Section:
    f5 = out.table("fig5.csv")
    f8 = out.table("fig8.csv")
    rows = []
    for snap, g in f5.groupby("snapshot", sort=False):
        m = g.groupby("point", sort=False).test_error
        rows.append(Row(f"figure 5, {snap}: probe test error input → logits",
                        " → ".join(f"{v:.2f}" for v in m.mean().values)))
    trained = f5[f5.snapshot == "trained"].groupby("point", sort=False).test_error.mean()
    skip = int(stage_params("probes").get("deep_mlp", {}).get("skip_layer", 64))
    for snap, g in f8.groupby("snapshot", sort=False):
        before = g[(g.depth >= 1) & (g.depth < skip)].test_error
        after = g[g.depth >= skip].test_error
        rows.append(Row(f"figure 8, {snap}: mean probe test error, layers 1–{skip - 1} / {skip}+",
                        f"{before.mean():.3f} / {after.mean():.3f}",
                        f"near chance ({_ref(refs, 'probes', 'chance_test_error')}) / improving"))
    fig5_ok = len(trained) > 1 and trained.iloc[-1] < trained.iloc[0]
    last, first = f8[f8.steps == f8.steps.max()], f8[f8.steps == f8.steps.min()]

    def before(g):
        return g[(g.depth >= 1) & (g.depth < skip)].test_error.mean()

    def after(g):
        return g[g.depth >= skip].test_error.mean()
    # Figure 8's pattern: the net learns through the skip path (the layers after it improve)
    # and ignores the layers before it (their probes do not improve).
    skip_path = after(last) < after(first) - 0.05 and before(last) > before(first) - 0.05
    near_chance = before(last) > 0.8
    parts = [f"figure 5b {'holds' if fig5_ok else 'does not hold'} (trained probe error "
             f"{'falls' if fig5_ok else 'does not fall'} from input {trained.iloc[0]:.2f} to logits {trained.iloc[-1]:.2f})",
             f"figure 8: the probes after the skip go from {after(first):.2f} to {after(last):.2f} and those "
             f"of layers 1-{skip - 1} from {before(first):.2f} to {before(last):.2f}, "
             + ("the net learns through the skip path" if skip_path else "not the skip-path pattern")
             + ("" if near_chance else " (but layers 1-63 are not near chance: random layers keep label information)")]
    n_ok = fig5_ok + skip_path
    verdict = ("reproduced: " if n_ok == 2 and near_chance else
               "reproduced qualitatively: " if n_ok else "not reproduced: ") + "; ".join(parts) + "."
    return Section(
        "probes", "E7 Linear classifier probes",
        "How linearly separable are the classes at each depth of a network (Alain & Bengio 2016)? "
        "A linear probe on the frozen activations of each layer, before and after training; and a "
        "'pathologically deep' 128-layer MLP whose input also skips to layer 64.",
        rows, verdict)


BUILDERS = {"baselines": baselines, "flatness": flatness, "gradient_loss": gradient_loss,
            "regularization": regularization, "transfer": transfer, "sweep": sweep,
            "margins": margins, "probes": probes}


def build(reports: Path, refs: dict) -> list[Section]:
    sections = []
    for stage, fn in BUILDERS.items():
        out = Outputs(reports, stage)
        s = fn(out, refs)
        s.figures = out.figures()
        s.params = stage_params(stage)
        s.wall_time_s = out.run().get("wall_time_s")
        sections.append(s)
    return sections


__all__ = ["BUILDERS", "build", "fmt"]
