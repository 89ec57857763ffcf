"""Ranking losses for padded variable-length slates, looked up by name.

Every loss has the signature ``loss(scores, labels, mask, **params) -> Tensor`` with
``scores``, ``labels``: ``[batch, list_len]`` float, ``mask``: ``[batch, list_len]`` bool (True
for real documents; padded labels hold ``ltr.models.constants.PADDED_Y_VALUE``), and returns
the mean over queries of the per-query loss; queries where the loss is undefined are left
out of the mean.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor

from ltr.models.losses.approxndcg import approxndcg_loss
from ltr.models.losses.lambdarank import lambdarank_loss, lambdarank_weights
from ltr.models.losses.listmle import listmle_loss
from ltr.models.losses.listnet import listnet_loss
from ltr.models.losses.ranknet import ranknet_loss

LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]

LOSSES: dict[str, Callable[..., Tensor]] = {
    "ranknet": ranknet_loss,
    "lambdarank": lambdarank_loss,
    "listnet": listnet_loss,
    "listmle": listmle_loss,
    "approxndcg": approxndcg_loss,
}


def loss_params(name: str) -> dict[str, Any]:
    """The tunable parameters of loss ``name`` with their defaults."""
    fn = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def get_loss(name: str, **params: Any) -> LossFn:
    """Loss ``name`` with ``params`` bound, callable as ``loss(scores, labels, mask)``.

    Raises ``ValueError`` for an unknown name (listing the valid ones) or a parameter the
    loss does not take (naming it). Parameter values are checked when the loss is called.
    """
    fn = _lookup(name)
    valid = loss_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for loss {name!r}; "
            f"valid parameters: {', '.join(valid) or '(none)'}"
        )
    return functools.partial(fn, **params)


def _lookup(name: str) -> Callable[..., Tensor]:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}"
        ) from None


__all__ = [
    "LOSSES",
    "LossFn",
    "approxndcg_loss",
    "get_loss",
    "lambdarank_loss",
    "lambdarank_weights",
    "listmle_loss",
    "listnet_loss",
    "loss_params",
    "ranknet_loss",
]
