"""ListMLE (Xia et al., 2008): Plackett–Luce likelihood of the ground-truth permutation."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from ltr.models.losses.base import check_inputs, mean_over_queries

logger = logging.getLogger(__name__)


def _ground_truth_order(labels: Tensor, mask: Tensor, generator: torch.Generator | None) -> Tensor:
    """Indices ``[batch, list_len]``: padded slots first, then real docs by label descending.

    Ties among equal labels are broken uniformly at random (shuffle, then stable sort).
    Putting padded slots first means every suffix that starts at a real position contains
    real documents only.
    """
    noise = torch.rand(labels.shape, generator=generator, device=labels.device)
    shuffle = torch.argsort(noise, dim=-1)
    shuffled_labels = labels.gather(-1, shuffle)
    shuffled_mask = mask.gather(-1, shuffle)
    # -inf is only a sort key (padded first in ascending order of -label).
    keys = torch.where(shuffled_mask, -shuffled_labels, torch.full_like(labels, -float("inf")))
    order = torch.sort(keys, dim=-1, stable=True).indices
    return shuffle.gather(-1, order)


def listmle_loss(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    seed: int | None = None,
    normalize: bool = False,
) -> Tensor:
    """Mean over queries of the Plackett–Luce negative log-likelihood of the true order.

    Shapes: ``scores: [batch, list_len]`` float, ``labels: [batch, list_len]`` float (graded
    relevance >= 0, padded slots ``PADDED_Y_VALUE``), ``mask: [batch, list_len]`` bool (True
    for real documents). Returns a scalar.

    With π the real documents of query q sorted by label descending (n_q of them)::

        loss_q = Σ_{p=1}^{n_q} [ log Σ_{p'=p}^{n_q} exp(s_π(p')) - s_π(p) ]
        loss_q /= n_q                       (only when normalize=True)
        loss   = mean of loss_q over queries with at least one real document

    Padded documents take part in no log-sum-exp. Ties are broken at random: from the
    global RNG when ``seed`` is None (reproducible under ``torch.manual_seed``), else from a
    generator seeded with ``seed`` on every call (the same tie order each call). The random
    draw depends on the tensor layout, so with tied labels a differently padded batch may
    break ties differently.
    """
    labels = check_inputs(scores, labels, mask)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an int or None, got {seed!r}")
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be a bool, got {normalize!r}")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=scores.device)
        generator.manual_seed(seed)
    order = _ground_truth_order(labels, mask, generator)
    sorted_scores = scores.gather(-1, order)
    sorted_mask = mask.gather(-1, order)
    # Shift by the (detached) max real score: keeps logcumsumexp near 0 for precision.
    lowest = torch.finfo(scores.dtype).min
    shift = torch.where(mask, scores, lowest).amax(dim=-1, keepdim=True).detach()
    shift = torch.where(mask.any(dim=-1, keepdim=True), shift, torch.zeros_like(shift))
    shifted = sorted_scores - shift
    # Suffix log-sum-exp; padded slots sit before every real one, so never inside a suffix
    # that starts at a real position.
    suffix_lse = torch.logcumsumexp(shifted.flip(-1), dim=-1).flip(-1)
    per_doc = (suffix_lse - shifted).where(sorted_mask, 0.0)
    n_real = mask.sum(dim=-1)
    per_query = per_doc.sum(dim=-1)
    if normalize:
        per_query = per_query / n_real.clamp(min=1).to(scores.dtype)
    return mean_over_queries(per_query, n_real > 0)
