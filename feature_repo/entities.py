"""Feast entities: the query and the document of a learning-to-rank row."""

from feast import Entity, ValueType

OWNER = "ml-ranking@example.com"

query = Entity(
    name="query",
    join_keys=["query_id"],
    value_type=ValueType.STRING,
    description="A search query (LETOR qid).",
    owner=OWNER,
    tags={"team": "ranking", "domain": "search"},
)

document = Entity(
    name="document",
    join_keys=["doc_id"],
    value_type=ValueType.STRING,
    description="A candidate document (LETOR #docid).",
    owner=OWNER,
    tags={"team": "ranking", "domain": "search"},
)
