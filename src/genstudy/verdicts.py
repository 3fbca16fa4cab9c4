"""The report's five labels, and the rules that map a claim's test (genstudy.stats) onto them.

A label means the same thing in every experiment. Each part of a verdict is a :class:`Claim`, a
comparison (genstudy.stats) and what is claimed of it:

- :func:`effect`: the difference has a sign (a regularizer narrows the gap, LB is sharper);
- :func:`equal`: the difference lies within ±margin (as accurate as, near chance);
- :func:`noninferior`: the difference is not worse than -margin in the claimed direction;
- :func:`draw`: a notebook's single run is a plausible run of ours (stats.prediction).

Every claim has the p of its own test. An experiment's claims are one family: :func:`family`
corrects their p for multiplicity with Holm's method (statsmodels' ``multipletests``) before any
label is given, and each line shows the raw and the adjusted p. Where the data cannot tell, the
judgement says how many seeds give 80 % power (statsmodels' t-test power), for the effect the claim
names and for the one observed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as st
from statsmodels.stats.multitest import multipletests

from .stats import Comparison, fmt_p, seeds_for_power

REPRODUCED = "reproduced"            # the claim holds and the test supports it
PARTLY = "partly reproduced"         # some parts hold; the caller names them
NOT_REPRODUCED = "not reproduced"    # no effect, and the data rule out an effect of the claimed size
CONTRADICTED = "contradicted"        # the test supports the opposite
INCONCLUSIVE = "inconclusive"        # n too small to tell; the judgement says what n gives 80 % power
LABELS = (REPRODUCED, PARTLY, NOT_REPRODUCED, CONTRADICTED, INCONCLUSIVE)

ALPHA = 0.05
POWER = 0.8
NAN = math.nan


def not_a_result(profile: str) -> str:
    """What the smoke and quick profiles print instead of a label: their sizes only test the code."""
    return f"not a result: {profile}"


@dataclass(frozen=True)
class Judgement:
    """A label for one claim, why, its raw and Holm-adjusted p, and (when inconclusive) the seeds
    that give 80 % power for the claimed and for the observed effect."""
    label: str
    result: Comparison
    why: str = ""
    p: float = NAN
    p_adj: float = NAN
    n_claimed: int | None = None
    n_observed: int | None = None
    digits: int = 4

    @property
    def text(self) -> str:
        """'not reproduced (the 95 % CI contains 0 and excludes +0.01; t-test p 0.71, Holm ...)'."""
        return f"{self.label} ({self.why})" if self.why else self.label

    def line(self, name: str) -> str:
        """The whole verdict: the result's numbers, then the label sentence."""
        return f"{self.result.text(name, self.digits)}: {self.text}"


@dataclass(frozen=True)
class Claim:
    """What is claimed of a comparison, before the family's correction (build it with effect(),
    equal(), noninferior() or draw())."""
    result: Comparison
    kind: str            # "effect", "equal", "noninferior" or "draw"
    expect: int = 1      # the claimed direction of the difference (effect, noninferior)
    bound: float = NAN   # effect: the smallest effect worth the name; equal, noninferior: the margin
    digits: int = 4

    @property
    def p(self) -> float:
        """The p of the claim's own test (NaN below 2 seeds): effect and draw, the two-sided t of the
        difference; equal, the larger one-sided p of the two tests against ±margin (TOST);
        noninferior, the one-sided p against -margin in the claimed direction."""
        c = self.result
        if c.n_min < 2:
            return NAN
        if self.kind in ("effect", "draw"):
            return c.p
        if self.kind == "equal":
            if c.se == 0:
                return 0.0 if abs(c.diff) < self.bound else 1.0
            return max(st.t.sf((c.diff + self.bound) / c.se, c.df), st.t.cdf((c.diff - self.bound) / c.se, c.df))
        if c.se == 0:
            return 0.0 if self.expect * c.diff > -self.bound else 1.0
        return float(st.t.sf((self.expect * c.diff + self.bound) / c.se, c.df))

    def judge(self, p_adj: float, m: int, alpha: float = ALPHA) -> Judgement:
        """The label, with p_adj the family's Holm-adjusted p of this claim among its m tests."""
        c, make = self.result, lambda label, why, *n: Judgement(
            label, c, why, self.p, p_adj, *(n or (None, None)), digits=self.digits)
        if c.n_min < 2:
            return make(INCONCLUSIVE, "fewer than 2 seeds: no spread to test against")
        name = {"effect": "t-test", "equal": "equivalence test (TOST)",
                "noninferior": "non-inferiority t", "draw": "prediction t"}[self.kind]
        ps = f"{name} {fmt_p(self.p)}, Holm-adjusted {fmt_p(p_adj)} over {m} test{'s' * (m > 1)}"
        lo, hi = c.ci(1 - alpha)
        ci = f"the {100 * (1 - alpha):g} % CI"
        if self.kind == "draw":
            if p_adj < alpha:
                return make(NOT_REPRODUCED, f"the notebook's run is not a plausible run of ours: {ps}")
            return make(REPRODUCED, f"the notebook's run is a plausible run of ours: {ps}")
        near, far = sorted((self.expect * lo, self.expect * hi))
        two = isinstance(c.n, tuple)
        per = " per arm" if two else ""
        if self.kind == "effect":
            if p_adj < alpha:
                side = self.expect * c.diff > 0
                return make(REPRODUCED if side else CONTRADICTED,
                            f"the estimate lies {'on the claimed side of' if side else 'against the claim, beyond'} 0: {ps}")
            bound = f"{self.expect * self.bound:+g}"
            if far < self.bound:
                return make(NOT_REPRODUCED, f"{ci} excludes {bound}; {ps}")
            n = (seeds_for_power(self.bound, c.sd, alpha, POWER, two_arms=two),
                 seeds_for_power(self.expect * c.diff, c.sd, alpha, POWER, two_arms=two))
            return make(INCONCLUSIVE, f"cannot tell 0 from {bound}: {ps}; {_power(n, f'the claimed {bound}', c.diff, per)}", *n)
        band = f"±{self.bound:g}"
        if self.kind == "equal":
            if p_adj < alpha:
                return make(REPRODUCED, f"within {band}: {ps}")
            if hi < -self.bound or lo > self.bound:
                return make(NOT_REPRODUCED, f"{ci} lies outside {band}; {ps}")
            # TOST's power at a true difference delta: about a one-sided t at margin - |delta|; at
            # delta 0 both one-sided tests share the miss rate, so each needs power 1 - (1 - POWER) / 2
            n = (seeds_for_power(self.bound, c.sd, alpha, 1 - (1 - POWER) / 2, "larger", two),
                 seeds_for_power(self.bound - abs(c.diff), c.sd, alpha, POWER, "larger", two))
            return make(INCONCLUSIVE, f"{ci} straddles {band}: {ps}; {_power(n, 'a difference of 0', c.diff, per)}", *n)
        worse = f"{-self.expect * self.bound:+g}"  # noninferior
        if p_adj < alpha:
            return make(REPRODUCED, f"not worse than {worse}: {ps}")
        if far < -self.bound:
            return make(NOT_REPRODUCED, f"{ci} lies beyond {worse}, worse than the margin; {ps}")
        n = (seeds_for_power(self.bound, c.sd, alpha, POWER, "larger", two),
             seeds_for_power(self.bound + self.expect * c.diff, c.sd, alpha, POWER, "larger", two))
        return make(INCONCLUSIVE, f"{ci} reaches below {worse}: {ps}; {_power(n, 'a difference of 0', c.diff, per)}", *n)


def _power(n: tuple[int | None, int | None], claimed: str, observed: float, per: str) -> str:
    """'about 12 seeds give 80 % power for the claimed +0.01 (4 at the observed +0.05)'."""
    first = (f"about {n[0]} seeds{per} give {100 * POWER:g} % power for {claimed}" if n[0]
             else f"no n gives power for {claimed} at this spread")
    return first + (f" ({n[1]} at the observed {observed:+.3g})" if n[1]
                    else " (none at the observed difference)")


def effect(c: Comparison, expect: int, min_effect: float, digits: int = 4) -> Claim:
    """'a - b has the sign expect (+1 or -1)'; min_effect (> 0): the smallest effect worth the name.

    reproduced / contradicted: the t-test's Holm-adjusted p < 0.05 with the difference on the
    claimed / the other side of 0; not reproduced: otherwise, when the 95 % interval excludes an
    effect of min_effect in the claimed direction; inconclusive otherwise, with the seeds that give
    80 % power. (Holm corrects the tests of the claims; the bound that makes a null result 'not
    reproduced' is read from the uncorrected interval.)"""
    if expect not in (1, -1) or not min_effect > 0:
        raise ValueError(f"expect must be +1 or -1 (got {expect}) and min_effect > 0 (got {min_effect})")
    return Claim(c, "effect", expect, min_effect, digits)


def equal(c: Comparison, margin: float, digits: int = 4) -> Claim:
    """'the difference lies within ±margin' (two arms alike, our mean at chance).

    reproduced: the equivalence test (TOST) has Holm-adjusted p < 0.05; not reproduced: the 95 %
    interval lies wholly outside ±margin; inconclusive otherwise."""
    if not margin > 0:
        raise ValueError(f"margin must be > 0 (got {margin})")
    return Claim(c, "equal", 1, margin, digits)


def noninferior(c: Comparison, expect: int, margin: float, digits: int = 4) -> Claim:
    """'a - b is not worse than margin against the direction expect' (a regularizer costs no test
    accuracy beyond the margin). reproduced: the one-sided test against -margin has Holm-adjusted
    p < 0.05; not reproduced: the 95 % interval lies wholly beyond -margin; inconclusive otherwise."""
    if expect not in (1, -1) or not margin > 0:
        raise ValueError(f"expect must be +1 or -1 (got {expect}) and margin > 0 (got {margin})")
    return Claim(c, "noninferior", expect, margin, digits)


def draw(c: Comparison, digits: int = 4) -> Claim:
    """'the notebook's single run is a plausible run of ours' (c from stats.prediction): not
    reproduced when the prediction t's Holm-adjusted p < 0.05, else reproduced; inconclusive
    below 2 seeds."""
    if c.interval != "PI":
        raise ValueError(f"draw() needs stats.prediction's comparison, got a {c.test}")
    return Claim(c, "draw", 1, NAN, digits)


def family(parts: list[tuple[str, Claim]], alpha: float = ALPHA) -> list[tuple[str, Judgement]]:
    """Judge an experiment's claims together: their p corrected by Holm's method over the claims
    that have a test (a claim with fewer than 2 seeds has none and is inconclusive)."""
    ps = [claim.p for _, claim in parts]
    tested = [i for i, p in enumerate(ps) if not math.isnan(p)]
    adj = dict(zip(tested, multipletests([ps[i] for i in tested], alpha, method="holm")[1])) if tested else {}
    return [(name, claim.judge(float(adj.get(i, NAN)), len(tested), alpha))
            for i, (name, claim) in enumerate(parts)]


def judge(claim: Claim, alpha: float = ALPHA) -> Judgement:
    """One claim judged alone (a family of one)."""
    return family([("", claim)], alpha)[0][1]


def all_of(labels: list[str]) -> str:
    """The label of a claim that needs every one of its parts (a regularizer helps: no accuracy lost
    and a narrower gap): contradicted if a part is, else not reproduced if a part is, else
    inconclusive if a part is, else reproduced."""
    for label in (CONTRADICTED, NOT_REPRODUCED, INCONCLUSIVE):
        if label in labels:
            return label
    return REPRODUCED


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
