"""The Feast feature store of the platform: configuration, ``apply`` and ``materialize``.

The store is configured from :class:`~ltr.settings.Settings`, not from
``feature_repo/feature_store.yaml`` (which serves the ``feast`` CLI on the default layout):

- registry ``<LTR_HOME>/feast/registry.db``; offline store: Parquet under
  ``<LTR_HOME>/feast/data`` (written by :func:`ltr.features.ingest.ingest_letor`);
- online store: Redis when ``LTR_REDIS_URL`` is set, else SQLite at
  ``<LTR_HOME>/feast/online.db``; Feast's own stores with a writer that keeps a row's
  ``(event, created)`` order (:mod:`ltr.features.online_store`), so a corrected day that is
  re-ingested reaches the online store and an unchanged re-run writes nothing.

The Feast objects come from the Python files of ``feature_repo/`` (the single definition
used by ``feast apply`` too). Feast is imported inside the functions: it takes seconds.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from ltr.features.compute_engine import ENGINE_TYPE
from ltr.features.definitions import (
    DOC_VIEW,
    ENTITY_KEY_SERIALIZATION_VERSION,
    EVENT_TIMESTAMP,
    OFFLINE_DIR,
    OFFLINE_FILES,
    QUERY_DOC_VIEW,
    REGISTRY_FILE,
    SQLITE_FILE,
    VIEW_JOIN_KEYS,
)
from ltr.features.offline_store import OFFLINE_STORE_TYPE
from ltr.features.online_store import ONLINE_STORE_TYPES, online_store_kind
from ltr.settings import Settings, get_settings
from ltr.utils.io import atomic_open

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig
    from feast.repo_contents import RepoContents

__all__ = [
    "apply",
    "feature_repo_path",
    "get_feature_store",
    "load_repo_contents",
    "materialize",
    "offline_dir",
    "redis_connection_string",
    "repo_config",
]

logger = logging.getLogger(__name__)

#: the Python files of feature_repo/, imported in this order (later ones import earlier ones)
_REPO_MODULES = ("entities", "data_sources", "feature_views", "feature_services")
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
PROJECT_DESCRIPTION = "Learning-to-rank features (query-document and document-only vectors)"


# ------------------------------------------------------------------------------ paths
def offline_dir(settings: Settings | None = None) -> Path:
    """``<LTR_HOME>/feast/data``: where ingestion writes and Feast reads (absolute)."""
    settings = settings or get_settings()
    return (settings.home / OFFLINE_DIR).resolve()


def feature_repo_path(settings: Settings | None = None) -> Path:
    """The ``feature_repo/`` folder: ``settings.feast_repo``, else the one beside ``ltr/``."""
    settings = settings or get_settings()
    path = settings.feast_repo.expanduser()
    candidates = [path] if path.is_absolute() else [path, _PACKAGE_ROOT / path]
    for candidate in candidates:
        if (candidate / "feature_views.py").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"feature repository {path} not found (no feature_views.py; set LTR_FEAST_REPO)"
    )


def redis_connection_string(url: str) -> str:
    """``redis://[user:password@]host:port/db`` -> Feast's ``host:port,db=N[,...]`` form.

    ``rediss://`` adds ``ssl=true``; a string already in Feast's form is returned as is.
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} in LTR_REDIS_URL")
    host = parts.hostname or "localhost"
    if ":" in host:  # IPv6 literal
        raise ValueError("IPv6 Redis hosts are not supported by Feast's connection string")
    db = parts.path.lstrip("/") or parse_qs(parts.query).get("db", ["0"])[0]
    if not db.isdigit():
        raise ValueError(f"bad Redis database {db!r} in LTR_REDIS_URL")
    out = [f"{host}:{parts.port or 6379}", f"db={int(db)}"]
    if parts.username:
        out.append(f"username={unquote(parts.username)}")
    if parts.password:
        out.append(f"password={unquote(parts.password)}")
    if parts.scheme == "rediss":
        out.append("ssl=true")
    return ",".join(out)


def _config_dict(settings: Settings, *, redact: bool = False) -> dict[str, Any]:
    home = settings.home.resolve()
    online: dict[str, Any]
    engine: dict[str, Any] = {}
    if settings.redis_url:
        conn = redis_connection_string(settings.redis_url)
        if redact:  # keep secrets out of files; Feast expands ${VAR} when it loads the yaml
            conn = ",".join(
                "password=${LTR_REDIS_PASSWORD}" if p.startswith("password=") else p
                for p in conn.split(",")
            )
        online = {"type": ONLINE_STORE_TYPES["redis"], "connection_string": conn}
        # Feast's local engine, writing views into Redis straight from Arrow
        # (ltr.features.compute_engine; anything it does not handle goes Feast's way)
        engine = {"batch_engine": {"type": ENGINE_TYPE}}
    else:
        online = {"type": ONLINE_STORE_TYPES["sqlite"], "path": str(home / SQLITE_FILE)}
    return {
        "project": settings.feast_project,
        "project_description": PROJECT_DESCRIPTION,
        "provider": "local",
        "registry": {
            "registry_type": "file",
            "path": str(home / REGISTRY_FILE),
            "cache_ttl_seconds": 60,
        },
        "online_store": online,
        # Feast's Dask file store, with materialization reads done by PyArrow (much faster
        # on array columns; see ltr.features.offline_store)
        "offline_store": {"type": OFFLINE_STORE_TYPE},
        **engine,
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
    }


def repo_config(settings: Settings | None = None) -> RepoConfig:
    """Feast's configuration for these settings (no file is read or written)."""
    from feast import RepoConfig

    settings = settings or get_settings()
    config = RepoConfig(**_config_dict(settings))
    config.repo_path = feature_repo_path(settings)
    return config


def get_feature_store(settings: Settings | None = None) -> FeatureStore:
    """A :class:`feast.FeatureStore` for these settings (SQLite, or Redis when configured)."""
    from feast import FeatureStore

    settings = settings or get_settings()
    config = repo_config(settings)
    return FeatureStore(repo_path=str(config.repo_path), config=config)


# ------------------------------------------------------------------------------ apply
@contextlib.contextmanager
def _feast_output_to_stderr() -> Iterator[None]:
    """Feast prints progress on stdout; keep stdout for the command's own (JSON) output."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def _repo_on_path(repo: Path) -> Iterator[None]:
    """Import feature_repo/ modules by their top-level names (as the feast CLI does)."""
    saved = {name: sys.modules.pop(name) for name in _REPO_MODULES if name in sys.modules}
    sys.path.insert(0, str(repo))
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ in the repository
    try:
        yield
    finally:
        sys.dont_write_bytecode = dont_write
        with contextlib.suppress(ValueError):
            sys.path.remove(str(repo))
        for name in _REPO_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def load_repo_contents(settings: Settings | None = None) -> RepoContents:
    """The Feast objects defined in ``feature_repo/``, with sources under this LTR_HOME.

    Each call imports the files afresh, so objects reflect the current files and settings.
    """
    from feast import Entity, FeatureService, FeatureView, FileSource, Project
    from feast.base_feature_view import BaseFeatureView
    from feast.data_source import DataSource
    from feast.repo_contents import RepoContents

    settings = settings or get_settings()
    repo = feature_repo_path(settings)
    contents = RepoContents(
        projects=[Project(name=settings.feast_project, description=PROJECT_DESCRIPTION)],
        data_sources=[],
        feature_views=[],
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        entities=[],
        feature_services=[],
        permissions=[],
    )
    kinds: tuple[tuple[type, list[Any]], ...] = (
        (Entity, contents.entities),
        (FileSource, contents.data_sources),
        (FeatureView, contents.feature_views),
        (FeatureService, contents.feature_services),
    )
    unsupported: list[str] = []
    with _repo_on_path(repo):
        for module_name in _REPO_MODULES:
            module = importlib.import_module(module_name)
            for attr in sorted(vars(module)):
                obj = getattr(module, attr)
                for kind, bucket in kinds:
                    if type(obj) is kind:  # exactly: stream/batch views are other kinds
                        if not any(obj is o for o in bucket):
                            bucket.append(obj)
                        break
                else:
                    if isinstance(obj, (BaseFeatureView, DataSource, Entity, FeatureService)):
                        unsupported.append(f"{type(obj).__name__} {obj.name}")
    if unsupported:
        raise ValueError(
            f"feature_repo defines objects `ltr features apply` does not handle: "
            f"{', '.join(sorted(set(unsupported)))}"
        )
    # Point the sources at this LTR_HOME (the repo files default to the LTR_HOME variable).
    data = offline_dir(settings)
    names = set(OFFLINE_FILES.values())
    sources = [*contents.data_sources, *(v.batch_source for v in contents.feature_views)]
    for source in sources:
        if isinstance(source, FileSource) and Path(source.path).name in names:
            source.file_options.uri = str(data / Path(source.path).name)
    return contents


def _names(objs: Sequence[Any]) -> list[str]:
    return sorted(o.name for o in objs)


def apply(settings: Settings | None = None) -> dict[str, Any]:
    """Register the repo's objects (``feast apply``): create or update them, delete the rest.

    Also writes the resolved configuration to ``<LTR_HOME>/feast/feature_store.yaml`` so the
    ``feast`` CLI can be pointed at the same store (``feast -c feature_repo -f ...``).
    """
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.repo_operations import extract_objects_for_apply_delete

    settings = settings or get_settings()
    started = time.perf_counter()
    home = settings.home.resolve()
    (home / REGISTRY_FILE).parent.mkdir(parents=True, exist_ok=True)
    offline_dir(settings).mkdir(parents=True, exist_ok=True)
    store = get_feature_store(settings)
    contents = load_repo_contents(settings)
    with _feast_output_to_stderr():
        _, to_delete, _, _ = extract_objects_for_apply_delete(  # type: ignore[no-untyped-call]
            settings.feast_project, store.registry, contents
        )
        # Feast's placeholder entity (for entityless views) is managed by Feast itself.
        to_delete = [o for o in to_delete if o.name != DUMMY_ENTITY_NAME]
        to_apply: list[Any] = [
            *contents.projects,
            *contents.entities,
            *contents.data_sources,
            *contents.feature_views,
            *contents.feature_services,
        ]
        store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    yaml_path = _write_feast_yaml(settings)
    return {
        "project": settings.feast_project,
        "registry": str(home / REGISTRY_FILE),
        "online_store": online_store_kind(store.config.online_store.type),
        "entities": _names(contents.entities),
        "data_sources": _names(contents.data_sources),
        "feature_views": _names(contents.feature_views),
        "feature_services": _names(contents.feature_services),
        "deleted": sorted(f"{type(o).__name__}:{o.name}" for o in to_delete),
        "feature_store_yaml": str(yaml_path),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _write_feast_yaml(settings: Settings) -> Path:
    import yaml

    path = settings.home.resolve() / "feast" / "feature_store.yaml"
    with atomic_open(path) as fh:
        fh.write(
            "# Written by `ltr features apply` from the LTR_* settings; use it with\n"
            "# feast -c feature_repo -f <this file> plan|apply|materialize\n"
        )
        yaml.safe_dump(_config_dict(settings, redact=True), fh, sort_keys=False)
    return path


# ------------------------------------------------------------------------ materialize
def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _rows_in_window(settings: Settings, view: str, start: datetime, end: datetime) -> int:
    """Entities of ``view`` with an event in ``[start, end]``: what Feast writes online."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    folder = offline_dir(settings) / OFFLINE_FILES[view]
    if not folder.is_dir() or not any(folder.glob("*.parquet")):
        return 0
    keys = list(VIEW_JOIN_KEYS[view])
    ts = pc.field(EVENT_TIMESTAMP)
    table = pads.dataset(folder, format="parquet").to_table(
        columns=keys, filter=(ts >= start) & (ts <= end)
    )
    if table.num_rows == 0:
        return 0
    return table.group_by(keys).aggregate([]).num_rows


def _rows_written(store: FeatureStore) -> dict[str, int]:
    """Rows the store's online writer has written so far, per view (see online_store)."""
    online = store._get_provider().online_store
    return dict(getattr(online, "rows_written", {}))


def materialize(
    start: datetime,
    end: datetime,
    settings: Settings | None = None,
    *,
    views: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Load the latest features with event time in ``[start, end]`` into the online store.

    Returns the online store type, the rows materialized per view (one per entity with an
    event in the window), how many of them were written (newer than the stored row: a
    re-run of unchanged data writes none), seconds and rows per second.
    """
    settings = settings or get_settings()
    start, end = _aware(start), _aware(end)
    if end < start:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
    names = list(views) if views else [QUERY_DOC_VIEW, DOC_VIEW]
    unknown = sorted(set(names) - set(OFFLINE_FILES))
    if unknown:
        raise ValueError(f"unknown feature view(s) {unknown}; valid: {sorted(OFFLINE_FILES)}")
    data = offline_dir(settings)
    empty = [v for v in names if not any((data / OFFLINE_FILES[v]).glob("*.parquet"))]
    if len(empty) == len(names):
        raise ValueError(f"nothing to materialize: no data under {data} (run `ltr data ingest`)")
    names = [v for v in names if v not in empty]
    rows = {view: _rows_in_window(settings, view, start, end) for view in names}
    store = get_feature_store(settings)
    before = _rows_written(store)
    started = time.perf_counter()
    with _feast_output_to_stderr():
        store.materialize(start_date=start, end_date=end, feature_views=names)
    seconds = time.perf_counter() - started
    after = _rows_written(store)
    total = sum(rows.values())
    return {
        "online_store": online_store_kind(store.config.online_store.type),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "rows": rows,
        "total_rows": total,
        "written": {view: after.get(view, 0) - before.get(view, 0) for view in names},
        "skipped_views_without_data": empty,
        "seconds": round(seconds, 3),
        "rows_per_second": round(total / seconds, 1) if seconds > 0 else None,
    }
