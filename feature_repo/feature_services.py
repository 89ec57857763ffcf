"""Versioned feature services: one per model family; training and serving read the same one.

A new model that needs other features gets a new service (``ranker_v2``); an existing
service is never changed in place, so a served model keeps reading what it was trained on.
"""

from entities import OWNER
from feast import FeatureService
from feature_views import doc_features, query_doc_features

ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[query_doc_features, doc_features],
    description="Rankers v1: query-document vector followed by the document-only vector.",
    owner=OWNER,
    tags={"team": "ranking", "model": "ranker", "version": "1"},
)
