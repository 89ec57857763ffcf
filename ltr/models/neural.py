"""Neural scorers: a per-document MLP and a listwise self-attention scorer.

Both take ``features: [batch, list_len, n_features]`` and ``mask: [batch, list_len]``
(True for real documents) and return ``scores: [batch, list_len]``. Input normalisation
(mean / std fitted on the training set) lives inside the model as buffers, so an exported
graph takes raw features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


class FeatureNormalizer(nn.Module):
    """(x - mean) / std with statistics fitted on training features; constant columns pass."""

    mean: Tensor
    inv_std: Tensor

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("inv_std", torch.ones(n_features))

    def fit(self, features: np.ndarray) -> FeatureNormalizer:
        x = np.asarray(features, dtype=np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        inv = np.where(std > 1e-12, 1.0 / np.where(std > 1e-12, std, 1.0), 1.0)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.inv_std.copy_(torch.as_tensor(inv, dtype=torch.float32))
        return self

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) * self.inv_std


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; valid: {', '.join(sorted(_ACTIVATIONS))}"
        ) from None


class MLPScorer(nn.Module):
    """Scores each document independently: normaliser -> [Linear, act, dropout]* -> Linear(1)."""

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        activation: str = "relu",
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.normalizer = FeatureNormalizer(n_features)
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.LayerNorm(h))
            layers.append(_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """features: [batch, list_len, n_features] -> scores: [batch, list_len]."""
        return self.net(self.normalizer(features)).squeeze(-1)


class _SelfAttentionBlock(nn.Module):
    """Pre-norm Transformer block written with plain ops so it exports with dynamic list length.

    x: [batch, list_len, d_model], key_bias: [batch, 1, 1, list_len] (0 for real, -1e9 for pad).
    """

    def __init__(self, d_model: int, n_heads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, dim_feedforward),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, d_model),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_bias: Tensor) -> Tensor:
        b, n, d = x.shape[0], x.shape[1], x.shape[2]
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        # [batch, heads, list_len, d_head]
        q = q.reshape(b, n, self.n_heads, self.d_head).transpose(1, 2)
        k = k.reshape(b, n, self.n_heads, self.d_head).transpose(1, 2)
        v = v.reshape(b, n, self.n_heads, self.d_head).transpose(1, 2)
        att = torch.matmul(q, k.transpose(-1, -2)) * (self.d_head**-0.5) + key_bias
        att = torch.softmax(att, dim=-1)
        h = torch.matmul(self.drop(att), v).transpose(1, 2).reshape(b, n, d)
        x = x + self.drop(self.out(h))
        return x + self.drop(self.ff(self.norm2(x)))


class AttentionScorer(nn.Module):
    """Listwise scorer: per-document embedding, self-attention over the list, linear head.

    Padded documents receive a -1e9 attention bias (finite, so no inf - inf), so the score
    of a real document does not depend on padding.
    """

    def __init__(
        self,
        n_features: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.normalizer = FeatureNormalizer(n_features)
        self.embed = nn.Sequential(nn.Linear(n_features, d_model), nn.GELU())
        self.blocks = nn.ModuleList(
            _SelfAttentionBlock(d_model, n_heads, dim_feedforward, dropout) for _ in range(n_layers)
        )
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, 1))

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """features: [batch, list_len, n_features], mask: [batch, list_len] -> [batch, list_len]."""
        if mask is not None:
            # Padded slots may hold anything; huge or non-finite values would reach real
            # documents through the attention (NaN * 0 = NaN), so zero them first.
            features = features.masked_fill(~mask.unsqueeze(-1), 0.0)
        h = self.embed(self.normalizer(features))
        if mask is None:
            key_bias = torch.zeros_like(h[:, :, 0]).unsqueeze(1).unsqueeze(1)
        else:
            key_bias = ((~mask).to(h.dtype) * -1e9).unsqueeze(1).unsqueeze(1)
        for block in self.blocks:
            h = block(h, key_bias)
        return self.head(h).squeeze(-1)


class SingleListWrapper(nn.Module):
    """Export view of a scorer: ``features [n_docs, n_features] -> scores [n_docs]`` (one list)."""

    def __init__(self, scorer: nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, features: Tensor) -> Tensor:
        return self.scorer(features.unsqueeze(0)).squeeze(0)


MODELS: dict[str, type[nn.Module]] = {"mlp": MLPScorer, "attention": AttentionScorer}


def build_model(name: str, n_features: int, params: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate a registered neural scorer by name."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown neural model {name!r}; valid: {', '.join(sorted(MODELS))}"
        ) from None
    try:
        return cls(n_features, **(params or {}))
    except TypeError as exc:
        raise ValueError(f"bad parameters for model {name!r}: {exc}") from None
