"""Seeded click models: simulated users who click on ranked lists, with graded labels as truth.

Two models, both standard in the click-model literature (Chuklin, Markov & de Rijke, *Click
Models for Web Search*, 2015):

* **Position-based (PBM)**: a document at rank ``r`` (1-based) is examined with probability
  ``theta_r = (1 / r) ** eta`` and clicked, once examined, with probability ``alpha(label)``;
  examination and attraction are independent, so ``P(click) = theta_r * alpha(label)``.
* **Cascade**: the user scans from the top; at each document she clicks with probability
  ``alpha(label)`` and stops after the first click (or at the end of the list).

Attraction from a graded label ``g`` with top grade ``G``:
``alpha(g) = noise + (1 - 2 * noise) * (2**g - 1) / (2**G - 1)``: a perfect document is
clicked with ``1 - noise`` when examined, an irrelevant one with ``noise`` (``noise`` = 0.1 by
default: users click on bad results too). Every draw comes from one
``numpy.random.Generator`` (PCG64) seeded by the caller, so a run can be replayed exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

ClickModelName = Literal["pbm", "cascade"]
CLICK_MODELS: tuple[ClickModelName, ...] = ("pbm", "cascade")


@dataclass(frozen=True)
class ClickModel:
    """A click model: ``kind`` is ``"pbm"`` or ``"cascade"``; see the module docstring."""

    kind: ClickModelName = "pbm"
    eta: float = 1.0
    noise: float = 0.1
    max_grade: int = 2

    def __post_init__(self) -> None:
        if self.kind not in CLICK_MODELS:
            raise ValueError(f"click model must be one of {CLICK_MODELS}, got {self.kind!r}")
        if not (self.eta >= 0 and np.isfinite(self.eta)):
            raise ValueError(f"eta must be a finite number >= 0, got {self.eta}")
        if not 0 <= self.noise < 0.5:
            raise ValueError(f"noise must lie in [0, 0.5), got {self.noise}")
        if self.max_grade < 1:
            raise ValueError(f"max_grade must be >= 1, got {self.max_grade}")

    def examination(self, n: int) -> np.ndarray:
        """``theta_r`` for ranks 1..n (PBM's examination probabilities; all 1 for cascade)."""
        ranks = np.arange(1, n + 1, dtype=np.float64)
        if self.kind == "cascade":
            return np.ones(n)
        return np.power(1.0 / ranks, self.eta)

    def attraction(self, labels: Sequence[float] | np.ndarray) -> np.ndarray:
        """``alpha(label)`` per document; labels are clipped to ``[0, max_grade]``."""
        g = np.clip(np.asarray(labels, dtype=np.float64), 0, self.max_grade)
        gain = (np.power(2.0, g) - 1.0) / (2.0**self.max_grade - 1.0)
        return self.noise + (1.0 - 2.0 * self.noise) * gain

    def click_probabilities(self, labels: Sequence[float] | np.ndarray) -> np.ndarray:
        """Marginal click probability per shown position (labels in shown order)."""
        alpha = self.attraction(labels)
        if self.kind == "pbm":
            return self.examination(len(alpha)) * alpha
        # cascade: reached position r only if no click above it
        reach = np.concatenate(([1.0], np.cumprod(1.0 - alpha)[:-1]))
        return reach * alpha

    def clicks(self, labels: Sequence[float] | np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Clicked positions (0-based, ascending) for one list shown with these labels."""
        alpha = self.attraction(labels)
        n = len(alpha)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        u = rng.random(n)
        if self.kind == "pbm":
            return np.flatnonzero(u < self.examination(n) * alpha)
        hits = np.flatnonzero(u < alpha)
        return hits[:1]
