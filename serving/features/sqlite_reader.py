"""Read candidates' feature vectors straight from Feast's SQLite online store.

Feast 0.67 (``feast.infra.online_stores.sqlite``) keeps one table per feature view,
``"<project>_<view>"`` (``<view>_v<N>`` with online feature-view versioning), primary key
``(entity_key, feature_name)``: ``entity_key`` is the serialized entity key (the Redis key
without the project suffix, :mod:`serving.features.feast_layout`), ``value`` a serialized
``feast.types.Value``, ``event_ts``/``created_ts`` epoch seconds. The platform's
``LtrSqliteOnlineStore`` only decides which rows to write; the layout is Feast's.

No Feast, no protobuf: one ``SELECT ... WHERE feature_name = ? AND entity_key IN (...)`` per
view and request over a read-only connection (one per thread), and each view's values
decode with one ``np.frombuffer`` (:func:`~serving.features.feast_layout.decode_float_lists`).
Values equal ``FeatureStore.get_online_features`` on the same keys
(``tests/integration/test_sqlite_reader.py``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from serving.features import FeatureStoreUnavailable
from serving.features.feast_layout import (
    decode_float_lists,
    entity_key_prefix,
)
from serving.features.redis_reader import (
    QUERY_JOIN_KEY,
    FeatureReadResult,
    FeatureViewSpec,
    entity_keys,
)

__all__ = ["SQLITE_STORE_TYPES", "SqliteFeatureReader", "SqliteStoreLocation", "sqlite_location"]

logger = logging.getLogger(__name__)

#: ``online_store.type`` values whose tables have Feast's SQLite layout.
SQLITE_STORE_TYPES = frozenset(
    {
        "sqlite",
        "feast.infra.online_stores.sqlite.SqliteOnlineStore",
        "ltr.features.online_store.LtrSqliteOnlineStore",
    }
)
_DEFAULT_PATH = "data/online.db"  # SqliteOnlineStoreConfig.path
_DEFAULT_KEY_VERSION = 3  # RepoConfig.entity_key_serialization_version


@dataclass(frozen=True)
class SqliteStoreLocation:
    """Where a Feast repository keeps its SQLite online store, and how its keys are encoded."""

    path: Path
    project: str
    key_version: int


def sqlite_location(repo_path: str | os.PathLike[str]) -> SqliteStoreLocation | None:
    """The SQLite online store of the Feast repository ``repo_path``, from its
    ``feature_store.yaml`` (read with yaml, ``${VAR}`` expanded as Feast does); ``None`` when
    the file is absent or the online store is not SQLite.

    ``online_store.path`` is relative to the repository, as Feast resolves it.
    """
    import yaml

    repo = Path(repo_path)
    config_file = repo / "feature_store.yaml"
    try:
        text = config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    raw = yaml.safe_load(os.path.expandvars(text))
    if not isinstance(raw, dict):
        raise ValueError(f"{config_file}: expected a mapping")
    online: Any = raw.get("online_store", "sqlite")  # Feast's default online store
    if isinstance(online, str):
        online = {"type": online}
    if not isinstance(online, dict) or online.get("type") not in SQLITE_STORE_TYPES:
        return None
    project = raw.get("project")
    if not isinstance(project, str) or not project:
        raise ValueError(f"{config_file}: no project")
    path = Path(str(online.get("path") or _DEFAULT_PATH))
    return SqliteStoreLocation(
        path=path if path.is_absolute() else repo / path,
        project=project,
        key_version=int(raw.get("entity_key_serialization_version", _DEFAULT_KEY_VERSION)),
    )


@dataclass(frozen=True)
class _ViewQuery:
    spec: FeatureViewSpec
    table: str  # quoted
    prefix: bytes
    query_before_doc: bool


class _Connection:
    """One thread's read-only connection, with the identity of the file it opened."""

    def __init__(self, conn: sqlite3.Connection, file_id: tuple[int, int]) -> None:
        self.conn = conn
        self.file_id = file_id
        self.max_params = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


class SqliteFeatureReader:
    """Reads ``views`` for ``(query_id, doc_id)`` candidates, one query per view.

    ``path`` is the SQLite file of Feast's online store (see :func:`sqlite_location` and
    :meth:`from_repo`), ``project`` the Feast project. The file is opened read-only on first
    use in each thread and reopened when it is replaced; ``busy_timeout_s`` bounds the wait
    for a writer's lock before a read fails. Errors surface as
    :class:`~serving.features.FeatureStoreUnavailable`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        project: str,
        *,
        key_version: int,
        views: Sequence[FeatureViewSpec],
        busy_timeout_s: float = 0.05,
    ) -> None:
        if not views:
            raise ValueError("at least one feature view is required")
        names = [v.name for v in views]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature view names: {names}")
        if busy_timeout_s < 0:
            raise ValueError(f"busy_timeout_s must be >= 0, got {busy_timeout_s}")
        self._path = Path(path).absolute()
        self._uri = f"file:{urllib.parse.quote(str(self._path))}?mode=ro"
        self._project = project
        self._busy_timeout_s = busy_timeout_s
        self._views = tuple(self._query(v, project, key_version) for v in views)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[sqlite3.Connection] = []

    @classmethod
    def from_repo(
        cls,
        repo_path: str | os.PathLike[str],
        views: Sequence[FeatureViewSpec],
        *,
        busy_timeout_s: float = 0.05,
    ) -> SqliteFeatureReader:
        """A reader of the SQLite online store configured in ``repo_path/feature_store.yaml``.

        Raises ``ValueError`` when that repository's online store is not SQLite.
        """
        location = sqlite_location(repo_path)
        if location is None:
            raise ValueError(f"{repo_path}: the Feast online store is not SQLite")
        return cls(
            location.path,
            location.project,
            key_version=location.key_version,
            views=views,
            busy_timeout_s=busy_timeout_s,
        )

    @staticmethod
    def _query(spec: FeatureViewSpec, project: str, version: int) -> _ViewQuery:
        keys = sorted(spec.join_keys)  # Feast orders several join keys by name
        table = f"{project}_{spec.name}"
        return _ViewQuery(
            spec=spec,
            table='"' + table.replace('"', '""') + '"',
            prefix=entity_key_prefix(keys, version),
            query_before_doc=keys[0] == QUERY_JOIN_KEY,
        )

    @property
    def views(self) -> tuple[FeatureViewSpec, ...]:
        return tuple(v.spec for v in self._views)

    @property
    def path(self) -> Path:
        return self._path

    def keys(self, query_id: str, doc_ids: Sequence[str]) -> list[list[bytes]]:
        """The serialized entity keys read for each view (one per candidate, or one)."""
        return entity_keys(self._views, query_id, doc_ids)

    # ------------------------------------------------------------------ connections
    def _file_id(self) -> tuple[int, int]:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            raise FeatureStoreUnavailable(
                f"SQLite online store {self._path} does not exist "
                "(apply and materialize the Feast repository first)"
            ) from None
        except OSError as exc:
            raise FeatureStoreUnavailable(
                f"SQLite online store {self._path} cannot be read: {exc}"
            ) from exc
        return st.st_dev, st.st_ino

    def _connection(self) -> _Connection:
        file_id = self._file_id()
        current: _Connection | None = getattr(self._local, "conn", None)
        if current is not None and current.file_id == file_id:
            return current
        if current is not None:  # the file was replaced: read the new one
            self._drop(current)
        try:
            conn = sqlite3.connect(
                self._uri, uri=True, timeout=self._busy_timeout_s, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise FeatureStoreUnavailable(
                f"SQLite online store {self._path} cannot be opened: {exc}"
            ) from exc
        opened = _Connection(conn, file_id)
        self._local.conn = opened
        with self._lock:
            self._open.append(conn)
        return opened

    def _drop(self, current: _Connection) -> None:
        self._local.conn = None
        with self._lock:
            if current.conn in self._open:
                self._open.remove(current.conn)
        current.conn.close()

    def close(self) -> None:
        """Close every thread's connection (a later read opens a new one)."""
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def _fetch(self, view: _ViewQuery, keys: list[bytes]) -> list[bytes | None]:
        """The stored values of ``keys`` (``None`` where absent), in ``keys`` order."""
        current = self._connection()
        unique = list(dict.fromkeys(keys)) if len(keys) > 1 else keys
        step = max(1, current.max_params - 1)
        stored: dict[bytes, bytes] = {}
        try:
            for start in range(0, len(unique), step):
                chunk = unique[start : start + step]
                sql = (
                    f"SELECT entity_key, value FROM {view.table} "
                    f"WHERE feature_name = ? AND entity_key IN ({','.join('?' * len(chunk))})"
                )
                stored.update(current.conn.execute(sql, [view.spec.field, *chunk]).fetchall())
        except sqlite3.Error as exc:
            self._drop(current)
            raise FeatureStoreUnavailable(
                f"SQLite online store {self._path}, table {view.table}: {exc}"
            ) from exc
        return [stored.get(k) for k in keys]

    # ------------------------------------------------------------------ reads
    def read(self, query_id: str, doc_ids: Sequence[str]) -> FeatureReadResult:
        """Vectors of every view for each candidate, in ``doc_ids`` order.

        Raises :class:`~serving.features.FeatureStoreUnavailable` when the database is
        missing, locked beyond ``busy_timeout_s``, or lacks a view's table.
        """
        n = len(doc_ids)
        vectors: dict[str, npt.NDArray[np.float32]] = {}
        found: dict[str, npt.NDArray[np.bool_]] = {}
        if n == 0:
            for view in self._views:
                vectors[view.spec.name] = np.empty((0, view.spec.dim), dtype=np.float32)
                found[view.spec.name] = np.zeros(0, dtype=np.bool_)
            return FeatureReadResult(vectors=vectors, found=found, missing=0)
        missing = 0
        invalid = 0
        for view, view_keys in zip(self._views, self.keys(query_id, doc_ids), strict=True):
            spec = view.spec
            decoded = decode_float_lists(self._fetch(view, view_keys), spec.dim)
            view_vectors, view_found = decoded.vectors, decoded.found
            if not spec.per_document:
                view_vectors = np.repeat(view_vectors, n, axis=0)
                view_found = np.repeat(view_found, n)
            vectors[spec.name] = view_vectors
            found[spec.name] = view_found
            missing += n - int(np.count_nonzero(view_found))
            if decoded.invalid:
                logger.warning(
                    "feature view %s: %d stored values are not %d-float lists",
                    spec.name,
                    decoded.invalid,
                    spec.dim,
                )
            invalid += decoded.invalid * (1 if spec.per_document else n)
        return FeatureReadResult(vectors=vectors, found=found, missing=missing, invalid=invalid)
