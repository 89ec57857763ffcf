"""Read candidates' feature vectors through the Feast SDK (online stores read by no direct reader).

Same contract as :class:`~serving.features.redis_reader.RedisFeatureReader`, built on
``FeatureStore.get_online_features``; Feast (about 13 s and 370 MB to import) is imported
only when a reader is created, so the Redis path of the service never pays for it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from serving.features import FeatureStoreUnavailable
from serving.features.redis_reader import (
    DOC_JOIN_KEY,
    QUERY_JOIN_KEY,
    FeatureReadResult,
    FeatureViewSpec,
)

__all__ = ["SdkFeatureReader"]

logger = logging.getLogger(__name__)


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean the online store is unreachable or broken, not a caller mistake."""
    errors: list[type[BaseException]] = [OSError, sqlite3.Error]
    try:
        import redis

        errors.append(redis.RedisError)
    except ImportError:  # pragma: no cover - redis is a serving dependency
        pass
    return tuple(errors)


class SdkFeatureReader:
    """Reads ``views`` with ``FeatureStore.get_online_features`` (one call per request).

    ``repo_path_or_store`` is a Feast repository folder (holding ``feature_store.yaml``) or
    a ready ``feast.FeatureStore``.
    """

    def __init__(
        self,
        repo_path_or_store: str | os.PathLike[str] | Any,
        views: Sequence[FeatureViewSpec],
    ) -> None:
        from feast import FeatureStore

        if not views:
            raise ValueError("at least one feature view is required")
        names = [v.name for v in views]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature view names: {names}")
        if isinstance(repo_path_or_store, FeatureStore):
            self._store: Any = repo_path_or_store
        else:
            self._store = FeatureStore(repo_path=os.fspath(repo_path_or_store))
        self._views = tuple(views)
        self._refs = [f"{v.name}:{v.field}" for v in views]
        self._columns = [f"{v.name}__{v.field}" for v in views]
        join_keys = {k for v in views for k in v.join_keys}
        self._needs_query = QUERY_JOIN_KEY in join_keys
        self._needs_doc = DOC_JOIN_KEY in join_keys
        self._errors = _unavailable_errors()

    @property
    def views(self) -> tuple[FeatureViewSpec, ...]:
        return self._views

    def read(self, query_id: str, doc_ids: Sequence[str]) -> FeatureReadResult:
        """Vectors of every view for each candidate, in ``doc_ids`` order.

        Raises :class:`~serving.features.FeatureStoreUnavailable` when the store fails.
        """
        n = len(doc_ids)
        vectors: dict[str, npt.NDArray[np.float32]] = {}
        found: dict[str, npt.NDArray[np.bool_]] = {}
        if n == 0:
            for spec in self._views:
                vectors[spec.name] = np.empty((0, spec.dim), dtype=np.float32)
                found[spec.name] = np.zeros(0, dtype=np.bool_)
            return FeatureReadResult(vectors=vectors, found=found, missing=0)
        rows: dict[str, list[str]] = {}
        if self._needs_query:
            rows[QUERY_JOIN_KEY] = [query_id] * n
        if self._needs_doc:
            rows[DOC_JOIN_KEY] = list(doc_ids)
        try:
            response = self._store.get_online_features(
                features=self._refs, entity_rows=rows, full_feature_names=True
            ).to_dict()
        except self._errors as exc:
            raise FeatureStoreUnavailable(f"Feast online store read failed: {exc}") from exc
        missing = 0
        invalid = 0
        for spec, column in zip(self._views, self._columns, strict=True):
            view_vectors = np.full((n, spec.dim), np.nan, dtype=np.float32)
            view_found = np.zeros(n, dtype=np.bool_)
            for i, value in enumerate(response[column]):
                if value is None:
                    continue
                if len(value) != spec.dim:
                    invalid += 1
                    continue
                view_vectors[i] = value
                view_found[i] = True
            vectors[spec.name] = view_vectors
            found[spec.name] = view_found
            missing += n - int(np.count_nonzero(view_found))
        if invalid:
            logger.warning("%d stored values do not have their view's dimension", invalid)
        return FeatureReadResult(vectors=vectors, found=found, missing=missing, invalid=invalid)
