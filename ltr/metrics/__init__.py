"""Ranking metrics: NDCG@k, MAP, MRR, ERR@k and P@k over many queries at once.

The conventions (gain, discount, ties, queries without relevant documents) are tabled in
:mod:`ltr.metrics.ranking`; TREC qrels/run files are handled by :mod:`ltr.metrics.trec`.
"""

from ltr.metrics.ranking import (
    DEFAULT_METRICS,
    MetricOptions,
    evaluate,
    evaluate_per_query,
    parse_metric,
)

__all__ = ["DEFAULT_METRICS", "MetricOptions", "evaluate", "evaluate_per_query", "parse_metric"]
