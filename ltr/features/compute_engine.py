"""Feast's local batch engine with a vectorised path from the offline store into Redis.

Feast's local compute engine turns the pulled Arrow rows into one protobuf ``EntityKey`` and
one ``Value`` per row and feature (``feast.utils._convert_arrow_to_proto``) before the online
store writes them; for ~20,000 rows that conversion alone is about half of ``materialize``.
:class:`LtrComputeEngine` keeps Feast in charge of the definitions, the registry, the window
and the offline pull (``create_offline_store_retrieval_job``, i.e. the configured offline
store's ``pull_latest_from_table_or_query`` or ``pull_all_from_table_or_query``), then, when
the online store is :class:`ltr.features.online_store.LtrRedisOnlineStore`, writes the
latest row per entity straight from Arrow (:mod:`ltr.features.redis_writer`): same keys,
fields and bytes, same "newer ``(event, created)`` only" rule, same ``rows_written``
counting.

Anything else goes through Feast's own local engine unchanged: another online store (SQLite,
Feast's ``redis``), Redis Cluster, ``skip_dedup``, batch/stream views, transformations,
aggregations, filters, field or join-key mappings, offline writes, and tables the fast path
cannot encode (non-string join keys, features other than fixed-length ``Array(Float32)``,
nulls).

Feast loads the engine by name (``batch_engine: {type: ltr.features.compute_engine.
LtrComputeEngine}``); the classes are built on first access (PEP 562 ``__getattr__``), so
importing this module does not import Feast.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

__all__ = ["ENGINE_TYPE"]

logger = logging.getLogger(__name__)

ENGINE_TYPE = "ltr.features.compute_engine.LtrComputeEngine"
_EngineType = Literal["ltr.features.compute_engine.LtrComputeEngine"]

_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    if name in ("LtrComputeEngine", "LtrComputeEngineConfig"):
        if not _built:
            _built.update(_build())
        return _built[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _plain_redis_view(engine: Any, view: Any) -> bool:
    """Whether ``view`` and the engine's online store qualify for the fast path."""
    from feast import FeatureView
    from feast.infra.online_stores.redis import RedisType
    from feast.types import Array, Float32, String

    from ltr.features.online_store import LtrRedisOnlineStore

    online = engine.repo_config.online_store
    if not isinstance(engine.online_store, LtrRedisOnlineStore):
        return False
    if online.redis_type == RedisType.redis_cluster or online.skip_dedup:
        return False
    if engine.repo_config.entity_key_serialization_version not in (1, 2, 3):
        return False
    if type(view) is not FeatureView or not view.online or getattr(view, "offline", False):
        return False
    if getattr(view, "filter", None) or getattr(view, "feature_transformation", None):
        return False
    if getattr(view, "aggregations", None) or getattr(view, "enable_validation", False):
        return False
    source = view.batch_source
    if source is None or view.stream_source is not None or source.field_mapping:
        return False
    if view.projection.join_key_map:
        return False
    if not view.features or not view.entity_columns:
        return False
    if any(f.dtype != String for f in view.entity_columns):
        return False
    return all(f.dtype == Array(Float32) for f in view.features)


def _build() -> dict[str, Any]:
    from feast.infra.common.materialization_job import MaterializationJobStatus
    from feast.infra.compute_engines.dag.context import ColumnInfo
    from feast.infra.compute_engines.local.compute import (
        LocalComputeEngine,
        LocalComputeEngineConfig,
    )
    from feast.infra.compute_engines.local.job import LocalMaterializationJob
    from feast.infra.compute_engines.utils import create_offline_store_retrieval_job
    from feast.infra.online_stores.redis import _versioned_fv_name
    from feast.utils import _get_column_names, _validate_vector_field_lengths

    from ltr.features import redis_writer
    from ltr.features.offline_store import _latest

    class LtrComputeEngineConfig(LocalComputeEngineConfig):
        """Feast's local engine configuration (same options)."""

        type: _EngineType = ENGINE_TYPE  # type: ignore[assignment]

    class LtrComputeEngine(LocalComputeEngine):
        """Feast's local engine; views into the project's Redis store are written from Arrow."""

        def _materialize_one(self, registry: Any, task: Any, **kwargs: Any) -> Any:
            view = task.feature_view
            if not _plain_redis_view(self, view):
                return super()._materialize_one(registry, task, **kwargs)
            job_id = f"{view.name}-{task.start_time}-{task.end_time}"
            try:
                table, columns = self._pull(registry, task)
                if not redis_writer.encodable(
                    table, columns.join_keys, columns.feature_cols, columns.ts_col
                ):
                    logger.info("%s: not encodable from Arrow, Feast's path", view.name)
                    return super()._materialize_one(registry, task, **kwargs)
                self._write(table, columns, view)
            except Exception as exc:  # reported as Feast's engine reports it
                return LocalMaterializationJob(
                    job_id=job_id, status=MaterializationJobStatus.ERROR, error=exc
                )
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)

        def _pull(self, registry: Any, task: Any) -> tuple[Any, Any]:
            """The rows Feast's local engine would write: the offline pull, latest per key."""
            view = task.feature_view
            entities = [registry.get_entity(name, task.project) for name in view.entities]
            join_keys, features, ts_col, created_col = _get_column_names(view, entities)
            columns = ColumnInfo(
                join_keys=list(join_keys),
                feature_cols=list(features),
                ts_col=ts_col,
                created_ts_col=created_col,
                field_mapping=None,
            )
            context = self.get_execution_context(registry, task)
            job = create_offline_store_retrieval_job(
                data_source=view.batch_source,
                column_info=columns,
                context=context,
                start_time=task.start_time,
                end_time=task.end_time,
            )
            table = job.to_arrow()
            if table.num_rows and task.only_latest:  # Feast's dedup node (idempotent)
                table = _latest(table, columns.join_keys, ts_col, created_col or None)
            _validate_vector_field_lengths(table, view)
            return table, columns

        def _write(self, table: Any, columns: Any, view: Any) -> None:
            config = self.repo_config
            store: Any = self.online_store
            online = config.online_store
            written = redis_writer.write_newer(
                store._get_client(online),
                table,
                project=config.project,
                view=_versioned_fv_name(view, config),
                join_keys=[f.name for f in view.entity_columns],
                features=columns.feature_cols,
                ts_column=columns.ts_col,
                created_column=columns.created_ts_col or None,
                key_version=config.entity_key_serialization_version,
                ttl_seconds=online.key_ttl_seconds,
            )
            counts: dict[str, int] = store.__dict__.setdefault("rows_written", {})
            counts[view.name] = counts.get(view.name, 0) + written

    for cls in (LtrComputeEngineConfig, LtrComputeEngine):
        cls.__module__ = __name__
    return {"LtrComputeEngineConfig": LtrComputeEngineConfig, "LtrComputeEngine": LtrComputeEngine}
