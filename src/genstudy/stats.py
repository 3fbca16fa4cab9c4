"""The statistics behind every verdict of the report: summaries, comparisons of arms, trends.

A verdict is a statistical statement: the claim, the test, n, the interval, the outcome. Seeds are
the unit of replication, so n counts seeds (or pairs of seeds), never examples. scipy.stats supplies
the tests and distributions; this module only aligns the data, handles the degenerate cases (NaN,
too few seeds, zero spread); statsmodels sizes n by power. genstudy.verdicts maps the results onto
the report's labels.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower

NAN = math.nan


def fmt_p(p: float) -> str:
    """'p 0.71', 'p 0.0031', 'p <1e-4': two significant digits; an exact 0 (zero spread) is '<1e-4'."""
    if p is None or math.isnan(p):
        return "p n/a"
    return "p <1e-4" if p < 1e-4 else f"p {p:.2g}"


def _quiet(fn, *args, **kwargs):
    """scipy warns on (near-)constant input; those cases are handled here, so the warnings are noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _clean(values) -> tuple[np.ndarray, int]:
    """The finite values and how many NaN were dropped."""
    s = pd.Series(values, dtype=float)
    return s.dropna().to_numpy(), int(s.isna().sum())


@dataclass(frozen=True)
class Summary:
    """Mean of n seeds with sd (ddof 1; 0 for one seed) and the 95 % t interval (NaN below 2 seeds)."""
    mean: float
    sd: float
    n: int
    lo: float
    hi: float
    dropped: int = 0

    def fmt(self, digits: int = 4) -> str:
        """'0.8455 (sd 0.0031, 95 % CI 0.8378..0.8532, n=3)'."""
        f = lambda x: f"{x:.{digits}f}"
        ci = f"95 % CI {f(self.lo)}..{f(self.hi)}" if self.n >= 2 else "no CI"
        nan = f", {self.dropped} NaN dropped" if self.dropped else ""
        return f"{f(self.mean)} (sd {f(self.sd)}, {ci}, n={self.n}{nan})"


def summarize(values) -> Summary:
    x, dropped = _clean(values)
    n = len(x)
    if n == 0:
        return Summary(NAN, NAN, 0, NAN, NAN, dropped)
    mean, sd = float(x.mean()), float(x.std(ddof=1)) if n > 1 else 0.0
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else NAN
    return Summary(mean, sd, n, mean - half, mean + half, dropped)


@dataclass(frozen=True)
class Comparison:
    """Mean difference a - b of two arms: its t interval (from se and df, at any level) and p.

    sd is the spread per unit of n: the sd of the paired differences, or sqrt(sd_a² + sd_b²) for
    Welch (se = sd / sqrt(n per arm) with equal arms); judge() scales it to say what n is needed.
    """
    test: str
    diff: float
    se: float
    df: float
    p: float
    n: int | tuple[int, int]
    sd: float
    dropped: int = 0
    interval: str = "CI"  # "PI": the interval is a prediction interval for one more run (prediction())

    @property
    def n_min(self) -> int:
        return min(self.n) if isinstance(self.n, tuple) else self.n

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        if self.n_min < 2:
            return NAN, NAN
        half = 0.0 if self.se == 0 else stats.t.ppf(0.5 + level / 2, self.df) * self.se
        return self.diff - half, self.diff + half

    def text(self, name: str, digits: int = 4, unit: str = "seeds") -> str:
        """'a vs b: +0.0007 (95 % CI -0.0040..+0.0050, paired t over 3 seeds, p 0.71)'.

        ``unit``: what n counts, when the pairs are not seeds (e.g. '(batch, seed) pairs')."""
        f = lambda x: f"{x:+.{digits}f}"
        lo, hi = self.ci()
        ci = f"95 % {self.interval} {f(lo)}..{f(hi)}" if self.n_min >= 2 else f"no {self.interval}"
        n = " + ".join(map(str, self.n)) if isinstance(self.n, tuple) else str(self.n)
        drop = f", {self.dropped} NaN or unpaired dropped" if self.dropped else ""
        seeds = unit.rstrip("s") if n == "1" and unit.endswith("s") else unit
        return f"{name}: {f(self.diff)} ({ci}, {self.test} over {n} {seeds}{drop}, {fmt_p(self.p)})"


def _rounding(*arrays) -> float:
    """How far float rounding can move equal values: 1e-12 of their scale. Arms that are equal up to
    rounding must not look different (scipy would call a 1e-17 difference with 1e-18 spread significant)."""
    return 1e-12 * max(float(np.abs(v).max()) for v in arrays)


def _flat(test, diff, tol, df, n, dropped, interval="CI") -> Comparison:
    """Zero spread (up to rounding): the difference is certainly nonzero (p 0) or zero (p 1), the
    interval a point; scipy would give NaN and warn."""
    diff = 0.0 if abs(diff) <= tol else diff
    return Comparison(test, diff, 0.0, df, 0.0 if diff else 1.0, n, 0.0, dropped, interval)


def paired(a, b) -> Comparison:
    """Paired t-test of a - b over the seeds both arms have (Series indexed by seed; arrays pair by position).

    Raises ValueError when both arms have seeds but none in common (a mislabelled index, not a result).
    Fewer than 2 pairs gives a Comparison without interval or p, which judge() calls inconclusive.
    """
    a, b = pd.Series(a, dtype=float), pd.Series(b, dtype=float)
    for s in (a, b):
        if s.index.has_duplicates:
            raise ValueError(f"duplicate seeds {sorted(set(s.index[s.index.duplicated()]))}")
    a_ok, b_ok = a.dropna(), b.dropna()
    common = a_ok.index.intersection(b_ok.index)
    if len(common) == 0 and len(a_ok) and len(b_ok):
        raise ValueError(f"no seed in common: a has {list(a_ok.index)}, b has {list(b_ok.index)}")
    dropped = len(a.index.union(b.index)) - len(common)
    d = (a_ok[common] - b_ok[common]).to_numpy()
    n = len(d)
    diff = float(d.mean()) if n else NAN
    if n < 2:
        return Comparison("paired t", diff, NAN, NAN, NAN, n, NAN, dropped)
    sd, tol = float(d.std(ddof=1)), _rounding(a_ok[common], b_ok[common])
    if np.ptp(d) <= tol:
        return _flat("paired t", diff, tol, n - 1, n, dropped)
    p = float(_quiet(stats.ttest_rel, a_ok[common], b_ok[common]).pvalue)
    return Comparison("paired t", diff, sd / math.sqrt(n), n - 1, p, n, sd, dropped)


def welch(a, b) -> Comparison:
    """Welch's t-test of mean(a) - mean(b) for unpaired arms; df by Welch-Satterthwaite (from scipy)."""
    (x, da), (y, db) = _clean(a), _clean(b)
    n = (len(x), len(y))
    diff = float(x.mean() - y.mean()) if min(n) else NAN
    if min(n) < 2:
        return Comparison("Welch t", diff, NAN, NAN, NAN, n, NAN, da + db)
    va, vb = x.var(ddof=1), y.var(ddof=1)
    se, sd = math.sqrt(va / n[0] + vb / n[1]), math.sqrt(va + vb)
    tol = _rounding(x, y)
    if max(np.ptp(x), np.ptp(y)) <= tol:
        return _flat("Welch t", diff, tol, sum(n) - 2, n, da + db)
    res = _quiet(stats.ttest_ind, x, y, equal_var=False)
    return Comparison("Welch t", diff, se, float(res.df), float(res.pvalue), n, sd, da + db)


def versus(values, reference: float) -> Comparison:
    """One-sample t-test of mean(values) - reference (a study's seeds against a notebook's single run)."""
    x, dropped = _clean(values)
    n = len(x)
    diff = float(x.mean() - reference) if n else NAN
    if n < 2:
        return Comparison("one-sample t", diff, NAN, NAN, NAN, n, NAN, dropped)
    tol = _rounding(x, np.array([reference]))
    if np.ptp(x) <= tol:
        return _flat("one-sample t", diff, tol, n - 1, n, dropped)
    sd = float(x.std(ddof=1))
    p = float(_quiet(stats.ttest_1samp, x, reference).pvalue)
    return Comparison("one-sample t", diff, sd / math.sqrt(n), n - 1, p, n, sd, dropped)


def prediction(values, reference: float) -> Comparison:
    """Is ``reference``, one run of a notebook, a plausible single draw from our runs' distribution?

    diff = mean(values) - reference, judged against the spread of one new run around our mean:
    se = sd sqrt(1 + 1/n), df n - 1, p two-sided. Its interval is the 95 % prediction interval for
    one run, shifted by the reference (the reference lies inside the prediction interval exactly
    when the interval of diff contains 0). A single run has its own seed-to-seed spread, so a
    one-sample t against it (versus) treats a random draw as a fixed truth.
    """
    x, dropped = _clean(values)
    n = len(x)
    diff = float(x.mean() - reference) if n else NAN
    if n < 2:
        return Comparison("prediction t", diff, NAN, NAN, NAN, n, NAN, dropped, "PI")
    tol = _rounding(x, np.array([reference]))
    if np.ptp(x) <= tol:
        return _flat("prediction t", diff, tol, n - 1, n, dropped, "PI")
    sd = float(x.std(ddof=1))
    se = sd * math.sqrt(1 + 1 / n)
    p = float(2 * stats.t.sf(abs(diff) / se, n - 1))
    return Comparison("prediction t", diff, se, n - 1, p, n, sd, dropped, "PI")


def trend_over_seeds(df: pd.DataFrame, x: str, y: str, unit: str = "seed") -> Comparison:
    """A trend tested at the unit of replication: one Spearman rho of ``y`` vs ``x`` per seed (over
    its levels), then a one-sample t of those rhos against 0, so n counts seeds, not seeds x levels.

    A seed with fewer than 3 levels has no rho (dropped, and counted); one whose y is constant has
    rho 0. Pooling seeds x levels as independent points would make p far too small.
    """
    rhos = [spearman(g[x], g[y]).rho for _, g in df.groupby(unit)]
    return replace(versus(rhos, 0.0), test="t of per-seed Spearman rho")


def seeds_for_power(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8,
                    alternative: str = "two-sided", two_arms: bool = False) -> int | None:
    """How many seeds (pairs, or seeds per arm with ``two_arms``) give ``power`` to detect a true
    difference ``effect`` (> 0) when one unit's difference has spread ``sd`` (statsmodels' t-test
    power). For two arms ``sd`` is sqrt(sd_a² + sd_b²), as Comparison.sd, so each arm's sd is
    sd / sqrt 2. None when there is no effect to detect or no spread to size it from; 2 (the
    fewest a t-test needs) when 2 already give the power."""
    if not effect > 0 or not sd >= 0 or math.isnan(sd):
        return None
    if sd == 0:
        return 2
    d = effect / (sd / math.sqrt(2) if two_arms else sd)
    solver, size = (TTestIndPower(), "nobs1") if two_arms else (TTestPower(), "nobs")
    if solver.power(d, 2, alpha, alternative=alternative) >= power:
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels warns before it returns NaN for a failed solve
        n = solver.solve_power(effect_size=d, alpha=alpha, power=power, alternative=alternative,
                               **{size: None})
    n = float(np.squeeze(n))
    return None if math.isnan(n) else math.ceil(n)


@dataclass(frozen=True)
class Trend:
    """Spearman rank correlation of n (x, y) points; constant input counts as no trend (rho 0, p 1).

    The interval is Fisher's z with the Spearman variance 1.06 / (n - 3) (Fieller, Hartley and
    Pearson 1957); it needs n >= 4.
    """
    rho: float
    p: float
    n: int
    constant: bool = False
    dropped: int = 0

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        if self.n < 4 or math.isnan(self.rho):
            return NAN, NAN
        z, half = math.atanh(max(-1 + 1e-12, min(1 - 1e-12, self.rho))), stats.norm.ppf(0.5 + level / 2)
        half *= math.sqrt(1.06 / (self.n - 3))
        return math.tanh(z - half), math.tanh(z + half)

    def text(self, name: str, digits: int = 2, unit: str = "points") -> str:
        """'depth vs error: Spearman rho -0.93 (95 % CI -0.97..-0.86) over 30 points, p <1e-4'."""
        f = lambda x: f"{x:+.{digits}f}"
        lo, hi = self.ci()
        ci = "constant input: no trend" if self.constant else (
            f"95 % CI {f(lo)}..{f(hi)}" if not math.isnan(lo) else "no CI")
        drop = f" ({self.dropped} with NaN dropped)" if self.dropped else ""
        return f"{name}: Spearman rho {f(self.rho)} ({ci}) over {self.n} {unit}{drop}, {fmt_p(self.p)}"


def spearman(x, y) -> Trend:
    """Spearman's rho and p (scipy.stats.spearmanr) over the points where neither x nor y is NaN."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"x has {x.shape}, y has {y.shape}")
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y, n, dropped = x[ok], y[ok], int(ok.sum()), int((~ok).sum())
    if n >= 2 and (np.ptp(x) == 0 or np.ptp(y) == 0):
        return Trend(0.0, 1.0, n, True, dropped)
    if n < 3:  # two points are always perfectly ranked; no test
        return Trend(NAN, NAN, n, False, dropped)
    res = _quiet(stats.spearmanr, x, y)
    return Trend(float(res.statistic), float(res.pvalue), n, False, dropped)
