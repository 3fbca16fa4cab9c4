"""The statistics behind every verdict of the report: summaries, comparisons of arms, trends, labels.

A verdict is a statistical statement: the claim, the test, n, the interval, the outcome. Seeds are
the unit of replication, so n counts seeds (or pairs of seeds), never examples. scipy.stats supplies
the tests and distributions; this module only aligns the data, handles the degenerate cases (NaN,
too few seeds, zero spread) and maps intervals onto five labels that mean the same thing everywhere.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

REPRODUCED = "reproduced"            # the claim holds and the test supports it
PARTLY = "partly reproduced"         # some parts hold; the caller names them
NOT_REPRODUCED = "not reproduced"    # no effect, and the data rule out an effect of the claimed size
CONTRADICTED = "contradicted"        # the test supports the opposite
INCONCLUSIVE = "inconclusive"        # n too small to tell; the judgement says what n would settle it
LABELS = (REPRODUCED, PARTLY, NOT_REPRODUCED, CONTRADICTED, INCONCLUSIVE)
NAN = math.nan


def not_a_result(profile: str) -> str:
    """What the smoke and quick profiles print instead of a label: their sizes only test the code."""
    return f"not a result: {profile}"


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
        ci = f"95 % CI {f(lo)}..{f(hi)}" if self.n_min >= 2 else "no CI"
        n = " + ".join(map(str, self.n)) if isinstance(self.n, tuple) else str(self.n)
        drop = f", {self.dropped} NaN or unpaired dropped" if self.dropped else ""
        seeds = unit.rstrip("s") if n == "1" and unit.endswith("s") else unit
        return f"{name}: {f(self.diff)} ({ci}, {self.test} over {n} {seeds}{drop}, {fmt_p(self.p)})"


def _rounding(*arrays) -> float:
    """How far float rounding can move equal values: 1e-12 of their scale. Arms that are equal up to
    rounding must not look different (scipy would call a 1e-17 difference with 1e-18 spread significant)."""
    return 1e-12 * max(float(np.abs(v).max()) for v in arrays)


def _flat(test, diff, tol, df, n, dropped) -> Comparison:
    """Zero spread (up to rounding): the difference is certainly nonzero (p 0) or zero (p 1), the
    interval a point; scipy would give NaN and warn."""
    diff = 0.0 if abs(diff) <= tol else diff
    return Comparison(test, diff, 0.0, df, 0.0 if diff else 1.0, n, 0.0, dropped)


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


@dataclass(frozen=True)
class Judgement:
    """A label for one result, why, and (when inconclusive) the n that would settle it."""
    label: str
    result: Comparison | Trend
    n_needed: int | None = None
    why: str = ""

    @property
    def comparison(self) -> Comparison | Trend:
        return self.result

    @property
    def text(self) -> str:
        """'not reproduced (the 95 % CI contains 0 and excludes +0.0100)'."""
        return f"{self.label} ({self.why})" if self.why else self.label

    def line(self, name: str, **fmt) -> str:
        """The whole verdict: the result's numbers, then the label sentence."""
        return f"{self.result.text(name, **fmt)}: {self.text}"


def _n_settling(sd: float, width: float, alpha: float, n: int) -> int:
    """Smallest m > n at which the t interval 2 t(1-alpha/2, m-1) sd / sqrt(m) is narrower than width."""
    m = max(n + 1, math.ceil((2 * stats.norm.ppf(1 - alpha / 2) * sd / width) ** 2))  # z <= t: a lower bound
    while 2 * stats.t.ppf(1 - alpha / 2, m - 1) * sd / math.sqrt(m) >= width:
        m += 1
    return m


def judge(c: Comparison, expect: int, min_effect: float, alpha: float = 0.05) -> Judgement:
    """Judge the claim 'a - b has the sign expect (+1 or -1)' by the (1 - alpha) interval of the difference.

    reproduced: the interval lies on the expected side of 0; contradicted: on the other side;
    not reproduced: it contains 0 but excludes an effect of min_effect (> 0) in the expected
    direction; inconclusive otherwise, or with fewer than 2 seeds (pairs, or seeds in an arm).
    n_needed (inconclusive only) is the smallest n (pairs, or seeds per arm for Welch) at which,
    with the observed sd, the interval is narrower than min_effect: it can then no longer contain
    both 0 and min_effect, so any outcome is decisive. This asks more than 80 % power to detect
    min_effect (about twice the n) because it must also settle 'no effect'. It uses df n - 1
    (for Welch the lower bound of the df with n per arm, so conservative); None below 2 seeds.
    """
    if expect not in (1, -1) or not min_effect > 0:
        raise ValueError(f"expect must be +1 or -1 (got {expect}) and min_effect > 0 (got {min_effect})")
    if c.n_min < 2:
        return Judgement(INCONCLUSIVE, c, None, "fewer than 2 seeds: no spread to test against")
    lo, hi = c.ci(1 - alpha)
    near, far = sorted((expect * lo, expect * hi))
    ci, side = f"the {100 * (1 - alpha):g} % CI", "above" if expect > 0 else "below"
    other = "below" if expect > 0 else "above"
    if near > 0:
        return Judgement(REPRODUCED, c, None, f"{ci} lies {side} 0")
    if far < 0:
        return Judgement(CONTRADICTED, c, None, f"{ci} lies {other} 0, against the claim")
    effect = f"{expect * min_effect:+g}"
    if far < min_effect:
        return Judgement(NOT_REPRODUCED, c, None, f"{ci} contains 0 and excludes {effect}")
    n = _n_settling(c.sd, min_effect, alpha, c.n_min)
    per = " per arm" if isinstance(c.n, tuple) else ""
    return Judgement(INCONCLUSIVE, c, n, f"{ci} contains 0 and {effect}; about {n} seeds{per} would settle it")


def judge_equal(c: Comparison, margin: float, alpha: float = 0.05) -> Judgement:
    """Judge the claim 'the difference is within ±margin' (two arms alike, or our mean at a notebook's).

    reproduced: the (1 - alpha) interval lies inside ±margin; not reproduced: it lies wholly outside
    (the data rule the claim out); inconclusive otherwise, with the n at which the interval would be
    narrower than margin (so it can no longer straddle both a value inside and one outside the band).
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0 (got {margin})")
    if c.n_min < 2:
        return Judgement(INCONCLUSIVE, c, None, "fewer than 2 seeds: no spread to test against")
    lo, hi = c.ci(1 - alpha)
    ci, band = f"the {100 * (1 - alpha):g} % CI", f"±{margin:g}"
    if -margin <= lo and hi <= margin:
        return Judgement(REPRODUCED, c, None, f"{ci} lies within {band}")
    if hi < -margin or lo > margin:
        return Judgement(NOT_REPRODUCED, c, None, f"{ci} lies outside {band}")
    n = _n_settling(c.sd, margin, alpha, c.n_min)
    per = " per arm" if isinstance(c.n, tuple) else ""
    return Judgement(INCONCLUSIVE, c, n, f"{ci} straddles {band}; about {n} seeds{per} would settle it")


def judge_trend(t: Trend, expect: int, alpha: float = 0.05, min_rho: float = 0.5) -> Judgement:
    """Judge the claim 'rho has the sign expect' by Spearman's test and the interval of rho.

    reproduced / contradicted: p < alpha with rho of the expected / opposite sign. Otherwise
    not reproduced when the (1 - alpha) interval of rho excludes min_rho in the expected direction
    (a trend of that strength would have shown), else inconclusive. n_needed is the smallest n at
    which the Fisher-z interval (variance 1.06 / (n - 3)) is narrower than atanh(min_rho), so it
    cannot contain both 0 and min_rho: n > 3 + 1.06 (2 z(1-alpha/2) / atanh(min_rho))², 57 for 0.5;
    at least one more than the current n.
    """
    if expect not in (1, -1) or not 0 < min_rho < 1:
        raise ValueError(f"expect must be +1 or -1 (got {expect}) and 0 < min_rho < 1 (got {min_rho})")
    if t.p < alpha and t.rho * expect > 0:
        return Judgement(REPRODUCED, t, None, f"p < {alpha:g} with rho of the expected sign")
    if t.p < alpha and t.rho * expect < 0:
        return Judgement(CONTRADICTED, t, None, f"p < {alpha:g} with rho of the opposite sign")
    far = max(expect * v for v in t.ci(1 - alpha))  # NaN (too few points) compares False below
    bound = f"{expect * min_rho:+g}"
    if far < min_rho:
        return Judgement(NOT_REPRODUCED, t, None, f"the {100 * (1 - alpha):g} % CI of rho excludes {bound}")
    z = 2 * stats.norm.ppf(1 - alpha / 2) / math.atanh(min_rho)
    n = max(t.n + 1, math.floor(3 + 1.06 * z * z) + 1)
    return Judgement(INCONCLUSIVE, t, n, f"cannot tell 0 from {bound}; about {n} points would settle it")


def overall(parts: list[tuple[str, str]]) -> str:
    """One label for a claim made of named parts, each (name, label); the caller names the parts.

    All reproduced -> reproduced; some reproduced (or partly) and others not -> partly reproduced;
    none reproduced and any contradicted -> contradicted; all inconclusive -> inconclusive;
    otherwise (not reproduced, maybe with inconclusive parts) -> not reproduced, since a part the
    data rule out already fails the claim.
    """
    labels = [label for _, label in parts]
    if not labels or any(label not in LABELS for label in labels):
        raise ValueError(f"need one or more of {LABELS}, got {parts}")
    if all(label == REPRODUCED for label in labels):
        return REPRODUCED
    if any(label in (REPRODUCED, PARTLY) for label in labels):
        return PARTLY
    if CONTRADICTED in labels:
        return CONTRADICTED
    if all(label == INCONCLUSIVE for label in labels):
        return INCONCLUSIVE
    return NOT_REPRODUCED
