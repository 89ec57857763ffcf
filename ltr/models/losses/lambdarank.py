"""LambdaRank (Burges, 2010): pairwise logistic loss weighted by |ΔNDCG| of swapping the pair.

The weights are computed without gradient from the current ranking, so the gradient of
this loss w.r.t. ``s_i`` is exactly the LambdaRank lambda
``-sigma * |ΔNDCG_ij| / (1 + exp(sigma * (s_i - s_j)))`` summed over i's pairs.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from ltr.models.losses.base import (
    check_inputs,
    discounts,
    gains,
    ideal_dcg,
    mean_over_queries,
    pair_mask,
    ranks_by_scores,
    require_positive,
)

logger = logging.getLogger(__name__)


def _check_k(k: int | None) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive int or None, got {k!r}")


def lambdarank_weights(
    scores: Tensor, labels: Tensor, mask: Tensor, *, k: int | None = None
) -> Tensor:
    """|ΔNDCG@k| of swapping documents i and j in the current ranking (no gradient).

    Shapes: ``scores``, ``labels``: ``[batch, list_len]`` float, ``mask``: ``[batch, list_len]``
    bool -> ``[batch, list_len, list_len]``, symmetric, 0 on the diagonal, for padded documents
    and for queries whose ideal DCG@k is 0.

    The current ranking sorts real documents by score (descending, ties by index), padded
    slots after them. With gain ``G = 2^y - 1``, discount ``D(r) = 1/log2(1 + r)`` for
    ``r <= k`` and 0 beyond (no truncation when ``k`` is None)::

        w_ij = |G_i - G_j| * |D(r_i) - D(r_j)| / IDCG@k

    which is exactly the change in NDCG@k when i and j trade places; with ``k`` set, a pair
    gets weight only if at least one of the two is in the current top k.
    """
    labels = check_inputs(scores, labels, mask)
    _check_k(k)
    with torch.no_grad():
        scores = scores.detach()
        gain = gains(labels, mask)
        ranks = ranks_by_scores(scores, mask)
        disc = discounts(ranks.to(scores.dtype))
        if k is not None:
            disc = torch.where(ranks <= k, disc, torch.zeros_like(disc))
        idcg = ideal_dcg(labels, mask, k)
        safe_idcg = torch.where(idcg > 0, idcg, torch.ones_like(idcg))
        delta = (gain.unsqueeze(2) - gain.unsqueeze(1)).abs()
        delta = delta * (disc.unsqueeze(2) - disc.unsqueeze(1)).abs()
        delta = delta / safe_idcg[:, None, None]
        keep = mask.unsqueeze(2) & mask.unsqueeze(1) & (idcg > 0)[:, None, None]
        return torch.where(keep, delta, torch.zeros_like(delta))


def lambdarank_loss(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    sigma: float = 1.0,
    k: int | None = None,
) -> Tensor:
    """Mean over queries of the |ΔNDCG|-weighted pairwise logistic loss (summed over pairs).

    Shapes: ``scores: [batch, list_len]`` float, ``labels: [batch, list_len]`` float (graded
    relevance >= 0, padded slots ``PADDED_Y_VALUE``), ``mask: [batch, list_len]`` bool (True
    for real documents). Returns a scalar.

    For query q with pair set ``P_q = {(i, j): i, j real, y_i > y_j}`` and weights
    ``w_ij`` from :func:`lambdarank_weights` (already divided by the query's IDCG@k)::

        loss_q = Σ_{(i,j) ∈ P_q} w_ij * softplus(-sigma * (s_i - s_j))
        loss   = mean of loss_q over queries with |P_q| > 0

    Queries without a pair (one document, all labels equal, hence also all-zero labels,
    where IDCG = 0) contribute nothing. ``k`` truncates the weights to NDCG@k.
    """
    labels = check_inputs(scores, labels, mask)
    require_positive("sigma", sigma)
    weights = lambdarank_weights(scores, labels, mask, k=k)
    pairs = pair_mask(labels, mask)
    diff = scores.unsqueeze(2) - scores.unsqueeze(1)  # [b, i, j] = s_i - s_j
    pair_losses = (weights * F.softplus(-sigma * diff)).where(pairs, 0.0)
    per_query = pair_losses.sum(dim=(1, 2))
    return mean_over_queries(per_query, pairs.any(dim=2).any(dim=1))
