"""The validation policy (what raw ranking data must satisfy) and its error."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ltr.validation.report import ValidationReport


@dataclass(frozen=True)
class ValidationPolicy:
    """What raw ranking data must satisfy.

    label_set:            allowed labels, e.g. ``(0, 1, 2)``; None: any non-negative integer.
    min/max_docs_per_query: bounds on the list length of every query.
    feature_min/max:      bounds on every (non-missing) feature value, e.g. 0 and 1 for
                          LETOR's QueryLevelNorm files; None: unbounded.
    allow_duplicate_docs: whether a (qid, doc_id) pair may occur twice.
    n_features:           expected number of feature columns; None: not checked.
    max_missing_fraction: NULL / NaN / inf feature cells allowed, as a fraction of all cells.
    """

    label_set: tuple[float, ...] | None = None
    min_docs_per_query: int = 1
    max_docs_per_query: int = 5000
    feature_min: float | None = None
    feature_max: float | None = None
    allow_duplicate_docs: bool = False
    n_features: int | None = None
    max_missing_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.label_set is not None:
            if not self.label_set or not all(math.isfinite(v) for v in self.label_set):
                raise ValueError(f"label_set must hold finite numbers, got {self.label_set}")
            object.__setattr__(self, "label_set", tuple(float(v) for v in self.label_set))
        if not 1 <= self.min_docs_per_query <= self.max_docs_per_query:
            raise ValueError(
                "need 1 <= min_docs_per_query <= max_docs_per_query, got "
                f"{self.min_docs_per_query}, {self.max_docs_per_query}"
            )
        lo, hi = self.feature_min, self.feature_max
        if any(v is not None and not math.isfinite(v) for v in (lo, hi)):
            raise ValueError(f"feature bounds must be finite, got {lo}, {hi}")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"feature_min {lo} is above feature_max {hi}")
        if self.n_features is not None and self.n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {self.n_features}")
        if not 0.0 <= self.max_missing_fraction <= 1.0:
            raise ValueError(
                f"max_missing_fraction must be in [0, 1], got {self.max_missing_fraction}"
            )


class DataValidationError(ValueError):
    """Data failed validation; the message has one line per failed expectation."""

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report
