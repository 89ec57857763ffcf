"""Names and layout of the feature store, shared by the library, the DAGs and the server.

Light on purpose (no Feast import): the serving side can import it.
The Feast objects themselves live in ``feature_repo/``; a test pins that they use these
names. Feature indices here are 0-based column positions of a LETOR dataset (the CLI takes
1-based feature numbers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from serving.features import feast_layout

__all__ = [
    "CREATED_TIMESTAMP",
    "DEFAULT_FEATURE_SERVICE",
    "DOC_ENTITY",
    "DOC_JOIN_KEY",
    "DOC_VIEW",
    "ENTITY_KEY_SERIALIZATION_VERSION",
    "EVENT_TIMESTAMP",
    "FEATURE_FIELD",
    "FEATURE_SERVICES",
    "FULL_FEATURE_NAMES",
    "OFFLINE_FILES",
    "PROJECT",
    "QUERY_DOC_VIEW",
    "QUERY_ENTITY",
    "QUERY_JOIN_KEY",
    "REDIS_FEATURE_FIELDS",
    "REDIS_TIMESTAMP_FIELDS",
    "VIEW_JOIN_KEYS",
    "feature_ref",
    "feature_schema",
    "output_column",
    "redis_key",
    "split_feature_columns",
]

# ----------------------------------------------------------------------------- objects
PROJECT = "ltr"  # default Feast project; Settings.feast_project (LTR_FEAST_PROJECT) overrides

QUERY_ENTITY = "query"
QUERY_JOIN_KEY = "query_id"
DOC_ENTITY = "document"
DOC_JOIN_KEY = "doc_id"

QUERY_DOC_VIEW = "query_doc_features"
DOC_VIEW = "doc_features"
FEATURE_FIELD = "features"  # the one Array(Float32) field of each view

#: join keys of each view's entities, in the order of the view's ``entities``
VIEW_JOIN_KEYS: dict[str, tuple[str, ...]] = {
    QUERY_DOC_VIEW: (QUERY_JOIN_KEY, DOC_JOIN_KEY),
    DOC_VIEW: (DOC_JOIN_KEY,),
}

#: versioned feature services: name -> feature views, in the order their vectors concatenate
FEATURE_SERVICES: dict[str, tuple[str, ...]] = {
    "ranker_v1": (QUERY_DOC_VIEW, DOC_VIEW),
}
DEFAULT_FEATURE_SERVICE = "ranker_v1"

#: both views name their field ``features``, so Feast must prefix the view name
#: (``query_doc_features__features``) in historical and online results.
FULL_FEATURE_NAMES = True

# ------------------------------------------------------------------------ offline store
EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"

#: offline tables, relative to ``<LTR_HOME>/feast/data``: folders of Parquet files, one file
#: per ingestion (columns: join keys, ``features`` list<float32>, the two timestamps)
OFFLINE_FILES: dict[str, str] = {
    QUERY_DOC_VIEW: "query_doc_features.parquet",
    DOC_VIEW: "doc_features.parquet",
}
OFFLINE_DIR = "feast/data"  # relative to LTR_HOME
LAYOUT_FILE = "layout.json"  # in OFFLINE_DIR: n_features, doc-only columns, feature names
REGISTRY_FILE = "feast/registry.db"  # relative to LTR_HOME
SQLITE_FILE = "feast/online.db"  # relative to LTR_HOME

# -------------------------------------------------------------------- Redis online store
#: Feast's entity key serialization version (``feature_store.yaml``); the Redis keys below
#: follow it.
ENTITY_KEY_SERIALIZATION_VERSION = 3

# The encoding itself lives in serving.features.feast_layout (pure Python, pinned against
# Feast's own functions by tests/integration/test_feast_layout.py); the names below are the
# ltr side's view of it.
#
# Feast 0.67's Redis layout: one hash per entity key (see redis_key); a view writes two
# fields into it: REDIS_FEATURE_FIELDS[view] -> serialized ``feast.types.Value`` with
# ``float_list_val``, and REDIS_TIMESTAMP_FIELDS[view] -> serialized protobuf ``Timestamp``.

#: Redis hash field holding each view's ``features`` value
REDIS_FEATURE_FIELDS: dict[str, bytes] = {
    view: feast_layout.field_hash(view, FEATURE_FIELD) for view in (QUERY_DOC_VIEW, DOC_VIEW)
}
#: Redis hash field holding each view's event timestamp
REDIS_TIMESTAMP_FIELDS: dict[str, bytes] = {
    view: feast_layout.timestamp_field(view) for view in (QUERY_DOC_VIEW, DOC_VIEW)
}


def redis_key(project: str, entity: Mapping[str, str]) -> bytes:
    """The Redis key under which Feast stores an entity's features (serialization v3).

    ``entity`` maps join keys to string values, e.g. ``{"query_id": "10", "doc_id": "d1"}``;
    every view with the same entities shares the key (one hash, one field per view).
    """
    names = list(entity)
    return feast_layout.redis_key(
        project, names, [str(entity[n]) for n in names], ENTITY_KEY_SERIALIZATION_VERSION
    )


# ------------------------------------------------------------------------ feature refs
def feature_ref(view: str) -> str:
    """Feast's reference to a view's vector, e.g. ``query_doc_features:features``."""
    return f"{view}:{FEATURE_FIELD}"


def output_column(view: str) -> str:
    """Column / key of a view's vector in Feast's results (full feature names)."""
    return f"{view}__{FEATURE_FIELD}"


# --------------------------------------------------------------------- feature columns
def split_feature_columns(
    n_features: int, doc_feature_indices: Iterable[int]
) -> tuple[list[int], list[int]]:
    """Split column positions ``0..n_features-1`` into (query-document, document-only).

    Both lists are ascending; a view's array holds its columns in that order. Raises
    ValueError for an index out of range or given twice.
    """
    if n_features < 0:
        raise ValueError(f"n_features must be >= 0, got {n_features}")
    doc = [int(i) for i in doc_feature_indices]
    seen: set[int] = set()
    for i in doc:
        if not 0 <= i < n_features:
            raise ValueError(
                f"document feature index {i} is out of range for {n_features} features "
                f"(0-based; feature number {i + 1})"
            )
        if i in seen:
            raise ValueError(f"document feature index {i} is given twice")
        seen.add(i)
    doc.sort()
    query_doc = [i for i in range(n_features) if i not in seen]
    return query_doc, doc


def feature_schema(
    feature_names: Sequence[str],
    doc_feature_indices: Iterable[int],
    default: float = 0.0,
) -> list[dict[str, Any]]:
    """The feature schema of a model's metadata: one entry per model input column, in order.

    Each entry names the feature, the view it is read from and its position inside that
    view's array, e.g. ``{"name": "f41", "source": "doc_features", "index": 0,
    "default": 0.0}``.
    """
    query_doc, doc = split_feature_columns(len(feature_names), doc_feature_indices)
    where: dict[int, tuple[str, int]] = {}
    for view, columns in ((QUERY_DOC_VIEW, query_doc), (DOC_VIEW, doc)):
        for position, column in enumerate(columns):
            where[column] = (view, position)
    return [
        {
            "name": str(name),
            "source": where[i][0],
            "index": where[i][1],
            "default": float(default),
        }
        for i, name in enumerate(feature_names)
    ]


def feature_views_metadata(
    n_features: int, doc_feature_indices: Iterable[int]
) -> dict[str, dict[str, Any]]:
    """What the serving side needs to read each view from Redis: join keys and vector size.

    Stored in a model's metadata.json under ``feature_views``; views without columns are left
    out.
    """
    query_doc, doc = split_feature_columns(n_features, doc_feature_indices)
    out: dict[str, dict[str, Any]] = {}
    if query_doc:
        out[QUERY_DOC_VIEW] = {"join_keys": [QUERY_JOIN_KEY, DOC_JOIN_KEY], "dim": len(query_doc)}
    if doc:
        out[DOC_VIEW] = {"join_keys": [DOC_JOIN_KEY], "dim": len(doc)}
    return out


def online_schema(
    feature_names: Sequence[str], doc_feature_indices: Iterable[int], default: float = 0.0
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(feature schema, feature views) for a model that reads all its features online."""
    doc = list(doc_feature_indices)
    return (
        feature_schema(feature_names, doc, default),
        feature_views_metadata(len(feature_names), doc),
    )
