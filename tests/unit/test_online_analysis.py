"""Experiment analysis (ltr.online.analysis) against independent computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from ltr.online.analysis import ab_test, decide, interleaving_test, srm_check


def exact_two_sided_binomial_p(k: int, n: int) -> float:
    """Sum of Binomial(n, 1/2) probabilities no larger than that of ``k`` (the exact test)."""
    pk = math.comb(n, k)
    return min(1.0, sum(math.comb(n, i) for i in range(n + 1) if math.comb(n, i) <= pk) / 2**n)


# ------------------------------------------------------------------------------ interleaving
def test_interleaving_counts_wins_ties_and_the_chapelle_preference():
    res = interleaving_test(["a", "b", "b", "tie", "b", "a", "tie", "b"])
    assert (res.n, res.wins_a, res.wins_b, res.ties) == (8, 2, 4, 2)
    assert res.preference == pytest.approx((4 - 2) / 8)


@pytest.mark.parametrize(("wins_a", "wins_b", "ties"), [(3, 12, 5), (10, 10, 0), (7, 1, 40)])
def test_interleaving_p_value_is_the_exact_binomial_sum_over_decisive_impressions(
    wins_a, wins_b, ties
):
    res = interleaving_test(["a"] * wins_a + ["tie"] * ties + ["b"] * wins_b)
    assert res.p_value == pytest.approx(exact_two_sided_binomial_p(wins_b, wins_a + wins_b))


def test_ties_change_the_preference_but_not_the_p_value():
    few = interleaving_test(["a"] * 5 + ["b"] * 15)
    many = interleaving_test(["a"] * 5 + ["b"] * 15 + ["tie"] * 20)
    assert few.p_value == pytest.approx(many.p_value)
    assert few.preference == pytest.approx(0.5)
    assert many.preference == pytest.approx(0.25)


def test_interleaving_names_the_side_with_more_wins_only_when_significant():
    assert interleaving_test(["a"] * 5 + ["b"] * 25).winner == "b"
    assert interleaving_test(["a"] * 25 + ["b"] * 5).winner == "a"
    res = interleaving_test(["a"] * 9 + ["b"] * 11)
    assert res.p_value > 0.05
    assert res.winner is None


def test_interleaving_uses_alpha_for_the_winner():
    winners = ["a"] * 8 + ["b"] * 18  # exact p about 0.0755
    assert interleaving_test(winners, alpha=0.05).winner is None
    assert interleaving_test(winners, alpha=0.10).winner == "b"


def test_interleaving_bootstrap_interval_is_seeded_and_brackets_the_preference():
    winners = ["a"] * 30 + ["b"] * 50 + ["tie"] * 20
    first = interleaving_test(winners, seed=3)
    again = interleaving_test(winners, seed=3)
    assert first.ci == again.ci
    low, high = first.ci
    assert low < first.preference < high
    # close to the normal interval of a mean of -1/0/+1 values
    x = np.array([-1.0] * 30 + [1.0] * 50 + [0.0] * 20)
    half = 1.96 * x.std() / math.sqrt(len(x))
    assert low == pytest.approx(x.mean() - half, abs=0.03)
    assert high == pytest.approx(x.mean() + half, abs=0.03)


def test_interleaving_without_decisive_impressions_has_no_p_value_and_no_winner():
    res = interleaving_test(["tie"] * 5)
    assert res.p_value is None
    assert res.winner is None
    assert res.preference == 0.0
    assert res.ci == (0.0, 0.0)
    json.dumps(res.to_dict(), allow_nan=False)


def test_interleaving_rejects_empty_input():
    with pytest.raises(ValueError, match="empty"):
        interleaving_test([])


def test_interleaving_names_an_unknown_winner_label_and_its_index():
    with pytest.raises(ValueError, match=r"'none' at index 2"):
        interleaving_test(["a", "b", "none", "a"])


def test_interleaving_rejects_a_bare_string_and_a_bad_alpha():
    with pytest.raises(TypeError):
        interleaving_test("abba")
    with pytest.raises(ValueError, match="alpha"):
        interleaving_test(["a", "b"], alpha=1.5)


# ---------------------------------------------------------------------------------- A/B
def welch_by_hand(a: list[float], b: list[float], alpha: float) -> dict[str, float]:
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se = math.sqrt(va / na + vb / nb)
    df = (va / na + vb / nb) ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    t = (mb - ma) / se
    q = stats.t.ppf(1 - alpha / 2, df)
    return {
        "diff": mb - ma,
        "low": mb - ma - q * se,
        "high": mb - ma + q * se,
        "df": df,
        "t": t,
        "p": 2 * stats.t.sf(abs(t), df),
    }


A = [0.2, 0.5, 0.1, 0.4, 0.3, 0.0, 0.6, 0.2]
B = [0.5, 0.9, 0.4, 0.8, 0.7, 0.6, 1.0, 0.3, 0.75, 0.65]


@pytest.mark.parametrize("alpha", [0.05, 0.10])
def test_ab_difference_interval_and_p_value_follow_welchs_formulas(alpha):
    res = ab_test(A, B, alpha=alpha, metric="click_mrr")
    ref = welch_by_hand(A, B, alpha)
    assert res.difference == pytest.approx(ref["diff"])
    assert res.ci == pytest.approx((ref["low"], ref["high"]))
    assert res.df == pytest.approx(ref["df"])
    assert res.statistic == pytest.approx(ref["t"])
    assert res.p_value == pytest.approx(ref["p"])
    assert (res.n_control, res.n_treatment) == (8, 10)
    assert res.mean_control == pytest.approx(sum(A) / 8)
    assert res.relative_effect == pytest.approx(ref["diff"] / (sum(A) / 8))


def test_ab_names_the_treatment_winner_when_its_mean_is_significantly_higher():
    res = ab_test(A, B, control="prod", treatment="cand")
    assert res.significant
    assert res.winner == "cand"
    assert ab_test(B, A, control="prod", treatment="cand").winner == "prod"


def test_ab_winner_flips_when_lower_is_better():
    assert ab_test(A, B, higher_is_better=False).winner == "a"


def test_ab_without_significance_has_no_winner():
    res = ab_test([1.0, 2.0, 3.0], [1.5, 2.5, 2.0])
    assert not res.significant
    assert res.winner is None


def test_ab_relative_effect_is_none_when_the_control_mean_is_zero():
    res = ab_test([0.0, 1.0, -1.0], [1.0, 2.0, 3.0])
    assert res.relative_effect is None
    json.dumps(res.to_dict(), allow_nan=False)


def test_ab_with_no_variance_in_either_arm_has_no_p_value():
    res = ab_test([1.0, 1.0], [2.0, 2.0, 2.0])
    assert res.p_value is None
    assert res.ci is None
    assert not res.significant
    json.dumps(res.to_dict(), allow_nan=False)


def test_ab_rejects_too_few_units_and_names_a_non_finite_value():
    with pytest.raises(ValueError, match="per_unit_a needs at least 2"):
        ab_test([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"per_unit_b .*nan.* at index 1"):
        ab_test([1.0, 2.0], [1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="differ"):
        ab_test([1.0, 2.0], [1.0, 2.0], control="x", treatment="x")


# ---------------------------------------------------------------------------------- SRM
def test_srm_of_two_arms_matches_the_chi_square_computed_by_hand():
    res = srm_check({"a": 5_100, "b": 4_900}, {"a": 0.5, "b": 0.5})
    chi2 = (5_100 - 5_000) ** 2 / 5_000 + (4_900 - 5_000) ** 2 / 5_000
    assert res.statistic == pytest.approx(chi2)
    # chi-square with 1 degree of freedom: P(X > x) = erfc(sqrt(x / 2))
    assert res.p_value == pytest.approx(math.erfc(math.sqrt(chi2 / 2)))
    assert res.expected == {"a": 5_000.0, "b": 5_000.0}
    assert not res.mismatch


def test_srm_of_three_unequal_arms_matches_the_chi_square_computed_by_hand():
    observed = {"a": 800, "b": 1_050, "c": 150}
    shares = {"a": 0.4, "b": 0.5, "c": 0.1}
    res = srm_check(observed, shares)
    chi2 = sum((observed[k] - 2_000 * s) ** 2 / (2_000 * s) for k, s in shares.items())
    assert res.statistic == pytest.approx(chi2)
    # chi-square with 2 degrees of freedom: P(X > x) = exp(-x / 2)
    assert res.p_value == pytest.approx(math.exp(-chi2 / 2))


def test_srm_flags_a_mismatch_below_the_threshold():
    res = srm_check({"a": 5_300, "b": 4_700}, {"a": 0.5, "b": 0.5})
    assert res.p_value < 0.001
    assert res.mismatch
    json.dumps(res.to_dict(), allow_nan=False)


def test_srm_rejects_shares_that_do_not_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        srm_check({"a": 10, "b": 10}, {"a": 0.5, "b": 0.6})


def test_srm_rejects_arms_that_differ():
    with pytest.raises(ValueError, match="differ"):
        srm_check({"a": 10, "b": 10}, {"a": 0.5, "c": 0.5})


def test_srm_rejects_negative_counts_and_an_empty_experiment():
    with pytest.raises(ValueError, match="arm 'b'"):
        srm_check({"a": 10, "b": -1}, {"a": 0.5, "b": 0.5})
    with pytest.raises(ValueError, match="no units"):
        srm_check({"a": 0, "b": 0}, {"a": 0.5, "b": 0.5})


# ------------------------------------------------------------------------------ decision
def test_a_sample_ratio_mismatch_invalidates_the_decision():
    srm = srm_check({"a": 5_300, "b": 4_700}, {"a": 0.5, "b": 0.5})
    d = decide(ab=ab_test(A, B), srm=srm)
    assert d.recommendation == "invalid_srm"
    assert d.winner is None
    assert "mismatch" in d.reason.lower()


def test_a_significant_ab_treatment_is_promoted():
    srm = srm_check({"a": 5_010, "b": 4_990}, {"a": 0.5, "b": 0.5})
    d = decide(ab=ab_test(A, B), srm=srm)
    assert (d.recommendation, d.source, d.winner) == ("promote_b", "ab", "b")
    assert d.effect == pytest.approx(sum(B) / len(B) - sum(A) / len(A))
    json.dumps(d.to_dict(), allow_nan=False)


def test_a_significant_ab_control_is_kept():
    assert decide(ab=ab_test(B, A)).recommendation == "keep_a"


def test_ab_decides_over_interleaving_and_the_reason_notes_a_disagreement():
    inter = interleaving_test(["a"] * 5 + ["b"] * 25)
    d = decide(interleaving=inter, ab=ab_test([1.0, 2.0, 3.0], [1.5, 2.5, 2.0]))
    assert d.recommendation == "inconclusive"
    assert d.source == "ab"
    assert "Interleaving preferred b" in d.reason


def test_interleaving_alone_decides_when_there_is_no_ab():
    d = decide(interleaving=interleaving_test(["a"] * 5 + ["b"] * 25))
    assert (d.recommendation, d.source, d.winner) == ("promote_b", "interleaving", "b")
    assert decide(interleaving=interleaving_test(["a"] * 25 + ["b"] * 5)).recommendation == (
        "keep_a"
    )
    assert decide(interleaving=interleaving_test(["a", "b"])).recommendation == "inconclusive"


def test_decide_needs_some_evidence():
    with pytest.raises(ValueError, match="needs"):
        decide()
