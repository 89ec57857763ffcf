"""Invariance tests: padding a slate never changes a loss or its gradients.

Padded slots carry ``PADDED_Y_VALUE`` labels, ``mask == False`` and garbage scores (huge or
random); the real documents' loss and gradients must match the unpadded computation.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltr.models.constants import PADDED_Y_VALUE
from ltr.models.losses import LOSSES

torch.set_num_threads(1)

ALL_LOSSES = sorted(LOSSES)
TOL = {"atol": 1e-6, "rtol": 1e-6}


def loss_is_defined(name: str, labels: list[float]) -> bool:
    """Independent statement of when a query contributes to the batch mean."""
    if name in ("ranknet", "lambdarank"):
        return len(set(labels)) > 1  # at least one pair with y_i > y_j
    if name == "approxndcg":
        return max(labels) > 0  # IDCG > 0
    return True  # listnet, listmle: any non-empty query


def make_batch(queries, list_len, garbage, dtype=torch.float64):
    """Pad ``queries`` (list of (scores, labels)) to ``list_len`` with garbage scores."""
    scores = torch.empty(len(queries), list_len, dtype=dtype)
    labels = torch.full((len(queries), list_len), PADDED_Y_VALUE, dtype=dtype)
    mask = torch.zeros(len(queries), list_len, dtype=torch.bool)
    for b, (s, y) in enumerate(queries):
        n = len(s)
        scores[b, :n] = torch.tensor(s, dtype=dtype)
        labels[b, :n] = torch.tensor(y, dtype=dtype)
        mask[b, :n] = True
        pad = list_len - n
        scores[b, n:] = torch.tensor([garbage[(b * 7 + i) % len(garbage)] for i in range(pad)])
    return scores.requires_grad_(True), labels, mask


def loss_and_grad(name, scores, labels, mask):
    loss = LOSSES[name](scores, labels, mask)
    (grad,) = torch.autograd.grad(loss, scores)
    return loss, grad


@st.composite
def padded_batches(draw, distinct_labels: bool):
    n_queries = draw(st.integers(1, 3))
    queries = []
    for _ in range(n_queries):
        n = draw(st.integers(1, 12))
        labels = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
        if distinct_labels:
            # ListMLE breaks label ties at random, and the draw depends on the layout
            labels = [y + i / 100 for i, y in enumerate(labels)]
        scores = draw(
            st.lists(
                st.floats(-5, 5, allow_nan=False, allow_infinity=False), min_size=n, max_size=n
            )
        )
        queries.append((scores, [float(y) for y in labels]))
    extra = draw(st.integers(0, 6))
    garbage = draw(
        st.lists(
            st.one_of(
                st.sampled_from([1e4, -1e4, 0.0]),
                st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False),
            ),
            min_size=1,
            max_size=6,
        )
    )
    return queries, extra, garbage


def check_padding_invariance(name, queries, extra, garbage):
    tight_len = max(len(s) for s, _ in queries)
    tight = make_batch(queries, tight_len, [0.5])
    loose = make_batch(queries, tight_len + extra, garbage)
    tight_loss, tight_grad = loss_and_grad(name, *tight)
    loose_loss, loose_grad = loss_and_grad(name, *loose)
    torch.testing.assert_close(loose_loss, tight_loss, **TOL)
    torch.testing.assert_close(loose_grad[:, :tight_len], tight_grad, **TOL)
    assert torch.all(loose_grad[~loose[2]] == 0)

    # the batch equals the mean of each query computed alone, unpadded
    singles = [loss_and_grad(name, *make_batch([q], len(q[0]), [0.0])) for q in queries]
    defined = [loss_is_defined(name, y) for _, y in queries]
    n_defined = sum(defined)
    expected = sum(v.item() for (v, _), d in zip(singles, defined, strict=True) if d)
    expected = expected / n_defined if n_defined else 0.0
    assert loose_loss.item() == pytest.approx(expected, abs=1e-6, rel=1e-6)
    for b, ((_, g), d) in enumerate(zip(singles, defined, strict=True)):
        n = g.shape[1]
        want = g[0] / n_defined if d else torch.zeros_like(g[0])
        torch.testing.assert_close(loose_grad[b, :n], want, **TOL)


HYPOTHESIS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", [n for n in ALL_LOSSES if n != "listmle"])
@HYPOTHESIS
@given(batch=padded_batches(distinct_labels=False))
def test_padding_changes_neither_loss_nor_gradients_of_real_scores(name, batch):
    check_padding_invariance(name, *batch)


@HYPOTHESIS
@given(batch=padded_batches(distinct_labels=True))
def test_listmle_padding_changes_neither_loss_nor_gradients_of_real_scores(batch):
    check_padding_invariance("listmle", *batch)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_padding_one_query_of_a_batch_of_two_changes_nothing(name):
    q_short = ([0.2, 1.5, -0.3], [1.0, 0.0, 2.0])
    q_long = ([0.1, -2.0, 0.7, 3.0, 1.1], [0.0, 3.0, 1.0, 2.0, 4.0])
    batch_loss, batch_grad = loss_and_grad(name, *make_batch([q_short, q_long], 5, [1e4, -1e4]))
    short_loss, short_grad = loss_and_grad(name, *make_batch([q_short], 3, [0.0]))
    long_loss, long_grad = loss_and_grad(name, *make_batch([q_long], 5, [0.0]))
    torch.testing.assert_close(batch_loss, (short_loss + long_loss) / 2, **TOL)
    torch.testing.assert_close(batch_grad[0, :3], short_grad[0] / 2, **TOL)
    torch.testing.assert_close(batch_grad[1], long_grad[0] / 2, **TOL)
    assert torch.all(batch_grad[0, 3:] == 0)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_float32_padding_with_huge_garbage_scores_changes_nothing(name):
    queries = [([0.2, 1.5, -0.3, 0.9], [1.0, 0.0, 2.0, 3.0]), ([2.0, -1.0], [0.0, 1.0])]
    garbage = [1e4, -1e4, 3e38, -3e38]
    tight_loss, tight_grad = loss_and_grad(name, *make_batch(queries, 4, [0.0], torch.float32))
    loose_loss, loose_grad = loss_and_grad(name, *make_batch(queries, 9, garbage, torch.float32))
    torch.testing.assert_close(loose_loss, tight_loss, **TOL)
    torch.testing.assert_close(loose_grad[:, :4], tight_grad, **TOL)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_padding_in_the_middle_of_a_list_changes_nothing(name):
    scores = [0.2, 1.5, -0.3, 0.9]
    labels = [1.0, 0.0, 2.0, 3.0]
    s_mid = torch.tensor([[0.2, 1e4, 1.5, -0.3, -1e4, 0.9]], requires_grad=True)
    y_mid = torch.tensor([[1.0, PADDED_Y_VALUE, 0.0, 2.0, PADDED_Y_VALUE, 3.0]])
    mid_loss, mid_grad = loss_and_grad(name, s_mid, y_mid, y_mid >= 0)
    s = torch.tensor([scores], requires_grad=True)
    y = torch.tensor([labels])
    loss, grad = loss_and_grad(name, s, y, y >= 0)
    torch.testing.assert_close(mid_loss, loss, **TOL)
    torch.testing.assert_close(mid_grad[0, [0, 2, 3, 5]], grad[0], **TOL)
