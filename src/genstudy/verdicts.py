"""The report's five labels, and the rules that map a comparison or a trend (genstudy.stats) onto them.

A label means the same thing in every experiment: the rules below read only the interval (or p) of
the test, the claimed direction and the smallest effect worth the name (from references.yaml).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as st

from .stats import Comparison, Trend

REPRODUCED = "reproduced"            # the claim holds and the test supports it
PARTLY = "partly reproduced"         # some parts hold; the caller names them
NOT_REPRODUCED = "not reproduced"    # no effect, and the data rule out an effect of the claimed size
CONTRADICTED = "contradicted"        # the test supports the opposite
INCONCLUSIVE = "inconclusive"        # n too small to tell; the judgement says what n would settle it
LABELS = (REPRODUCED, PARTLY, NOT_REPRODUCED, CONTRADICTED, INCONCLUSIVE)


def not_a_result(profile: str) -> str:
    """What the smoke and quick profiles print instead of a label: their sizes only test the code."""
    return f"not a result: {profile}"



@dataclass(frozen=True)
class Judgement:
    """A label for one result, why, and (when inconclusive) the n that would settle it."""
    label: str
    result: Comparison | Trend
    n_needed: int | None = None
    why: str = ""

    @property
    def text(self) -> str:
        """'not reproduced (the 95 % CI contains 0 and excludes +0.0100)'."""
        return f"{self.label} ({self.why})" if self.why else self.label

    def line(self, name: str, **fmt) -> str:
        """The whole verdict: the result's numbers, then the label sentence."""
        return f"{self.result.text(name, **fmt)}: {self.text}"


def _n_settling(sd: float, width: float, alpha: float, n: int) -> int:
    """Smallest m > n at which the t interval 2 t(1-alpha/2, m-1) sd / sqrt(m) is narrower than width."""
    m = max(n + 1, math.ceil((2 * st.norm.ppf(1 - alpha / 2) * sd / width) ** 2))  # z <= t: a lower bound
    while 2 * st.t.ppf(1 - alpha / 2, m - 1) * sd / math.sqrt(m) >= width:
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
    z = 2 * st.norm.ppf(1 - alpha / 2) / math.atanh(min_rho)
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
