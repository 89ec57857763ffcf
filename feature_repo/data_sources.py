"""Offline sources: Parquet datasets written by ``ltr data ingest``.

Each source is a folder of Parquet files (one per ingestion) under
``<LTR_HOME>/feast/data/``; ``LTR_HOME`` defaults to ``var`` at the repository root, and a
relative ``LTR_HOME`` is taken from the repository root too (the ``feast`` CLI changes into
this folder). ``ltr features apply`` points the sources at its own settings' home.
"""

import os
from pathlib import Path

from entities import OWNER
from feast import FileSource

REPO_ROOT = Path(__file__).resolve().parent.parent


def offline_dir() -> Path:
    """``<LTR_HOME>/feast/data`` as an absolute path."""
    home = Path(os.environ.get("LTR_HOME") or "var").expanduser()
    if not home.is_absolute():
        home = REPO_ROOT / home
    return home / "feast" / "data"


query_doc_source = FileSource(
    name="query_doc_features_source",
    path=str(offline_dir() / "query_doc_features.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
    description="Query-document feature vectors, one row per (query_id, doc_id, ingestion).",
    owner=OWNER,
    tags={"team": "ranking", "format": "parquet", "writer": "ltr data ingest"},
)

doc_source = FileSource(
    name="doc_features_source",
    path=str(offline_dir() / "doc_features.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
    description="Document-only feature vectors, one row per (doc_id, ingestion).",
    owner=OWNER,
    tags={"team": "ranking", "format": "parquet", "writer": "ltr data ingest"},
)
