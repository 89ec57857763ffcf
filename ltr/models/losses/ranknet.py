"""RankNet (Burges et al., 2005): pairwise logistic loss over correctly-ordered label pairs."""

from __future__ import annotations

import logging

import torch.nn.functional as F
from torch import Tensor

from ltr.models.losses.base import check_inputs, mean_over_queries, pair_mask, require_positive

logger = logging.getLogger(__name__)


def ranknet_loss(scores: Tensor, labels: Tensor, mask: Tensor, *, sigma: float = 1.0) -> Tensor:
    """Mean over queries of the mean pairwise logistic loss.

    Shapes: ``scores: [batch, list_len]`` float, ``labels: [batch, list_len]`` float (graded
    relevance >= 0, padded slots ``PADDED_Y_VALUE``), ``mask: [batch, list_len]`` bool (True
    for real documents). Returns a scalar.

    For query q with pair set ``P_q = {(i, j): i, j real, y_i > y_j}``::

        loss_q = 1/|P_q| * Σ_{(i,j) ∈ P_q} softplus(-sigma * (s_i - s_j))
        loss   = mean of loss_q over queries with |P_q| > 0

    Queries without a pair (one document, all labels equal) contribute nothing.
    """
    labels = check_inputs(scores, labels, mask)
    require_positive("sigma", sigma)
    pairs = pair_mask(labels, mask)
    diff = scores.unsqueeze(2) - scores.unsqueeze(1)  # [b, i, j] = s_i - s_j
    pair_losses = F.softplus(-sigma * diff).where(pairs, 0.0)
    n_pairs = pairs.sum(dim=(1, 2))
    per_query = pair_losses.sum(dim=(1, 2)) / n_pairs.clamp(min=1).to(scores.dtype)
    return mean_over_queries(per_query, n_pairs > 0)
