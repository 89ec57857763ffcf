"""TREC qrels and run files: read, write, and evaluate a run the way trec_eval does.

Files:

- qrels: ``qid iter docid rel`` (``iter`` is ignored), whitespace separated.
- run: ``qid Q0 docid rank score tag``; like trec_eval, the ``rank`` column is ignored and the
  order comes from ``score``.

Evaluation semantics (trec_eval's, unless the options say otherwise):

- a query's documents are ordered by score descending, ties broken by docid descending
  (trec_eval's order). That order is used as is with ``ties="input_order"``; with the default
  ``ties="pessimistic"`` equal scores are ordered by label instead, lowest first;
- run documents absent from the qrels have relevance 0;
- queries of the run that are not in the qrels, and queries of the qrels that are not in the
  run, are ignored (trec_eval without ``-c``);
- ideal DCG and MAP's denominator use every judged document of the query, retrieved or not.

Scores are kept as float64 (trec_eval stores them as float32, so scores that differ only
beyond float32 precision tie there but not here).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ltr.metrics.ranking import (
    DEFAULT_METRICS,
    MetricOptions,
    evaluate_per_query,
    mean_metrics,
)
from ltr.utils.io import atomic_open

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _lines(path: PathLike) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for each non-blank line; CRLF and a UTF-8 BOM are fine."""
    with open(path, encoding="utf-8-sig", newline=None) as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = line.split()
            if fields:
                yield lineno, fields


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {what} {text!r} is not finite")
    return value


def read_qrels(path: PathLike) -> dict[str, dict[str, float]]:
    """Read ``qid iter docid rel`` lines into ``{qid: {docid: rel}}``.

    A malformed line or a document judged twice for a query raises
    ``ValueError("<path>:<line>: ...")``.
    """
    qrels: dict[str, dict[str, float]] = {}
    for lineno, fields in _lines(path):
        where = f"{path}:{lineno}"
        if len(fields) != 4:
            raise ValueError(f"{where}: expected 4 fields 'qid iter docid rel', got {len(fields)}")
        qid, _, docid, rel_text = fields
        rel = _number(rel_text, "relevance", where)
        judged = qrels.setdefault(qid, {})
        if docid in judged:
            raise ValueError(f"{where}: document {docid!r} is judged twice for query {qid!r}")
        judged[docid] = rel
    return qrels


def read_run(path: PathLike) -> dict[str, list[tuple[str, float]]]:
    """Read ``qid Q0 docid rank score tag`` lines into ``{qid: [(docid, score), ...]}``.

    Documents keep their file order. A malformed line, a non-finite score or a document
    listed twice for a query raises ``ValueError("<path>:<line>: ...")``.
    """
    run: dict[str, list[tuple[str, float]]] = {}
    seen: dict[str, set[str]] = {}
    for lineno, fields in _lines(path):
        where = f"{path}:{lineno}"
        if len(fields) != 6:
            raise ValueError(
                f"{where}: expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}"
            )
        qid, _, docid, _rank, score_text, _tag = fields
        score = _number(score_text, "score", where)
        docs = seen.setdefault(qid, set())
        if docid in docs:
            raise ValueError(f"{where}: document {docid!r} appears twice for query {qid!r}")
        docs.add(docid)
        run.setdefault(qid, []).append((docid, score))
    return run


def _check_token(value: object, what: str) -> str:
    text = str(value)
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{what} {text!r} must be non-empty and contain no whitespace")
    return text


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _parallel(*columns: Sequence[object] | np.ndarray) -> int:
    lengths = {len(c) for c in columns}
    if len(lengths) != 1:
        raise ValueError(f"columns must have equal lengths, got {sorted(lengths)}")
    return lengths.pop()


def write_run(
    path: PathLike,
    qids: Sequence[object] | np.ndarray,
    doc_ids: Sequence[object] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    tag: str = "ltr",
) -> None:
    """Write a run file atomically, each query's documents in trec_eval's order.

    Queries appear in order of first appearance; within a query, rows are sorted by score
    descending then docid descending and ranked from 1.
    """
    _parallel(qids, doc_ids, scores)
    tag = _check_token(tag, "tag")
    by_query: dict[str, list[tuple[str, float]]] = {}
    for qid, docid, score in zip(qids, doc_ids, scores, strict=True):
        value = float(score)
        if not math.isfinite(value):
            raise ValueError(f"score of query {qid!r} document {docid!r} is not finite")
        q = _check_token(qid, "query id")
        by_query.setdefault(q, []).append((_check_token(docid, "document id"), value))
    with atomic_open(path, "w") as fh:
        for qid, docs in by_query.items():
            for rank, (docid, score) in enumerate(_trec_order(docs), start=1):
                fh.write(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")


def write_qrels(
    path: PathLike,
    qids: Sequence[object] | np.ndarray,
    doc_ids: Sequence[object] | np.ndarray,
    labels: Sequence[float] | np.ndarray,
) -> None:
    """Write a qrels file (``qid 0 docid rel``) atomically; integral labels are written as ints."""
    _parallel(qids, doc_ids, labels)
    rows = []
    for qid, docid, label in zip(qids, doc_ids, labels, strict=True):
        value = float(label)
        if not math.isfinite(value):
            raise ValueError(f"label of query {qid!r} document {docid!r} is not finite")
        rows.append(
            f"{_check_token(qid, 'query id')} 0 {_check_token(docid, 'document id')} "
            f"{_format_number(value)}\n"
        )
    with atomic_open(path, "w") as fh:
        fh.writelines(rows)


def _trec_order(docs: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """Score descending, ties by docid descending (trec_eval's order); both sorts are stable."""
    ordered = sorted(docs, key=lambda d: d[0], reverse=True)
    ordered.sort(key=lambda d: d[1], reverse=True)
    return ordered


def evaluate_run(
    qrels: dict[str, dict[str, float]],
    run: dict[str, list[tuple[str, float]]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    options: MetricOptions = MetricOptions(),
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Evaluate a run against qrels with trec_eval's semantics (see the module docstring).

    Returns ``(means, per_query)``: ``per_query[qid][metric]`` for every query present in both
    the run and the qrels, NaN where the query was skipped (no relevant document and
    ``no_relevant="skip"``). Raises ``ValueError`` if no run query is judged or every query
    is skipped.
    """
    qids = [q for q in run if q in qrels]
    if not qids:
        raise ValueError(
            f"no query of the run ({len(run)} queries) appears in the qrels ({len(qrels)} queries)"
        )
    ignored = len(run) - len(qids)
    if ignored:
        logger.info("%d run queries have no judgments and are ignored", ignored)
    labels: list[float] = []
    scores: list[float] = []
    sizes: list[int] = []
    ideal: list[np.ndarray] = []
    for qid in qids:
        judged = qrels[qid]
        docs = _trec_order(run[qid])
        labels.extend(judged.get(docid, 0.0) for docid, _ in docs)
        scores.extend(score for _, score in docs)
        sizes.append(len(docs))
        ideal.append(np.fromiter(judged.values(), dtype=np.float64, count=len(judged)))
    offsets = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
    per_metric = evaluate_per_query(
        np.asarray(labels, dtype=np.float64),
        np.asarray(scores, dtype=np.float64),
        offsets,
        metrics,
        options,
        ideal_labels=ideal,
    )
    means = mean_metrics(per_metric)
    per_query = {
        qid: {key: float(values[i]) for key, values in per_metric.items()}
        for i, qid in enumerate(qids)
    }
    return means, per_query
