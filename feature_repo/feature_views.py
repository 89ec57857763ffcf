"""Feature views: one ``Array(Float32)`` field per view (one Redis hash field per entity).

A vector per view instead of one scalar field per feature keeps Feast's online reads and
materialization fast (DESIGN.md, "Online features"). ``ttl=0``: a value never expires, since
LETOR features are valid until a newer ingestion replaces them.
"""

from datetime import timedelta

from data_sources import doc_source, query_doc_source
from entities import OWNER, document, query
from feast import FeatureView, Field
from feast.types import Array, Float32, String

query_doc_features = FeatureView(
    name="query_doc_features",
    entities=[query, document],
    ttl=timedelta(0),
    schema=[
        Field(name="query_id", dtype=String),
        Field(name="doc_id", dtype=String),
        Field(
            name="features",
            dtype=Array(Float32),
            description="Query-document features in LETOR column order.",
        ),
    ],
    source=query_doc_source,
    online=True,
    description="Features of a (query, document) pair, e.g. BM25 or TF-IDF of the body.",
    owner=OWNER,
    tags={"team": "ranking", "kind": "query_document"},
)

doc_features = FeatureView(
    name="doc_features",
    entities=[document],
    ttl=timedelta(0),
    schema=[
        Field(name="doc_id", dtype=String),
        Field(
            name="features",
            dtype=Array(Float32),
            description="Document-only features in LETOR column order.",
        ),
    ],
    source=doc_source,
    online=True,
    description="Features of a document alone, e.g. MQ2008's PageRank, inlinks, URL length.",
    owner=OWNER,
    tags={"team": "ranking", "kind": "document"},
)
