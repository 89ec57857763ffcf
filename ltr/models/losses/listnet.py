"""ListNet (Cao et al., 2007): top-one cross-entropy between label and score distributions."""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from ltr.models.losses.base import (
    check_inputs,
    masked_log_softmax,
    mean_over_queries,
    require_positive,
)

logger = logging.getLogger(__name__)

LABEL_TRANSFORMS = ("identity", "exp2")
"""``identity``: target = softmax(y) (the ListNet paper's φ = exp; allRank's default).
``exp2``: target = softmax(y · ln 2) = 2^y / Σ 2^y, mirroring the DCG gain."""


def listnet_loss(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    temperature: float = 1.0,
    label_transform: str = "identity",
) -> Tensor:
    """Mean over queries of the top-one ListNet cross-entropy.

    Shapes: ``scores: [batch, list_len]`` float, ``labels: [batch, list_len]`` float (graded
    relevance >= 0, padded slots ``PADDED_Y_VALUE``), ``mask: [batch, list_len]`` bool (True
    for real documents). Returns a scalar.

    Over the real documents R_q of query q (both softmaxes run over R_q only)::

        P_y = softmax(y)            (label_transform="identity", default)
        P_y = softmax(y * ln 2)     (label_transform="exp2")
        loss_q = - Σ_{i ∈ R_q} P_y(i) * log_softmax(s / temperature)(i)
        loss   = mean of loss_q over queries with at least one real document

    A one-document query contributes 0 (it is still counted in the mean).
    """
    labels = check_inputs(scores, labels, mask)
    require_positive("temperature", temperature)
    if label_transform not in LABEL_TRANSFORMS:
        raise ValueError(
            f"label_transform must be one of {', '.join(LABEL_TRANSFORMS)}; got {label_transform!r}"
        )
    label_logits = labels if label_transform == "identity" else labels * math.log(2.0)
    with torch.no_grad():
        target = torch.exp(masked_log_softmax(label_logits, mask)).where(mask, 0.0)
    log_pred = masked_log_softmax(scores / temperature, mask)
    per_query = -(target * log_pred).where(mask, 0.0).sum(dim=-1)
    return mean_over_queries(per_query, mask.any(dim=-1))
