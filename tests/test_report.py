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


def test_fmt_series_shows_sd_and_ci_only_with_several_seeds():
    # mean 0.2, sd 0.1414, CI 0.2 ± t(0.975, 1) * 0.1414 / sqrt 2 = 0.2 ± 1.2706
    assert report.fmt_series(pd.Series([0.1, 0.3])) == "0.2000 ± 0.1414 [-1.0706, 1.4706] (n=2)"
    assert report.fmt_series(pd.Series([0.5])) == "0.5000 (n=1)"
    assert report.fmt_series(pd.Series([float("nan")])) == "n/a"


def write_tables(tmp_path: Path, stage: str, **tables: pd.DataFrame) -> Outputs:
    d = tmp_path / stage
    d.mkdir(parents=True)
    for name, df in tables.items():
        df.to_csv(d / f"{name}.csv", index=False)
    return Outputs(tmp_path, stage)


def test_pages_escape_text_and_link_figures_relatively():
    sec = Section("demo", "Demo <b>", "Why?", [Row("a < b", "1.0", "2.0")], "reproduced:\n- a claim: fine\nA note.",
                  figures=[Path("demo/figures/x.png")], params={"lr": 0.1}, wall_time_s=12.0)
    summary = {"profile": "full", "stages": [("demo", 12.0, "150 GFLOP/s, load 0.1", "cpu", "Xeon (AVX512)", "abc")], "total_s": 12.0,
               "versions": {"torch": "2"}, "overrides": [("demo.lr", 0.01, 0.1)]}
    page = render.render_html([sec], summary)
    assert "Demo &lt;b&gt;" in page and "a &lt; b" in page
    assert "src='demo/figures/x.png'" in page and "demo.lr" in page
    assert "<b>Verdict: reproduced</b>" in page and "<li>a claim: fine</li>" in page
    md = render.render_markdown([sec], summary)
    assert "![x](demo/figures/x.png)" in md and "| demo.lr | 0.01 | 0.1 |" in md
    assert "**Verdict: reproduced**\n\n- a claim: fine\n\nA note." in md
    smoke = render.render_markdown([sec], {**summary, "profile": "smoke"})
    assert "profile smoke: its sizes test the code, not the claims" in smoke


def test_the_run_summary_lists_what_each_profile_changed():
    runs = {"a": {"profile_overrides": {"a.lr": {"section": 0.1, "profile": 0.5},
                                        "a.seeds": {"section": [0], "profile": [0]}}},
            "b": {}}
    assert render.profile_overrides(runs) == [("a.lr", 0.1, 0.5)]  # a value the profile kept is no change


@pytest.mark.parametrize("stage", experiments.NAMES)
def test_every_stage_has_reference_numbers_or_expectations(stage):
    assert stage in REFS, f"references.yaml has no section {stage}"
