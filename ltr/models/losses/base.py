"""Shared pieces of the ranking losses: input checks, masks, masked reductions, DCG terms.

Padding convention (see ``ltr.models.constants``): ``mask: [batch, list_len]`` is bool and
True for real documents; padded labels hold ``PADDED_Y_VALUE``; padded scores may hold any
finite value. Every helper here selects real entries with ``torch.where`` (never by
multiplying with the mask), so garbage in padded slots reaches neither values nor gradients,
and no ``-inf`` ever enters arithmetic (only ``torch.sort`` keys), so nothing can become
``inf - inf``.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from ltr.models.constants import PADDED_Y_VALUE

logger = logging.getLogger(__name__)


def padding_mask(labels: Tensor) -> Tensor:
    """Mask of real documents recovered from labels.

    ``labels: [batch, list_len]`` -> ``[batch, list_len]`` bool, ``labels != PADDED_Y_VALUE``.
    """
    return labels != PADDED_Y_VALUE


def check_inputs(scores: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Validate a loss's inputs and return ``labels`` cast to ``scores.dtype``.

    ``scores``, ``labels``: ``[batch, list_len]`` float; ``mask``: ``[batch, list_len]`` bool.
    Raises ``ValueError`` on a wrong rank, mismatched shapes or a non-bool mask.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [batch, list_len], got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating-point tensor, got {scores.dtype}")
    if labels.shape != scores.shape or mask.shape != scores.shape:
        raise ValueError(
            "scores, labels and mask must have the same shape, got "
            f"{tuple(scores.shape)}, {tuple(labels.shape)}, {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True for real documents), got {mask.dtype}")
    return labels.to(scores.dtype)


def require_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def pair_mask(labels: Tensor, mask: Tensor) -> Tensor:
    """Pairs ``(i, j)`` of real documents with ``label_i > label_j``.

    ``labels``, ``mask``: ``[batch, list_len]`` -> ``[batch, list_len, list_len]`` bool,
    element ``[b, i, j]`` True when doc i of query b is strictly more relevant than doc j.
    """
    both_real = mask.unsqueeze(2) & mask.unsqueeze(1)
    return both_real & (labels.unsqueeze(2) > labels.unsqueeze(1))


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """``log Σ_{mask} exp(x)`` along ``dim`` (reduced away); 0 where ``dim`` has no real entry.

    Shifted by the (detached) maximum over real entries, so it is finite and exact for any
    finite ``x``; masked entries get exactly zero gradient.
    """
    lowest = torch.finfo(x.dtype).min
    has_real = mask.any(dim=dim, keepdim=True)
    shift = torch.where(mask, x, lowest).amax(dim=dim, keepdim=True).detach()
    shift = torch.where(has_real, shift, torch.zeros_like(shift))
    # exp(lowest) == 0: the fill is only ever exponentiated, never subtracted from.
    total = torch.exp(torch.where(mask, x - shift, lowest)).sum(dim=dim, keepdim=True)
    total = torch.where(has_real, total, torch.ones_like(total))
    return (shift + torch.log(total)).squeeze(dim)


def masked_log_softmax(x: Tensor, mask: Tensor) -> Tensor:
    """``log softmax`` over the real entries of the last dim; 0 in masked slots.

    ``x``, ``mask``: ``[batch, list_len]`` -> ``[batch, list_len]``.
    """
    lse = masked_logsumexp(x, mask, dim=-1).unsqueeze(-1)
    return torch.where(mask, x - lse, torch.zeros_like(x))


def gains(labels: Tensor, mask: Tensor) -> Tensor:
    """DCG gains ``2^y - 1`` of real documents, 0 in padded slots. ``[batch, list_len]``."""
    real_labels = torch.where(mask, labels, torch.zeros_like(labels))
    return torch.where(mask, torch.exp2(real_labels) - 1.0, torch.zeros_like(labels))


def discounts(ranks: Tensor) -> Tensor:
    """DCG discounts ``1 / log2(1 + rank)`` for 1-based ``ranks`` (any shape)."""
    return 1.0 / torch.log2(1.0 + ranks)


def ranks_by_scores(scores: Tensor, mask: Tensor) -> Tensor:
    """1-based rank of every document when its query is sorted by score, descending.

    ``scores``, ``mask``: ``[batch, list_len]`` -> ``[batch, list_len]`` long. Padded slots are
    pushed after every real document (their ranks exceed the number of real documents);
    tied scores keep index order (stable sort), so padding never reorders real documents.
    """
    # -inf is only a sort key here, never used in arithmetic.
    keys = torch.where(mask, scores, torch.full_like(scores, -math.inf))
    order = torch.sort(keys, dim=-1, descending=True, stable=True).indices
    positions = torch.arange(1, scores.shape[-1] + 1, device=scores.device)
    positions = positions.expand_as(order).contiguous()
    return torch.empty_like(order).scatter_(-1, order, positions)


def ideal_dcg(labels: Tensor, mask: Tensor, k: int | None = None) -> Tensor:
    """DCG (optionally @k) of the ideal ordering of each query's real documents.

    ``labels``, ``mask``: ``[batch, list_len]`` -> ``[batch]``; 0 when no real document has a
    positive label.
    """
    sorted_gains = torch.sort(gains(labels, mask), dim=-1, descending=True).values
    ranks = torch.arange(1, labels.shape[-1] + 1, device=labels.device, dtype=labels.dtype)
    disc = discounts(ranks)
    if k is not None:
        disc = torch.where(ranks <= k, disc, torch.zeros_like(disc))
    return (sorted_gains * disc).sum(dim=-1)


def mean_over_queries(per_query: Tensor, contributes: Tensor) -> Tensor:
    """Mean of ``per_query: [batch]`` over queries where ``contributes: [batch]`` is True.

    Non-contributing queries are dropped from both sum and count (``per_query`` must still be
    finite there). With no contributing query the result is a zero that stays attached to
    the graph, so ``backward()`` works and yields zero gradients.
    """
    selected = torch.where(contributes, per_query, torch.zeros_like(per_query))
    count = contributes.sum().clamp(min=1).to(per_query.dtype)
    return selected.sum() / count
