"""genstudy.stats against answers worked out by hand, and genstudy.verdicts' labels on data built to give each."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.power import TTestIndPower, TTestPower

from genstudy import stats, verdicts
from genstudy.stats import fmt_p, paired, spearman, summarize, welch
from genstudy.verdicts import (CONTRADICTED, INCONCLUSIVE, NOT_REPRODUCED, PARTLY, REPRODUCED, all_of, draw,
                               effect, equal, family, judge, noninferior, not_a_result, overall)


@pytest.fixture(autouse=True)
def no_warnings():
    """Degenerate cases are handled in the module: no scipy or numpy warning may leak."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def t975_df2():
    """The 97.5 % quantile of t with 2 df in closed form: (2p - 1) / sqrt(2 p (1 - p))."""
    return 0.95 / math.sqrt(2 * 0.975 * 0.025)


def test_summarize_by_hand_and_nan_dropped():
    s = summarize([1.0, np.nan, 2.0, 4.0])
    sd = math.sqrt(7 / 3)  # deviations -4/3, -1/3, 5/3
    assert (s.n, s.dropped) == (3, 1)
    assert s.mean == pytest.approx(7 / 3) and s.sd == pytest.approx(sd)
    half = t975_df2() * sd / math.sqrt(3)
    assert (s.lo, s.hi) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert s.fmt(2) == f"2.33 (sd 1.53, 95 % CI {7 / 3 - half:.2f}..{7 / 3 + half:.2f}, n=3, 1 NaN dropped)"


def test_summarize_one_and_no_value():
    one = summarize(pd.Series([0.5]))
    assert (one.mean, one.sd, one.n) == (0.5, 0.0, 1) and math.isnan(one.lo) and math.isnan(one.hi)
    assert "no CI" in one.fmt()
    assert summarize([np.nan]).n == 0


def test_paired_by_hand_aligns_on_common_seeds():
    # seeds out of order, seed 9 only in a, seed 3 NaN in b: pairs are seeds 0, 1, 2
    a = pd.Series({2: 4.0, 0: 1.0, 1: 2.0, 9: 7.0, 3: 1.0})
    b = pd.Series({0: 0.5, 1: 1.0, 2: 2.0, 3: np.nan})
    c = paired(a, b)
    # differences 0.5, 1, 2: mean 7/6, variance 7/12, t = (7/6) / sqrt(7/36) = sqrt(7)
    assert (c.n, c.dropped, c.test) == (3, 2, "paired t")
    assert c.diff == pytest.approx(7 / 6) and c.sd == pytest.approx(math.sqrt(7 / 12))
    assert c.diff / c.se == pytest.approx(math.sqrt(7))
    assert c.p == pytest.approx(1 - math.sqrt(7) / 3)  # two-sided tail of t(2): 1 - t / sqrt(2 + t^2)
    half = t975_df2() * math.sqrt(7 / 36)
    assert c.ci() == pytest.approx((7 / 6 - half, 7 / 6 + half))
    assert c.ci(0.5)[1] - c.ci(0.5)[0] < c.ci()[1] - c.ci()[0]


def test_paired_zero_spread_and_too_few():
    up = paired([1.0, 2.0, 3.0], [0.9, 1.9, 2.9])
    assert up.p == 0.0 and up.ci()[0] == up.ci()[1] == pytest.approx(0.1)
    same = paired([1.0, 2.0], [1.0, 2.0])
    assert same.p == 1.0 and same.ci() == (0.0, 0.0)
    rounded = paired([0.1 + 0.2, 0.7 + 0.1, 0.3], [0.3, 0.8, 0.3])  # equal but for float rounding
    assert rounded.diff == 0.0 and rounded.p == 1.0
    assert welch([0.1 + 0.2, 0.3, 0.3], [0.3, 0.3]).p == 1.0
    few = paired(pd.Series({0: 1.0, 1: 2.0}), pd.Series({1: 1.0, 5: 3.0}))
    assert few.n == 1 and math.isnan(few.p) and math.isnan(few.ci()[0])
    with pytest.raises(ValueError, match=r"no seed in common.*\[0, 1\].*\['0', '1'\]"):
        paired(pd.Series({0: 1.0, 1: 2.0}), pd.Series({"0": 1.0, "1": 2.0}))
    with pytest.raises(ValueError, match="duplicate seeds"):
        paired(pd.Series([1.0, 2.0], index=[0, 0]), pd.Series([1.0, 2.0], index=[0, 1]))


def test_welch_by_hand_and_scipy():
    c = welch([1, 2, 3, 4, np.nan], [2, 4, 6])
    va, vb = 5 / 3, 4.0
    se = math.sqrt(va / 4 + vb / 3)
    df = (va / 4 + vb / 3) ** 2 / ((va / 4) ** 2 / 3 + (vb / 3) ** 2 / 2)
    assert (c.n, c.dropped, c.test) == ((4, 3), 1, "Welch t")
    assert (c.diff, c.se, c.df) == pytest.approx((-1.5, se, df))
    assert c.df == pytest.approx(3.2347188264)
    assert c.p == pytest.approx(0.33382370007750106)  # scipy 1.17 ttest_ind(equal_var=False)
    assert c.ci() == pytest.approx((-5.542327954923024, 2.5423279549230244))
    assert math.isnan(welch([1.0], [1.0, 2.0]).p)
    flat = welch([1.0, 1.0], [1.0, 1.0, 1.0])
    assert flat.p == 1.0 and flat.ci() == (0.0, 0.0)


def test_spearman_by_hand_nan_and_constant():
    t = spearman([1, 2, 3, 4, 5, np.nan], [2, 1, 4, 3, 5, 0])
    assert (t.n, t.dropped) == (5, 1)
    assert t.rho == pytest.approx(1 - 6 * 4 / (5 * 24))  # rank differences -1, 1, -1, 1, 0
    assert t.p == pytest.approx(sps.spearmanr([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]).pvalue)
    lo, hi = t.ci()
    half = 1.959964 * math.sqrt(1.06 / 2)
    assert (lo, hi) == pytest.approx((math.tanh(math.atanh(0.8) - half), math.tanh(math.atanh(0.8) + half)))
    flat = spearman([1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5])
    assert (flat.rho, flat.p, flat.constant) == (0.0, 1.0, True)
    assert "constant input: no trend" in flat.text("y vs x")
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])


def test_fmt_p():
    assert [fmt_p(p) for p in (0.7104, 0.003, 0.0471, 3e-5, 0.0, 1.0, np.nan)] == [
        "p 0.71", "p 0.003", "p 0.047", "p <1e-4", "p <1e-4", "p 1", "p n/a"]


def test_comparison_and_trend_text():
    c = paired(pd.Series([0.8, 0.9, 0.85]), pd.Series([0.79, 0.905, 0.84]))
    lo, hi = c.ci()
    s = c.text("gradient loss vs baseline under sigma 0.1")
    assert s == (f"gradient loss vs baseline under sigma 0.1: +0.0050 (95 % CI {lo:+.4f}..{hi:+.4f}, "
                 f"paired t over 3 seeds, {fmt_p(c.p)})")
    assert "Welch t over 4 + 3 seeds, 1 NaN or unpaired dropped" in welch([1, 2, 3, 4, np.nan], [2, 4, 6]).text("x")
    t = spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])  # rho 0.8, interval tanh(atanh 0.8 -+ 1.96 sqrt(1.06 / 2))
    assert t.text("probe error vs depth", unit="(depth, seed) points") == (
        "probe error vs depth: Spearman rho +0.80 (95 % CI -0.32..+0.99) over 5 (depth, seed) points, p 0.1")
    assert spearman(np.arange(30), -np.arange(30.0)).text("e").endswith("over 30 points, p <1e-4")


def arms(effect, noise, n, seed=0):
    rng = np.random.default_rng(seed)
    base = pd.Series(rng.normal(0.8, 0.05, n))
    return base + effect + rng.normal(0, noise, n), base


def test_effect_reproduced_and_contradicted():
    a, b = arms(0.01, 0.001, 5)
    j = judge(effect(paired(a, b), +1, 0.005))
    assert j.label == REPRODUCED and j.n_claimed is None and "claimed side of 0" in j.text
    k = judge(effect(paired(b, a), +1, 0.005))
    assert k.label == CONTRADICTED and "against the claim" in k.text
    assert judge(effect(paired(b, a), -1, 0.005)).label == REPRODUCED
    assert judge(effect(welch(a + 0.05, b), +1, 0.01)).label == REPRODUCED


def test_effect_not_reproduced_when_the_claimed_effect_is_ruled_out():
    a, b = arms(0.0, 0.001, 20)
    j = judge(effect(paired(a, b), +1, 0.01))
    assert j.label == NOT_REPRODUCED and "excludes +0.01" in j.text
    assert judge(effect(paired([1.0, 2.0], [1.0, 2.0]), -1, 0.01)).label == NOT_REPRODUCED  # zero spread


def test_inconclusive_gives_the_seeds_for_80_percent_power_from_statsmodels():
    # the case: an observed +0.050 with sd 0.022 over 3 pairs; about 4 pairs give 80 % power
    d = np.array([0.030, 0.075, 0.045])  # mean 0.05, sd 0.023
    c = paired(0.8 + d, np.full(3, 0.8))
    j = judge(effect(c, +1, 0.01))
    assert j.label == INCONCLUSIVE and j.n_observed == 4
    power = lambda n, eff: TTestPower().power(eff / c.sd, n, 0.05)  # noqa: E731
    assert power(j.n_claimed, 0.01) >= 0.8 > power(j.n_claimed - 1, 0.01)  # the smallest such n
    assert f"about {j.n_claimed} seeds give 80 % power for the claimed +0.01 (4 at the observed" in j.text
    w = judge(effect(welch(0.8 + d, [0.80, 0.84, 0.76]), +1, 0.01))
    assert w.label == INCONCLUSIVE and "seeds per arm" in w.text
    one = judge(effect(paired([1.0], [0.0]), +1, 0.01))
    assert one.label == INCONCLUSIVE and one.n_claimed is None
    with pytest.raises(ValueError):
        effect(c, 0, 0.01)
    with pytest.raises(ValueError):
        effect(c, 1, 0.0)


def test_seeds_for_power_edges():
    assert stats.seeds_for_power(0.0, 0.1) is None and stats.seeds_for_power(0.1, math.nan) is None
    assert stats.seeds_for_power(0.1, 0.0) == 2 and stats.seeds_for_power(10.0, 0.01) == 2  # 2 already suffice
    # two arms: sd is Comparison.sd = sqrt(sd_a² + sd_b²), so each arm's sd is sd / sqrt 2
    want = math.ceil(TTestIndPower().solve_power(0.01 / (0.02 / math.sqrt(2)), alpha=0.05, power=0.8))
    assert stats.seeds_for_power(0.01, 0.02, two_arms=True) == want


def test_holm_corrects_the_family_and_can_change_a_label():
    """A p of 0.03 is reproduced alone, but not as one of three tests (Holm: 0.03 x 2 or more)."""
    c = stats.versus([0.02, 0.05, 0.08, 0.01, 0.06], 0.0)  # p about 0.03
    assert 0.01 < c.p < 0.05
    alone = judge(effect(c, +1, 0.5))
    strong = stats.versus([1.0, 1.1, 0.9, 1.05, 0.95], 0.0)
    in_family = dict(family([("weak", effect(c, +1, 0.5)), ("strong", effect(strong, +1, 0.5)),
                             ("other", effect(stats.versus([0.1, -0.2, 0.3, -0.1, 0.0], 0.0), +1, 0.5))]))
    assert alone.label == REPRODUCED and in_family["weak"].label != REPRODUCED
    assert in_family["weak"].p == pytest.approx(c.p)
    assert in_family["weak"].p_adj == pytest.approx(min(1.0, 2 * c.p))  # second smallest of 3: x 2
    assert in_family["strong"].label == REPRODUCED
    assert "Holm-adjusted" in in_family["weak"].text and "over 3 tests" in in_family["weak"].text
    # a claim without a test (one seed) is left out of the count
    fam = dict(family([("one", effect(paired([1.0], [0.0]), +1, 0.1)), ("weak", effect(c, +1, 0.5))]))
    assert fam["one"].label == INCONCLUSIVE and fam["weak"].label == REPRODUCED and "over 1 test)" in fam["weak"].text


def test_judgement_line():
    a, b = arms(0.0, 0.001, 20)
    j = judge(effect(paired(a, b), +1, 0.01))
    assert j.line("gradient vs baseline").startswith("gradient vs baseline: ")
    assert j.line("g").endswith("seeds, " + fmt_p(j.result.p) + "): not reproduced (the 95 % CI excludes +0.01; "
                                f"t-test {fmt_p(j.p)}, Holm-adjusted {fmt_p(j.p_adj)} over 1 test)")


def test_trend_over_seeds_counts_seeds_not_points():
    """Pooling seeds x levels would call a trend carried by a between-seed offset significant; the
    per-seed rhos do not."""
    rows = []
    for seed, (offset, sign) in enumerate([(0.0, 1), (1.0, -1), (2.0, 1), (3.0, -1)]):
        for level in range(5):  # within a seed the trend alternates in sign between seeds
            rows.append({"seed": seed, "x": level + 10 * seed, "y": offset + sign * 0.01 * level})
    df = pd.DataFrame(rows)
    pooled = spearman(df.x, df.y)
    assert pooled.p < 0.05 and pooled.rho > 0.5  # 20 pooled points: 'reproduced'
    c = stats.trend_over_seeds(df, "x", "y")
    assert c.n == 4 and c.diff == pytest.approx(0.0) and c.test == "t of per-seed Spearman rho"
    assert judge(effect(c, +1, 0.5)).label != REPRODUCED
    up = pd.DataFrame([{"seed": s, "x": lv, "y": lv + 0.1 * s + 0.01 * ((lv * s) % 2)} for s in range(3) for lv in range(5)])
    assert judge(effect(stats.trend_over_seeds(up, "x", "y"), +1, 0.5)).label == REPRODUCED
    few = pd.DataFrame([{"seed": s, "x": lv, "y": lv} for s in range(3) for lv in range(2)])  # 2 levels: no rho
    assert stats.trend_over_seeds(few, "x", "y").n == 0


def test_prediction_interval_treats_a_single_run_as_one_draw():
    """The issue's case: our 3 seeds 0.9149 +- 0.0036; the notebook's 0.907 lies inside the 95 %
    prediction interval for one run (0.897-0.933), though a one-sample t against it is significant-ish."""
    ours = [0.9108, 0.9163, 0.9176]
    c = stats.prediction(ours, 0.907)
    lo, hi = c.ci()
    sd = np.std(ours, ddof=1)
    half = sps.t.ppf(0.975, 2) * sd * math.sqrt(1 + 1 / 3)
    assert (lo, hi) == pytest.approx((np.mean(ours) - 0.907 - half, np.mean(ours) - 0.907 + half))
    assert judge(draw(c)).label == REPRODUCED and "95 % PI" in judge(draw(c)).line("x")
    assert judge(draw(stats.prediction(ours, 0.85))).label == NOT_REPRODUCED
    assert judge(draw(stats.prediction([0.9], 0.9))).label == INCONCLUSIVE
    with pytest.raises(ValueError, match="prediction"):
        draw(stats.versus(ours, 0.907))


def test_noninferiority_labels():
    base = np.array([0.87, 0.88, 0.875, 0.872])
    same = noninferior(paired(base + [0.001, -0.001, 0.0005, 0.0], base), +1, 0.01)
    assert judge(same).label == REPRODUCED and "not worse than -0.01" in judge(same).text
    worse = noninferior(paired(base - 0.08 + [0.001, -0.001, 0.002, 0.0], base), +1, 0.01)
    assert judge(worse).label == NOT_REPRODUCED
    noisy = noninferior(paired(base + [0.02, -0.03, 0.01, -0.01], base), +1, 0.01)
    j = judge(noisy)
    assert j.label == INCONCLUSIVE and j.n_claimed is not None
    assert judge(noninferior(paired(base, base), +1, 0.01)).label == REPRODUCED  # zero spread, no loss


def test_all_of():
    R, N, C, I = REPRODUCED, NOT_REPRODUCED, CONTRADICTED, INCONCLUSIVE
    assert all_of([R, R]) == R and all_of([R, I]) == I and all_of([I, N]) == N and all_of([N, C]) == C


def test_overall_and_not_a_result():
    R, N, C, I = REPRODUCED, NOT_REPRODUCED, CONTRADICTED, INCONCLUSIVE
    cases = {(R, R): R, (R, N): PARTLY, (R, C): PARTLY, (PARTLY, I): PARTLY, (N, C): C, (I, C): C,
             (I, I): I, (N, I): N, (N, N): N}
    for labels, want in cases.items():
        assert overall([(f"part {i}", label) for i, label in enumerate(labels)]) == want, labels
    with pytest.raises(ValueError):
        overall([])
    with pytest.raises(ValueError):
        overall([("a", not_a_result("smoke"))])
    assert not_a_result("quick") == "not a result: quick"
    assert set(verdicts.LABELS) == {R, PARTLY, N, C, I}


def test_versus_a_reference_value_and_the_equivalence_labels():
    close = stats.versus([0.905, 0.907, 0.909, 0.906], 0.907)  # mean 0.90675, tiny spread
    assert close.test == "one-sample t" and close.n == 4
    assert close.diff == pytest.approx(-0.00025)
    lo, hi = close.ci()
    t = sps.t.ppf(0.975, 3) * np.std([0.905, 0.907, 0.909, 0.906], ddof=1) / 2
    assert (lo, hi) == pytest.approx((-0.00025 - t, -0.00025 + t))
    j = judge(equal(close, 0.01))
    assert j.label == REPRODUCED and "TOST" in j.text
    # TOST's p: the larger of the two one-sided p against -0.01 and +0.01
    se = close.se
    assert j.p == pytest.approx(max(sps.t.sf((close.diff + 0.01) / se, 3), sps.t.cdf((close.diff - 0.01) / se, 3)))
    far = stats.versus([0.87, 0.871, 0.869], 0.907)
    assert judge(equal(far, 0.01)).label == NOT_REPRODUCED
    wide = judge(equal(stats.versus([0.85, 0.95, 0.90], 0.907), 0.01))
    assert wide.label == INCONCLUSIVE and wide.n_claimed > 3
    assert judge(equal(stats.versus([0.9], 0.907), 0.01)).label == INCONCLUSIVE
    with pytest.raises(ValueError, match="margin must be > 0"):
        equal(close, 0)
