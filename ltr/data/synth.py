"""Synthetic ranking data that looks like LETOR data and carries a learnable signal.

The generative story, per query:

- list length: lognormal around ``mean_docs``, clipped to ``[min_docs, max_docs]``;
- documents: drawn without replacement from a shared pool ``d0, d1, ...``, so a document
  appears in several queries, always with the same document-only features (the last
  ``n_doc_only`` columns, like MQ2008's PageRank / inlinks / URL length);
- query-document features (the first ``n_features - n_doc_only`` columns): standard normal
  plus a per-query offset, which moves the raw values of a query but not its ranking;
- latent relevance: ``w . x_qd + u . z_doc + noise * eps``; a third of ``w`` is zero
  (uninformative features);
- labels: about 20% of queries have no relevant document; in the others the top fraction
  of documents by latent relevance (on average about 30%) is relevant, graded 1..max_label
  with higher grades rarer, the rest is 0.

The same arguments always give the same dataset.
"""

from __future__ import annotations

import logging

import numpy as np

from ltr.data.dataset import LetorDataset

__all__ = ["generate_synthetic", "split_queries"]

logger = logging.getLogger(__name__)

NO_RELEVANT_FRACTION = 0.2


def generate_synthetic(
    *,
    n_queries: int = 200,
    n_features: int = 20,
    n_doc_only: int = 5,
    mean_docs: float = 30.0,
    min_docs: int = 5,
    max_docs: int = 120,
    max_label: int = 4,
    noise: float = 0.5,
    seed: int = 0,
    qid_prefix: str = "q",
) -> LetorDataset:
    """A synthetic LETOR dataset; query ids ``<qid_prefix>0..``, doc ids ``d<k>``."""
    if n_queries < 1:
        raise ValueError(f"n_queries must be >= 1, got {n_queries}")
    if n_features < 1 or not 0 <= n_doc_only <= n_features:
        raise ValueError(
            f"need n_features >= 1 and 0 <= n_doc_only <= n_features, "
            f"got n_features={n_features}, n_doc_only={n_doc_only}"
        )
    if not 1 <= min_docs <= max_docs:
        raise ValueError(f"need 1 <= min_docs <= max_docs, got {min_docs}, {max_docs}")
    if mean_docs <= 0:
        raise ValueError(f"mean_docs must be > 0, got {mean_docs}")
    if max_label < 1:
        raise ValueError(f"max_label must be >= 1, got {max_label}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")

    rng = np.random.default_rng(seed)
    n_qd = n_features - n_doc_only

    # List lengths: lognormal with the requested mean, clipped.
    sigma = 0.6
    lengths = rng.lognormal(np.log(mean_docs) - sigma**2 / 2, sigma, size=n_queries)
    lengths = np.clip(np.rint(lengths), min_docs, max_docs).astype(np.int64)
    n_docs = int(lengths.sum())

    # The shared document pool: each document has fixed doc-only features and quality.
    pool_size = max(max_docs, n_docs // 3)
    doc_latent = rng.standard_normal((pool_size, n_doc_only))
    doc_features = doc_latent.copy()
    doc_features[:, ::2] = np.exp(0.5 * doc_latent[:, ::2])  # skewed, positive (PageRank-like)
    u = rng.normal(0.0, 1.0, size=n_doc_only)
    if n_doc_only:
        u *= 0.5 / max(float(np.linalg.norm(u)), 1e-12)  # document quality: std 0.5
    quality = doc_latent @ u

    # Query-document weights: a third of the features carry no signal; w . x has std 1.
    w = rng.normal(0.0, 1.0, size=n_qd)
    w[rng.random(n_qd) < 1 / 3] = 0.0
    if n_qd and not w.any():
        w[0] = 1.0
    if n_qd:
        w /= np.linalg.norm(w)

    features = np.empty((n_docs, n_features), dtype=np.float32)
    labels = np.zeros(n_docs, dtype=np.float32)
    qids = np.empty(n_docs, dtype=object)
    doc_ids = np.empty(n_docs, dtype=object)
    no_relevant = rng.random(n_queries) < NO_RELEVANT_FRACTION
    start = 0
    for q, n in enumerate(lengths.tolist()):
        rows = slice(start, start + n)
        docs = rng.choice(pool_size, size=n, replace=False)
        x = rng.standard_normal((n, n_qd)) + rng.normal(0.0, 0.5, size=n_qd)
        latent = x @ w + quality[docs] + noise * rng.standard_normal(n)
        if not no_relevant[q]:
            labels[rows] = _grade(latent, rng.beta(1.5, 3.5), max_label)
        features[rows, :n_qd] = x
        features[rows, n_qd:] = doc_features[docs]
        qids[rows] = f"{qid_prefix}{q}"
        doc_ids[rows] = [f"d{k}" for k in docs.tolist()]
        start += n

    logger.debug("generated %d queries, %d documents", n_queries, n_docs)
    return LetorDataset(
        features=features,
        labels=labels,
        qids=qids,
        doc_ids=doc_ids,
        source=(
            f"synthetic(seed={seed}, n_queries={n_queries}, n_features={n_features}, "
            f"n_doc_only={n_doc_only}, noise={noise})"
        ),
    )


def _grade(latent: np.ndarray, relevant_fraction: float, max_label: int) -> np.ndarray:
    """Labels of one query: the top documents by latent relevance get grades 1..max_label."""
    n = latent.size
    n_rel = int(np.clip(np.rint(n * relevant_fraction), 1, n))
    order = np.argsort(-latent, kind="stable")
    # position p in [0, 1) among the relevant documents, 0 = best; (1 - p)^2 makes
    # high grades rarer than low ones.
    p = np.arange(n_rel) / n_rel
    grades = np.clip(1 + np.floor((1 - p) ** 2 * max_label), 1, max_label)
    out = np.zeros(n, dtype=np.float32)
    out[order[:n_rel]] = grades
    return out


def split_queries(
    ds: LetorDataset, fractions: tuple[float, ...] = (0.6, 0.2, 0.2), seed: int = 0
) -> tuple[LetorDataset, ...]:
    """Split by query (never splitting a query) into ``len(fractions)`` random parts.

    Each part keeps the queries in their original order. Fractions must be positive and sum
    to 1.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0 or (fr <= 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must be positive and sum to 1, got {fractions}")
    n = ds.n_queries
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.rint(np.cumsum(fr) * n).astype(np.int64)
    bounds[-1] = n
    starts = np.concatenate([[0], bounds[:-1]])
    return tuple(
        ds.subset_queries(np.sort(order[a:b]).tolist()) for a, b in zip(starts, bounds, strict=True)
    )
