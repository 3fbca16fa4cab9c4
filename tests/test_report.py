"""The report: numbers formatted honestly, verdicts that follow the data, pages that render offline."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from genstudy import experiments, render, report
from genstudy.report import Outputs, Row, Section

REPO = Path(__file__).resolve().parents[1]
REFS = yaml.safe_load((REPO / "references.yaml").read_text())


def test_fmt_shows_spread_only_with_several_seeds():
    assert report.fmt(0.5, 0.1, 3) == "0.5000 ± 0.1000 (n=3)"
    assert report.fmt(0.5, 0.0, 1) == "0.5000 (n=1)"
    assert report.fmt(float("nan")) == "n/a"
    assert report.fmt_series(pd.Series([0.1, 0.3])) == "0.2000 ± 0.1414 (n=2)"


def write_tables(tmp_path: Path, stage: str, **tables: pd.DataFrame) -> Outputs:
    d = tmp_path / stage
    d.mkdir(parents=True)
    for name, df in tables.items():
        df.to_csv(d / f"{name}.csv", index=False)
    return Outputs(tmp_path, stage)


def transfer_table(scratch, transferred):
    rows = [{"arm": "model_a", "seed": s, "task": "A", "test_acc": 0.85} for s in range(len(scratch))]
    rows += [{"arm": "scratch", "seed": s, "task": "B", "test_acc": a} for s, a in enumerate(scratch)]
    rows += [{"arm": "transferred", "seed": s, "task": "B", "test_acc": a} for s, a in enumerate(transferred)]
    return pd.DataFrame(rows)


def test_transfer_verdict_follows_the_seeds(tmp_path):
    out = write_tables(tmp_path / "a", "transfer", results=transfer_table([0.6, 0.7, 0.9], [0.95, 0.9, 0.8]))
    s = experiments.load("transfer").section(out, REFS)
    assert s.verdict.startswith("reproduced qualitatively: transfer helps on 2 of 3 seeds")
    out = write_tables(tmp_path / "b", "transfer", results=transfer_table([0.9, 0.9, 0.9], [0.8, 0.95, 0.7]))
    assert experiments.load("transfer").section(out, REFS).verdict.startswith("not reproduced: transfer helps on only 1 of 3")


def test_gradient_loss_verdict_compares_the_accuracy_lost_to_noise(tmp_path):
    rows = []
    for seed in range(3):
        for arm, clean, noisy in (("gradient_loss", 0.90, 0.88 + 0.001 * seed), ("cross_entropy", 0.91, 0.80)):
            rows += [{"arm": arm, "seed": seed, "sigma": 0.0, "test_acc": clean, "time_per_epoch": 2.0 if arm == "gradient_loss" else 1.0},
                     {"arm": arm, "seed": seed, "sigma": 0.1, "test_acc": noisy, "time_per_epoch": 2.0 if arm == "gradient_loss" else 1.0}]
    s = experiments.load("gradient_loss").section(write_tables(tmp_path, "gradient_loss", results=pd.DataFrame(rows)), REFS)
    assert s.verdict.startswith("reproduced qualitatively")
    assert "an epoch cost 2.0x" in s.verdict
    assert any(r.ours.startswith("0.9000") and r.reported == "0.9033" for r in s.rows)


def margins_outputs(tmp_path, models, threshold=0.99):
    """models: (lr, batch, seed, margin, test_acc, train_acc) per row."""
    df = pd.DataFrame([{"lr": lr, "batch": b, "seed": s, "margin_mean": m, "rho": m / 10,
                        "flipped_share": 1.0, "test_acc": acc, "train_acc": tr, "fitted": tr >= threshold}
                       for lr, b, s, m, acc, tr in models])
    out = write_tables(tmp_path, "margins", results=df)
    (out.dir / "metrics.json").write_text(f'{{"fitted_train_acc": {threshold}}}')
    return out


def test_margins_verdict_compares_only_models_that_fit_their_training_set(tmp_path):
    models = [(lr, 32, s, m, acc, 1.0) for s in range(3)
              for lr, m, acc in ((0.01, 0.6, 0.78), (0.05, 0.9, 0.79 + 0.001 * s))]
    # lr 0.05 at batch 16 does not train: a huge margin on a broken model, low accuracy
    models += [(0.05, 16, s, 1.5, 0.3, 0.33) for s in range(3)]
    s = experiments.load("margins").section(margins_outputs(tmp_path / "a", models), REFS)
    assert s.verdict.startswith("reproduced: lr 0.05 gives both the largest margins and the best test accuracy")
    assert "left out, not fitting the training set: lr 0.05 batch 16 (3 model(s), train accuracy 0.33)" in s.verdict
    assert any(r.quantity.startswith("models at ≥ 0.99") and r.ours == "6 of 9" for r in s.rows)
    # the best accuracy at another lr, clearly apart: not reproduced
    models = [(lr, 32, s, m, acc + 0.001 * s, 1.0) for s in range(3)
              for lr, m, acc in ((0.01, 0.6, 0.80), (0.05, 0.9, 0.70))]
    assert experiments.load("margins").section(margins_outputs(tmp_path / "b", models), REFS).verdict.startswith(
        "not reproduced: the largest margins come at lr 0.05 but the best test accuracy at lr 0.01")
    # the best accuracy at another lr but within the spread over seeds: qualitatively
    models = [(lr, 32, s, m, acc + 0.01 * s, 1.0) for s in range(3)
              for lr, m, acc in ((0.01, 0.6, 0.795), (0.05, 0.9, 0.79))]
    assert experiments.load("margins").section(margins_outputs(tmp_path / "d", models), REFS).verdict.startswith(
        "reproduced qualitatively: lr 0.05 gives the largest margins, and its test accuracy 0.800 is "
        "within noise of the best, lr 0.01's 0.805")
    # no model fits: nothing to compare, said so
    s = experiments.load("margins").section(margins_outputs(tmp_path / "c", [(0.01, 32, 0, 0.5, 0.5, 0.6)]), REFS)
    assert s.verdict.startswith("not evaluated: no model reached 0.99 train accuracy")


def test_pages_escape_text_and_link_figures_relatively():
    sec = Section("demo", "Demo <b>", "Why?", [Row("a < b", "1.0", "2.0")], "reproduced: fine",
                  figures=[Path("demo/figures/x.png")], params={"lr": 0.1}, wall_time_s=12.0)
    summary = {"commit": "abc", "profile": "full", "stages": [("demo", 12.0, "cpu")], "total_s": 12.0,
               "versions": {"torch": "2"}, "params_diff": [("demo.lr", 0.01, 0.1)]}
    page = render.render_html([sec], summary)
    assert "Demo &lt;b&gt;" in page and "a &lt; b" in page
    assert "src='demo/figures/x.png'" in page and "demo.lr" in page
    md = render.render_markdown([sec], summary)
    assert "![x](demo/figures/x.png)" in md and "| demo.lr | 0.01 | 0.1 |" in md


def test_params_diff_lists_what_a_stage_ran_with_against_the_committed_defaults():
    committed = {"a": {"lr": 0.1, "seeds": [0, 1], "net": {"width": 8}}, "b": {"x": 1}}
    assert render.params_diff(committed, committed) == []
    used = {"a": {"lr": 0.5, "seeds": [0, 1], "net": {"width": 16}}, "c": {"y": 2}}
    assert render.params_diff(used, committed) == [("a.lr", 0.1, 0.5), ("a.net.width", 8, 16)]


@pytest.mark.parametrize("stage", experiments.NAMES)
def test_every_stage_has_reference_numbers_or_expectations(stage):
    assert stage in REFS, f"references.yaml has no section {stage}"
