"""Numeric tests of the five ranking losses on tiny literal slates.

Every expected value is computed here with plain ``math`` from the formula, never with the
library's helpers.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ltr.models.constants import PADDED_Y_VALUE
from ltr.models.losses import (
    LOSSES,
    approxndcg_loss,
    get_loss,
    lambdarank_loss,
    lambdarank_weights,
    listmle_loss,
    listnet_loss,
    loss_params,
    ranknet_loss,
)

torch.set_num_threads(1)

ALL_LOSSES = sorted(LOSSES)
LN2 = math.log(2.0)


def slate(scores, labels, dtype=torch.float64):
    """One unpadded query as ``[1, n]`` tensors; scores require grad."""
    s = torch.tensor([scores], dtype=dtype, requires_grad=True)
    y = torch.tensor([labels], dtype=dtype)
    return s, y, torch.ones_like(y, dtype=torch.bool)


def value_and_grad(fn, s, y, m):
    loss = fn(s, y, m)
    (grad,) = torch.autograd.grad(loss, s)
    return loss, grad


# --- independent references (plain Python) -------------------------------------------


def softplus(x):
    return math.log1p(math.exp(x)) if x < 30 else x + math.log1p(math.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def dcg_of_order(labels, order, k=None):
    """DCG@k of the documents listed in ``order`` (top first)."""
    return sum(
        (2.0 ** labels[doc] - 1.0) / math.log2(pos + 2)
        for pos, doc in enumerate(order)
        if k is None or pos < k
    )


def ndcg_of_order(labels, order, k=None):
    ideal = sorted(range(len(labels)), key=lambda d: -labels[d])
    return dcg_of_order(labels, order, k) / dcg_of_order(labels, ideal, k)


def order_by_scores(scores):
    return sorted(range(len(scores)), key=lambda d: -scores[d])


def plackett_luce_nll(scores, order):
    total = 0.0
    for p in range(len(order)):
        rest = order[p:]
        total += math.log(sum(math.exp(scores[d]) for d in rest)) - scores[order[p]]
    return total


# --- hand-checked values on a 3-document slate ---------------------------------------
# s = [1, 2, 0], y = [2, 1, 0]; doc 1 (label 1) outranks doc 0 (label 2) by score.

S3 = [1.0, 2.0, 0.0]
Y3 = [2.0, 1.0, 0.0]


def test_ranknet_matches_hand_computed_mean_of_pair_softplus():
    # pairs (0,1), (0,2), (1,2): softplus(-(1-2)), softplus(-(1-0)), softplus(-(2-0))
    # = [log(1+e) + log(1+e^-1) + log(1+e^-2)] / 3
    expected = (math.log(1 + math.e) + math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2))) / 3
    loss = ranknet_loss(*slate(S3, Y3))
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_ranknet_sigma_scales_the_score_difference():
    # sigma = 2: softplus(-2*(1-2)) = log(1+e^2), etc.
    expected = (
        math.log(1 + math.exp(2)) + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-4))
    ) / 3
    loss = ranknet_loss(*slate(S3, Y3), sigma=2.0)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_lambdarank_matches_hand_computed_delta_ndcg_weighted_sum():
    # current ranking by score: doc1 (rank 1), doc0 (rank 2), doc2 (rank 3)
    # gains G = [3, 1, 0]; discounts D(1)=1, D(2)=1/log2(3), D(3)=1/2
    # IDCG = 3*1 + 1/log2(3) + 0
    d1, d2, d3 = 1.0, 1.0 / math.log2(3), 0.5
    idcg = 3.0 + 1.0 / math.log2(3)
    w01 = abs(3 - 1) * abs(d2 - d1) / idcg  # doc0 at rank 2, doc1 at rank 1
    w02 = abs(3 - 0) * abs(d2 - d3) / idcg
    w12 = abs(1 - 0) * abs(d1 - d3) / idcg
    expected = (
        w01 * math.log(1 + math.e)
        + w02 * math.log(1 + math.exp(-1))
        + w12 * math.log(1 + math.exp(-2))
    )
    loss = lambdarank_loss(*slate(S3, Y3))
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_listnet_matches_hand_computed_softmax_cross_entropy():
    # target t = e^y / (e^2 + e^1 + e^0); log p = s - log(e^1 + e^2 + e^0)
    z_y = math.exp(2) + math.exp(1) + 1
    lse_s = math.log(math.exp(1) + math.exp(2) + 1)
    expected = -sum(math.exp(y) / z_y * (s - lse_s) for s, y in zip(S3, Y3, strict=True))
    loss = listnet_loss(*slate(S3, Y3))
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_listmle_matches_hand_computed_plackett_luce_nll():
    # true order doc0, doc1, doc2 (labels 2 > 1 > 0), scores 1, 2, 0:
    # [log(e^1+e^2+e^0) - 1] + [log(e^2+e^0) - 2] + [log(e^0) - 0]
    expected = math.log(math.e + math.exp(2) + 1) - 1 + math.log(math.exp(2) + 1) - 2 + 0.0
    loss = listmle_loss(*slate(S3, Y3))
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    normalized = listmle_loss(*slate(S3, Y3), normalize=True)
    assert normalized.item() == pytest.approx(expected / 3, abs=1e-12)


def test_approxndcg_matches_hand_computed_sigmoid_ranks():
    # rank_i = 1 + Σ_{j≠i} sigmoid(s_j - s_i)
    r0 = 1 + sigmoid(2 - 1) + sigmoid(0 - 1)
    r1 = 1 + sigmoid(1 - 2) + sigmoid(0 - 2)
    # doc2 has gain 0, its rank does not matter
    idcg = 3.0 + 1.0 / math.log2(3)
    expected = 1 - (3 / math.log2(1 + r0) + 1 / math.log2(1 + r1)) / idcg
    loss = approxndcg_loss(*slate(S3, Y3))
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_approxndcg_alpha_is_the_sigmoid_temperature():
    r0 = 1 + sigmoid((2 - 1) / 0.5) + sigmoid((0 - 1) / 0.5)
    r1 = 1 + sigmoid((1 - 2) / 0.5) + sigmoid((0 - 2) / 0.5)
    idcg = 3.0 + 1.0 / math.log2(3)
    expected = 1 - (3 / math.log2(1 + r0) + 1 / math.log2(1 + r1)) / idcg
    loss = approxndcg_loss(*slate(S3, Y3), alpha=0.5)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_two_document_slates_give_hand_computed_values():
    # s = [0.5, -0.5], y = [1, 0]
    s, y = [0.5, -0.5], [1.0, 0.0]
    sp = math.log(1 + math.exp(-1.0))  # softplus(-(0.5 - -0.5))
    assert ranknet_loss(*slate(s, y)).item() == pytest.approx(sp, abs=1e-12)
    # ranking already ideal: |ΔNDCG| = |1-0| * |1 - 1/log2(3)| / 1
    w = 1 - 1 / math.log2(3)
    assert lambdarank_loss(*slate(s, y)).item() == pytest.approx(w * sp, abs=1e-12)
    # ListMLE: log(e^0.5 + e^-0.5) - 0.5 + 0
    expected_mle = math.log(math.exp(0.5) + math.exp(-0.5)) - 0.5
    assert listmle_loss(*slate(s, y)).item() == pytest.approx(expected_mle, abs=1e-12)


# --- brute-force checks ----------------------------------------------------------------


@pytest.mark.parametrize("scores", [[1.0, 2.0, 0.0], [-0.3, 0.7, 2.5], [4.0, -1.0, 0.25]])
def test_listmle_equals_minus_log_of_enumerated_plackett_luce_probability(scores):
    labels = [0.0, 2.0, 1.0]  # true order: doc1, doc2, doc0
    probs = {}
    for perm in itertools.permutations(range(3)):
        p = 1.0
        for pos in range(3):
            rest = perm[pos:]
            p *= math.exp(scores[perm[pos]]) / sum(math.exp(scores[d]) for d in rest)
        probs[perm] = p
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
    loss = listmle_loss(*slate(scores, labels))
    assert loss.item() == pytest.approx(-math.log(probs[(1, 2, 0)]), abs=1e-12)


@pytest.mark.parametrize(
    ("temperature", "label_transform"),
    [(1.0, "identity"), (0.5, "identity"), (1.0, "exp2"), (2.0, "exp2")],
)
def test_listnet_equals_manual_softmax_cross_entropy(temperature, label_transform):
    scores = [0.3, -1.2, 2.0, 0.0, 0.7]
    labels = [1.0, 0.0, 4.0, 2.0, 2.0]
    weights = [math.exp(y) if label_transform == "identity" else 2.0**y for y in labels]
    target = [w / sum(weights) for w in weights]
    z = sum(math.exp(s / temperature) for s in scores)
    expected = -sum(
        t * math.log(math.exp(s / temperature) / z) for t, s in zip(target, scores, strict=True)
    )
    loss = listnet_loss(
        *slate(scores, labels), temperature=temperature, label_transform=label_transform
    )
    assert loss.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("k", [None, 1, 2, 4])
def test_lambdarank_weights_equal_ndcg_change_from_literally_swapping_two_documents(k):
    scores = [0.1, 2.0, -1.0, 0.5, 1.5]
    labels = [3.0, 0.0, 2.0, 1.0, 0.0]
    s, y, m = slate(scores, labels)
    weights = lambdarank_weights(s, y, m, k=k)[0]
    current = order_by_scores(scores)
    base = ndcg_of_order(labels, current, k)
    for i, j in itertools.product(range(5), repeat=2):
        swapped = list(current)
        a, b = swapped.index(i), swapped.index(j)
        swapped[a], swapped[b] = swapped[b], swapped[a]
        expected = abs(ndcg_of_order(labels, swapped, k) - base)
        assert weights[i, j].item() == pytest.approx(expected, abs=1e-12), (i, j)


def test_lambdarank_loss_is_brute_force_weighted_sum_over_pairs():
    scores = [0.1, 2.0, -1.0, 0.5, 1.5]
    labels = [3.0, 0.0, 2.0, 1.0, 0.0]
    current = order_by_scores(scores)
    base = ndcg_of_order(labels, current)
    expected = 0.0
    for i, j in itertools.product(range(5), repeat=2):
        if labels[i] > labels[j]:
            swapped = list(current)
            a, b = swapped.index(i), swapped.index(j)
            swapped[a], swapped[b] = swapped[b], swapped[a]
            w = abs(ndcg_of_order(labels, swapped) - base)
            expected += w * softplus(-(scores[i] - scores[j]))
    loss = lambdarank_loss(*slate(scores, labels))
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_lambdarank_weights_have_no_gradient_and_ignore_padded_documents():
    s = torch.tensor([[0.3, 1.0, 1e4]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1.0, 0.0, PADDED_Y_VALUE]], dtype=torch.float64)
    w = lambdarank_weights(s, y, y >= 0)
    assert not w.requires_grad
    assert torch.all(w[0, 2, :] == 0) and torch.all(w[0, :, 2] == 0)


def test_approxndcg_approaches_one_minus_true_ndcg_as_alpha_shrinks():
    scores = [0.1, 2.0, -1.0, 0.5, 1.5]
    labels = [3.0, 0.0, 2.0, 1.0, 0.0]
    expected = 1 - ndcg_of_order(labels, order_by_scores(scores))
    loss = approxndcg_loss(*slate(scores, labels), alpha=1e-3)
    assert loss.item() == pytest.approx(expected, abs=1e-9)


# --- directional -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_ideal_score_order_has_lower_loss_than_reversed_order(name):
    labels = [3.0, 2.0, 1.0, 0.0]
    ideal = [3.0, 2.0, 1.0, 0.0]
    reversed_scores = [0.0, 1.0, 2.0, 3.0]
    fn = LOSSES[name]
    assert fn(*slate(ideal, labels)).item() < fn(*slate(reversed_scores, labels)).item()


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_gradient_pushes_up_a_relevant_document_ranked_below_an_irrelevant_one(name):
    # doc0 is relevant but scored below doc1; doc2 is irrelevant and low
    _, grad = value_and_grad(LOSSES[name], *slate([0.0, 1.0, -1.0], [2.0, 0.0, 0.0]))
    assert grad[0, 0].item() < 0  # gradient descent raises the relevant score
    assert grad[0, 1].item() > 0  # and lowers the wrongly-ranked irrelevant one


# --- edge cases ------------------------------------------------------------------------

EDGE_CASES = {
    "single_document": ([0.7], [2.0]),
    "all_equal_labels": ([0.1, -0.4, 2.0], [2.0, 2.0, 2.0]),
    "all_zero_labels": ([0.1, -0.4, 2.0], [0.0, 0.0, 0.0]),
    "scores_plus_minus_1e4": ([1e4, -1e4, 1e4, -1e4], [0.0, 3.0, 1.0, 2.0]),
    "equal_scores_1e4": ([1e4, 1e4, 1e4], [1.0, 0.0, 2.0]),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_loss_and_gradient_are_finite_on_edge_cases(name, case, dtype):
    scores, labels = EDGE_CASES[case]
    loss, grad = value_and_grad(LOSSES[name], *slate(scores, labels, dtype=dtype))
    assert loss.dim() == 0
    assert torch.isfinite(loss)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_loss_and_gradient_are_finite_with_extreme_garbage_in_padded_slots(name):
    s = torch.tensor([[1.0, -2.0, 3e38, -3e38]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, PADDED_Y_VALUE, PADDED_Y_VALUE]])
    loss, grad = value_and_grad(LOSSES[name], s, y, y >= 0)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert torch.all(grad[0, 2:] == 0)


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("ranknet", [1.0, 1.0, 1.0]),
        ("ranknet", [2.0]),
        ("lambdarank", [1.0, 1.0, 1.0]),
        ("lambdarank", [0.0, 0.0]),
        ("approxndcg", [0.0, 0.0, 0.0]),
    ],
)
def test_batch_where_no_query_contributes_returns_a_differentiable_zero(name, labels):
    s, y, m = slate([0.5 * i for i in range(len(labels))], labels)
    loss, grad = value_and_grad(LOSSES[name], s, y, m)
    assert loss.item() == 0.0
    assert loss.requires_grad
    assert torch.all(grad == 0)


@pytest.mark.parametrize(
    ("name", "undefined_labels"),
    [
        ("ranknet", [1.0, 1.0, PADDED_Y_VALUE]),
        ("lambdarank", [0.0, 0.0, 0.0]),
        ("lambdarank", [2.0, 2.0, PADDED_Y_VALUE]),
        ("approxndcg", [0.0, 0.0, PADDED_Y_VALUE]),
    ],
)
def test_queries_where_loss_is_undefined_are_excluded_from_the_mean(name, undefined_labels):
    s = torch.tensor([[1.0, 2.0, 0.0], [0.3, -0.2, 5.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([Y3, undefined_labels], dtype=torch.float64)
    loss = LOSSES[name](s, y, y >= 0)
    alone = LOSSES[name](*slate(S3, Y3))
    assert loss.item() == pytest.approx(alone.item(), abs=1e-12)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_fully_padded_query_is_excluded_from_the_mean(name):
    s = torch.tensor([[1.0, 2.0, 0.0], [7.0, -7.0, 1e4]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([Y3, [PADDED_Y_VALUE] * 3], dtype=torch.float64)
    loss, grad = value_and_grad(LOSSES[name], s, y, y >= 0)
    alone = LOSSES[name](*slate(S3, Y3))
    assert loss.item() == pytest.approx(alone.item(), abs=1e-12)
    assert torch.all(grad[1] == 0)


# --- ListMLE tie-breaking ----------------------------------------------------------------


def test_listmle_with_tied_labels_equals_one_tie_consistent_permutation_nll():
    scores = [0.4, -1.0, 2.0]
    labels = [1.0, 1.0, 0.0]  # valid orders: (0, 1, 2) and (1, 0, 2)
    candidates = {plackett_luce_nll(scores, o) for o in [(0, 1, 2), (1, 0, 2)]}
    seen = set()
    for seed in range(20):
        value = listmle_loss(*slate(scores, labels), seed=seed).item()
        match = [c for c in candidates if abs(c - value) < 1e-12]
        assert match, value
        seen.add(match[0])
    assert seen == candidates  # ties really are broken both ways


def test_listmle_tie_breaking_is_reproducible_under_manual_seed_and_seed_param():
    scores = [0.4, -1.0, 2.0, 0.3, 0.0, -0.5]
    labels = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    torch.manual_seed(123)
    first = listmle_loss(*slate(scores, labels)).item()
    torch.manual_seed(123)
    second = listmle_loss(*slate(scores, labels)).item()
    assert first == second
    seeded = {listmle_loss(*slate(scores, labels), seed=7).item() for _ in range(5)}
    assert len(seeded) == 1


# --- registry and validation -------------------------------------------------------------


def test_registry_holds_exactly_the_five_losses():
    assert set(LOSSES) == {"ranknet", "lambdarank", "listnet", "listmle", "approxndcg"}


def test_get_loss_rejects_an_unknown_name_listing_the_valid_ones():
    with pytest.raises(ValueError, match="unknown loss 'ranknett'") as excinfo:
        get_loss("ranknett")
    for name in LOSSES:
        assert name in str(excinfo.value)


def test_get_loss_rejects_an_unknown_parameter_naming_it():
    with pytest.raises(ValueError, match="sigmaa"):
        get_loss("ranknet", sigmaa=2.0)
    with pytest.raises(ValueError, match="alpha"):
        get_loss("listnet", alpha=1.0)


def test_get_loss_does_not_accept_tensor_arguments_as_parameters():
    with pytest.raises(ValueError, match="scores"):
        get_loss("ranknet", scores=1.0)


def test_get_loss_binds_parameters():
    s, y, m = slate(S3, Y3)
    bound = get_loss("ranknet", sigma=2.0)
    assert bound(s, y, m).item() == ranknet_loss(s, y, m, sigma=2.0).item()
    assert get_loss("lambdarank", k=2)(s, y, m).item() == lambdarank_loss(s, y, m, k=2).item()


def test_loss_params_lists_each_loss_defaults():
    assert loss_params("ranknet") == {"sigma": 1.0}
    assert loss_params("lambdarank") == {"sigma": 1.0, "k": None}
    assert loss_params("listnet") == {"temperature": 1.0, "label_transform": "identity"}
    assert loss_params("listmle") == {"seed": None, "normalize": False}
    assert loss_params("approxndcg") == {"alpha": 1.0}


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("ranknet", {"sigma": 0.0}),
        ("lambdarank", {"sigma": -1.0}),
        ("lambdarank", {"k": 0}),
        ("lambdarank", {"k": 2.5}),
        ("listnet", {"temperature": 0.0}),
        ("listnet", {"label_transform": "softmax"}),
        ("listmle", {"seed": "7"}),
        ("listmle", {"normalize": "yes"}),
        ("approxndcg", {"alpha": float("nan")}),
    ],
)
def test_invalid_parameter_values_raise_value_error(name, params):
    with pytest.raises(ValueError):
        get_loss(name, **params)(*slate(S3, Y3))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_malformed_inputs_raise_value_error(name):
    fn = LOSSES[name]
    s, y, m = slate(S3, Y3)
    with pytest.raises(ValueError, match="same shape"):
        fn(s, y[:, :2], m)
    with pytest.raises(ValueError, match="batch, list_len"):
        fn(s[0], y[0], m[0])
    with pytest.raises(ValueError, match="bool"):
        fn(s, y, m.float())
