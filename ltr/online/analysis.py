"""Analysis of online experiments: interleaving preference, A/B difference, sample-ratio check
and the decision they add up to.

Every result is a frozen dataclass whose ``to_dict()`` is JSON-safe (floats, ints, strings,
lists, ``None``; never NaN: a quantity that is undefined is ``None``).

* :func:`interleaving_test`: Team-Draft interleaving outcomes, one ``"a"``/``"b"``/``"tie"``
  per impression. The preference is Chapelle, Joachims, Radlinski & Yue (*Large-scale
  validation and analysis of interleaved search evaluation*, TOIS 2012):
  ``delta = (wins_b - wins_a) / (wins_a + wins_b + ties)``, positive when ``b`` is better.
  **Which impressions to pass**: only those with at least one click credited to a team
  (:func:`serving.interleaving.interleave_credit` gives ``a + b > 0``). An impression nobody
  clicked says nothing about either ranker; counting it as a tie would only dilute ``delta``
  by the click-through rate. The function cannot tell the two kinds of tie apart, so the
  choice is the caller's; the p-value does not depend on it (ties are excluded from the
  binomial test), ``delta`` and its interval do.
* :func:`ab_test`: Welch's t-test on per-unit (per-user) metric values of two arms.
* :func:`srm_check`: chi-square goodness of fit of the units per arm against the configured
  traffic shares (sample-ratio mismatch, Fabijan et al., KDD 2019).
* :func:`decide`: one recommendation from the above.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

__all__ = [
    "ABResult",
    "Decision",
    "InterleavingResult",
    "SRMResult",
    "ab_test",
    "decide",
    "interleaving_test",
    "srm_check",
]

logger = logging.getLogger(__name__)

WINNER_LABELS: tuple[str, ...] = ("a", "b", "tie")
Recommendation = Literal["promote_b", "keep_a", "inconclusive", "invalid_srm"]


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")


# ----------------------------------------------------------------------------- interleaving
@dataclass(frozen=True)
class InterleavingResult:
    """Outcome of an interleaving experiment (see the module docstring for ``preference``).

    ``ci`` is the percentile bootstrap interval of ``preference`` at level ``1 - alpha``;
    ``p_value`` the two-sided exact binomial test of ``wins_b`` among ``wins_a + wins_b``
    against 1/2 (``None`` when no impression has a winner); ``winner`` is the side with
    more wins when ``p_value < alpha``, else ``None``.
    """

    n: int
    wins_a: int
    wins_b: int
    ties: int
    preference: float
    ci: tuple[float, float]
    p_value: float | None
    winner: str | None
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = [float(x) for x in self.ci]
        return out


def _winner_counts(winners: Sequence[str]) -> tuple[int, int, int]:
    if isinstance(winners, str):
        raise TypeError("winners must be a sequence of 'a' / 'b' / 'tie', not one string")
    if len(winners) == 0:
        raise ValueError("winners is empty: an interleaving test needs at least one impression")
    counts = {label: 0 for label in WINNER_LABELS}
    for i, w in enumerate(winners):
        if w not in counts:
            raise ValueError(
                f"unknown winner {w!r} at index {i}; valid: {', '.join(WINNER_LABELS)}"
            )
        counts[w] += 1
    return counts["a"], counts["b"], counts["tie"]


def interleaving_test(
    winners: Sequence[str], *, alpha: float = 0.05, n_boot: int = 2000, seed: int = 0
) -> InterleavingResult:
    """Preference, bootstrap interval, binomial p-value and winner of interleaved impressions.

    ``winners``: ``"a"``, ``"b"`` or ``"tie"`` per impression, for the impressions with at
    least one attributed click (module docstring). The bootstrap resamples impressions with
    replacement ``n_boot`` times; since each impression is one of three outcomes, a resample
    is exactly a multinomial draw of the three counts, which is what is drawn (seeded).
    """
    _check_alpha(alpha)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    wins_a, wins_b, ties = _winner_counts(winners)
    n = wins_a + wins_b + ties
    preference = (wins_b - wins_a) / n
    rng = np.random.default_rng(seed)
    boot = rng.multinomial(n, np.array([wins_a, wins_b, ties]) / n, size=n_boot)
    deltas = (boot[:, 1] - boot[:, 0]) / n
    low, high = np.quantile(deltas, [alpha / 2.0, 1.0 - alpha / 2.0])
    decisive = wins_a + wins_b
    p_value: float | None = None
    winner: str | None = None
    if decisive > 0:
        p_value = float(stats.binomtest(wins_b, decisive, 0.5, alternative="two-sided").pvalue)
        if p_value < alpha and wins_a != wins_b:
            winner = "b" if wins_b > wins_a else "a"
    return InterleavingResult(
        n=n,
        wins_a=wins_a,
        wins_b=wins_b,
        ties=ties,
        preference=float(preference),
        ci=(float(low), float(high)),
        p_value=p_value,
        winner=winner,
        alpha=float(alpha),
    )


# ------------------------------------------------------------------------------------- A/B
@dataclass(frozen=True)
class ABResult:
    """Welch comparison of two arms; ``difference = mean_treatment - mean_control``.

    ``ci`` is the Welch (Satterthwaite degrees of freedom) interval of ``difference`` at
    level ``1 - alpha``; ``relative_effect = difference / mean_control`` (``None`` when the
    control mean is 0). ``p_value``, ``statistic``, ``df`` and ``ci`` are ``None`` when both
    arms have zero variance (the test is undefined). ``winner`` is the better arm's name when
    significant.
    """

    metric: str
    control: str
    treatment: str
    n_control: int
    n_treatment: int
    mean_control: float
    mean_treatment: float
    difference: float
    ci: tuple[float, float] | None
    relative_effect: float | None
    statistic: float | None
    df: float | None
    p_value: float | None
    significant: bool
    winner: str | None
    alpha: float
    higher_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = None if self.ci is None else [float(x) for x in self.ci]
        return out


def _as_values(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D per-unit values, got shape {arr.shape}")
    if len(arr) < 2:
        raise ValueError(f"{name} needs at least 2 units for a variance, got {len(arr)}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if len(bad):
        raise ValueError(f"{name} has a non-finite value {arr[bad[0]]!r} at index {bad[0]}")
    return arr


def ab_test(
    per_unit_a: Sequence[float] | np.ndarray,
    per_unit_b: Sequence[float] | np.ndarray,
    *,
    alpha: float = 0.05,
    control: str = "a",
    treatment: str = "b",
    metric: str = "metric",
    higher_is_better: bool = True,
) -> ABResult:
    """Welch's t-test of ``per_unit_b`` (arm ``treatment``) against ``per_unit_a`` (arm
    ``control``): one metric value per randomisation unit (user), never per event."""
    _check_alpha(alpha)
    if control == treatment:
        raise ValueError(f"control and treatment must differ, both are {control!r}")
    a = _as_values("per_unit_a", per_unit_a)
    b = _as_values("per_unit_b", per_unit_b)
    mean_a, mean_b = float(a.mean()), float(b.mean())
    diff = mean_b - mean_a
    ci: tuple[float, float] | None = None
    statistic = df = p_value = None
    if a.var() > 0 or b.var() > 0:
        res = stats.ttest_ind(b, a, equal_var=False)
        statistic, p_value = float(res.statistic), float(res.pvalue)
        df = float(res.df)
        interval = res.confidence_interval(confidence_level=1.0 - alpha)
        ci = (float(interval.low), float(interval.high))
    significant = p_value is not None and p_value < alpha and diff != 0
    winner: str | None = None
    if significant:
        treatment_better = diff > 0 if higher_is_better else diff < 0
        winner = treatment if treatment_better else control
    return ABResult(
        metric=metric,
        control=control,
        treatment=treatment,
        n_control=len(a),
        n_treatment=len(b),
        mean_control=mean_a,
        mean_treatment=mean_b,
        difference=diff,
        ci=ci,
        relative_effect=None if mean_a == 0 else _finite_or_none(diff / mean_a),
        statistic=statistic,
        df=df,
        p_value=p_value,
        significant=significant,
        winner=winner,
        alpha=float(alpha),
        higher_is_better=higher_is_better,
    )


# ------------------------------------------------------------------------------------- SRM
@dataclass(frozen=True)
class SRMResult:
    """Sample-ratio check: ``expected`` counts are ``total * share``; ``mismatch`` when
    ``p_value < threshold`` (a strict threshold: a real SRM gives tiny p-values, and the
    check runs on every experiment)."""

    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float
    p_value: float
    mismatch: bool
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def srm_check(
    observed: Mapping[str, int],
    expected_share: Mapping[str, float],
    *,
    threshold: float = 0.001,
) -> SRMResult:
    """Chi-square goodness of fit of the units seen per arm against the configured shares."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")
    if set(observed) != set(expected_share):
        raise ValueError(
            f"observed arms {sorted(observed)} differ from the arms with a share "
            f"{sorted(expected_share)}"
        )
    if len(observed) < 2:
        raise ValueError(f"an SRM check needs at least 2 arms, got {sorted(observed)}")
    arms = sorted(observed)
    counts = []
    for arm in arms:
        count = observed[arm]
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
            raise ValueError(f"observed count of arm {arm!r} must be an int >= 0, got {count!r}")
        counts.append(int(count))
    shares = np.array([float(expected_share[arm]) for arm in arms])
    if not np.all(np.isfinite(shares)) or np.any(shares <= 0):
        bad = {arm: expected_share[arm] for arm in arms}
        raise ValueError(f"every expected share must be a finite number > 0, got {bad}")
    if not math.isclose(float(shares.sum()), 1.0, abs_tol=1e-6):
        raise ValueError(f"expected shares must sum to 1, they sum to {shares.sum():.6g}")
    total = sum(counts)
    if total == 0:
        raise ValueError("no units observed in any arm")
    expected = total * shares / shares.sum()
    res = stats.chisquare(np.array(counts, dtype=np.float64), expected)
    p_value = float(res.pvalue)
    return SRMResult(
        observed=dict(zip(arms, counts, strict=True)),
        expected={arm: float(e) for arm, e in zip(arms, expected, strict=True)},
        statistic=float(res.statistic),
        p_value=p_value,
        mismatch=p_value < threshold,
        threshold=float(threshold),
    )


# -------------------------------------------------------------------------------- decision
@dataclass(frozen=True)
class Decision:
    """What to do with a candidate ranker ``b`` against the production ranker ``a``."""

    winner: str | None
    source: Literal["interleaving", "ab"] | None
    effect: float | None
    ci: tuple[float, float] | None
    p_value: float | None
    recommendation: Recommendation
    reason: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = None if self.ci is None else [float(x) for x in self.ci]
        return out


def _fmt_p(p: float | None) -> str:
    return "undefined" if p is None else f"{p:.3g}"


def decide(
    interleaving: InterleavingResult | None = None,
    ab: ABResult | None = None,
    srm: SRMResult | None = None,
) -> Decision:
    """One recommendation from the available evidence.

    * A sample-ratio mismatch invalidates the experiment: the traffic assignment is broken,
      so nothing measured on it is trusted (``"invalid_srm"``).
    * With an A/B result, it decides: it measures the effect users actually get, while
      interleaving only says which ranker users prefer side by side. A significant winner
      that is the treatment promotes ``b``; the control keeps ``a``.
    * Otherwise the interleaving result decides the same way.
    * No significant winner: ``"inconclusive"``.
    """
    if interleaving is None and ab is None:
        raise ValueError("decide needs an interleaving result, an A/B result or both")
    if srm is not None and srm.mismatch:
        return Decision(
            winner=None,
            source=None,
            effect=None,
            ci=None,
            p_value=None,
            recommendation="invalid_srm",
            reason=(
                f"Sample-ratio mismatch (chi-square p = {srm.p_value:.3g} < {srm.threshold}: "
                f"observed {srm.observed}, expected {srm.expected}); the assignment is broken "
                "and the experiment's results are not valid."
            ),
        )
    recommendation: Recommendation
    if ab is not None:
        if ab.winner is None:
            recommendation = "inconclusive"
            reason = (
                f"A/B on {ab.metric}: difference {ab.difference:+.4g} is not significant "
                f"(Welch p = {_fmt_p(ab.p_value)}, alpha = {ab.alpha})."
            )
        else:
            recommendation = "promote_b" if ab.winner == ab.treatment else "keep_a"
            reason = (
                f"A/B on {ab.metric}: {ab.winner} is better, difference {ab.difference:+.4g} "
                f"(Welch p = {_fmt_p(ab.p_value)} < {ab.alpha})."
            )
        if (
            interleaving is not None
            and interleaving.winner is not None
            and (interleaving.winner == "b") != (recommendation == "promote_b")
        ):
            reason += f" Interleaving preferred {interleaving.winner}, which A/B did not confirm."
        return Decision(
            winner=ab.winner,
            source="ab",
            effect=ab.difference,
            ci=ab.ci,
            p_value=ab.p_value,
            recommendation=recommendation,
            reason=reason,
        )
    if interleaving is None:  # unreachable: checked above; keeps the type checker informed
        raise ValueError("decide needs an interleaving result, an A/B result or both")
    if interleaving.winner is None:
        recommendation = "inconclusive"
        reason = (
            f"Interleaving: preference {interleaving.preference:+.4g} over {interleaving.n} "
            f"impressions is not significant (binomial p = {_fmt_p(interleaving.p_value)}, "
            f"alpha = {interleaving.alpha})."
        )
    else:
        recommendation = "promote_b" if interleaving.winner == "b" else "keep_a"
        reason = (
            f"Interleaving: {interleaving.winner} wins {interleaving.wins_b}-"
            f"{interleaving.wins_a} (b-a) over {interleaving.n} impressions, preference "
            f"{interleaving.preference:+.4g} (binomial p = {_fmt_p(interleaving.p_value)} < "
            f"{interleaving.alpha})."
        )
    return Decision(
        winner=interleaving.winner,
        source="interleaving",
        effect=interleaving.preference,
        ci=interleaving.ci,
        p_value=interleaving.p_value,
        recommendation=recommendation,
        reason=reason,
    )
