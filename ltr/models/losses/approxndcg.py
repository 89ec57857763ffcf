"""ApproxNDCG (Qin, Liu & Li, 2010): NDCG with ranks replaced by a smooth sigmoid count."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from ltr.models.losses.base import (
    check_inputs,
    gains,
    ideal_dcg,
    mean_over_queries,
    require_positive,
)

logger = logging.getLogger(__name__)


def approxndcg_loss(scores: Tensor, labels: Tensor, mask: Tensor, *, alpha: float = 1.0) -> Tensor:
    """Mean over queries of ``1 - ApproxNDCG``.

    Shapes: ``scores: [batch, list_len]`` float, ``labels: [batch, list_len]`` float (graded
    relevance >= 0, padded slots ``PADDED_Y_VALUE``), ``mask: [batch, list_len]`` bool (True
    for real documents). Returns a scalar.

    For real documents i, j of query q (``alpha`` is the sigmoid temperature)::

        rank_i = 1 + Σ_{j ≠ i, j real} sigmoid((s_j - s_i) / alpha)
        loss_q = 1 - Σ_i (2^{y_i} - 1) / log2(1 + rank_i) / IDCG_q
        loss   = mean of loss_q over queries with IDCG_q > 0

    Queries with no positive label (IDCG = 0) contribute nothing.
    """
    labels = check_inputs(scores, labels, mask)
    require_positive("alpha", alpha)
    list_len = scores.shape[-1]
    others = mask.unsqueeze(2) & mask.unsqueeze(1)
    others = others & ~torch.eye(list_len, dtype=torch.bool, device=scores.device)
    diff = (scores.unsqueeze(1) - scores.unsqueeze(2)) / alpha  # [b, i, j] = (s_j - s_i)/alpha
    approx_ranks = 1.0 + torch.sigmoid(diff).where(others, 0.0).sum(dim=-1)
    dcg = (gains(labels, mask) / torch.log2(1.0 + approx_ranks)).sum(dim=-1)
    idcg = ideal_dcg(labels, mask)
    contributes = idcg > 0
    safe_idcg = torch.where(contributes, idcg, torch.ones_like(idcg))
    return mean_over_queries(1.0 - dcg / safe_idcg, contributes)
