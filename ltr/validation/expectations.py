"""The GX 1.x expectations a :class:`ValidationPolicy` stands for, per batch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ltr.data.dataset import LetorDataset
from ltr.validation.policy import ValidationPolicy
from ltr.validation.report import columns_text, num_text, range_text

ID_COLUMNS = ("qid", "doc_id", "label")


def build_expectations(ds: LetorDataset, policy: ValidationPolicy) -> dict[str, list[Any]]:
    """GX expectations per batch; ``meta`` carries the column and what is expected."""
    import great_expectations as gx

    # GX re-exports the classes without `as`, which mypy does not count as an export.
    E: Any = gx.expectations

    def meta(where: str, what: str) -> dict[str, str]:
        return {"where": where, "what": what}

    n_cols = policy.n_features if policy.n_features is not None else ds.n_features
    expected = [*ID_COLUMNS, *(f"f{i + 1}" for i in range(n_cols))]
    docs: list[Any] = [
        E.ExpectTableColumnsToMatchOrderedList(
            column_list=expected, meta=meta("table", f"columns {columns_text(expected)}")
        ),
        E.ExpectTableRowCountToBeBetween(min_value=1, meta=meta("table", "at least one row")),
    ]
    if policy.n_features is not None:
        docs.append(
            E.ExpectTableColumnCountToEqual(
                value=len(expected),
                meta=meta("table", f"{len(expected)} columns ({n_cols} features)"),
            )
        )
    docs += [
        E.ExpectColumnValuesToNotBeNull(column=c, meta=meta(c, "no missing value"))
        for c in ID_COLUMNS
    ]
    if policy.label_set is not None:
        allowed: list[float] = sorted(policy.label_set)
        what = "a label in {" + ", ".join(num_text(v) for v in allowed) + "}"
    else:  # integers 0..max seen: any other value (negative, fractional) is unexpected
        finite = ds.labels[np.isfinite(ds.labels)]
        top = int(min(max(float(finite.max()), 0.0), 1e6)) if finite.size else 0
        allowed, what = [float(v) for v in range(top + 1)], "a non-negative integer label"
    docs.append(
        E.ExpectColumnValuesToBeInSet(column="label", value_set=allowed, meta=meta("label", what))
    )
    if not policy.allow_duplicate_docs:
        docs.append(
            E.ExpectCompoundColumnsToBeUnique(
                column_list=["qid", "doc_id"],
                meta=meta("qid, doc_id", "unique (qid, doc_id) pairs"),
            )
        )
    lo, hi = policy.feature_min, policy.feature_max
    for i in range(ds.n_features):
        col = f"f{i + 1}"
        if policy.max_missing_fraction == 0.0:
            docs.append(
                E.ExpectColumnValuesToNotBeNull(column=col, meta=meta(col, "no NULL/NaN/inf value"))
            )
        if lo is not None or hi is not None:
            docs.append(
                E.ExpectColumnValuesToBeBetween(
                    column=col, min_value=lo, max_value=hi, meta=meta(col, range_text(lo, hi))
                )
            )

    sizes = f"between {policy.min_docs_per_query} and {policy.max_docs_per_query} documents"
    queries: list[Any] = [
        E.ExpectColumnValuesToBeBetween(
            column="n_docs",
            min_value=policy.min_docs_per_query,
            max_value=policy.max_docs_per_query,
            meta=meta("docs per query", sizes),
        ),
        E.ExpectColumnValuesToBeUnique(
            column="qid", meta=meta("qid", "the documents of a query to be contiguous")
        ),
    ]
    cells = ds.n_docs * ds.n_features
    budget = math.floor(policy.max_missing_fraction * cells + 1e-9)
    share = (
        f"at most {budget} of {cells} cells (max_missing_fraction={policy.max_missing_fraction:g})"
    )
    if policy.max_missing_fraction > 0.0:
        queries.append(
            E.ExpectColumnSumToBeBetween(
                column="n_missing",
                min_value=0,
                max_value=budget,
                meta=meta("features", f"NULL/NaN/inf values in {share}"),
            )
        )
    batches = {"documents": docs, "queries": queries}
    imputed = ds.missing_report.total if ds.missing_report.policy == "impute" else 0
    if imputed:  # the file was read with missing="impute": positions are lost, count is not
        batches["source"] = [
            E.ExpectColumnValuesToBeBetween(
                column="imputed_at_read",
                max_value=budget,
                meta=meta("features", f"NULL/NaN/inf values imputed at read in {share}"),
            )
        ]
    return batches
