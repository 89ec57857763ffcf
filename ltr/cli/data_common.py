"""Shared pieces of the ``ltr data`` commands: option types, loading, saving, summaries.

Only Typer is imported at module level so that ``ltr --help`` stays fast.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ltr.cli.output import fail

if TYPE_CHECKING:
    from ltr.data.dataset import LetorDataset


class Missing(StrEnum):
    reject = "reject"
    impute = "impute"


class Format(StrEnum):
    letor = "letor"
    parquet = "parquet"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
MissingOpt = Annotated[
    Missing,
    typer.Option(help="NULL / NaN / inf feature values: reject the file, or impute them."),
]
ImputeOpt = Annotated[
    float, typer.Option("--impute-value", help="Value that replaces missing values.")
]
QueryFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--query-file",
        help="Group sizes for files without qid: (default: <file>.query when it exists).",
    ),
]


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _load(
    path: Path, missing: Missing, impute_value: float, query_file: Path | None
) -> LetorDataset:
    """Read a LETOR or Parquet file; bad input exits 2 with ``error: file:line: reason``."""
    try:
        if _is_parquet(path):
            from ltr.data.parquet import from_parquet

            return from_parquet(path)
        from ltr.data.letor import read_letor

        return read_letor(
            path, missing=missing.value, impute_value=impute_value, query_file=query_file
        )
    except FileNotFoundError as exc:
        fail(f"{exc.filename}: no such file" if exc.filename else str(exc))
    except (ValueError, OSError) as exc:
        fail(str(exc))


def summarize(ds: LetorDataset) -> dict[str, Any]:
    """What ``ltr data validate`` reports: sizes, labels, list lengths, missing values."""
    import numpy as np

    sizes = ds.group_sizes
    values, counts = np.unique(ds.labels, return_counts=True)
    histogram = {_label_text(float(v)): int(c) for v, c in zip(values, counts, strict=True)}
    if ds.n_queries:
        best = np.maximum.reduceat(ds.labels, ds.offsets[:-1])
        no_relevant = int((best < 1).sum())
    else:
        no_relevant = 0
    return {
        "source": ds.source,
        "rows": ds.n_docs,
        "queries": ds.n_queries,
        "features": ds.n_features,
        "labels": histogram,
        "docs_per_query": {
            "min": int(sizes.min()) if sizes.size else 0,
            "mean": round(float(sizes.mean()), 2) if sizes.size else 0.0,
            "max": int(sizes.max()) if sizes.size else 0,
        },
        "queries_without_relevant": no_relevant,
        "missing": ds.missing_report.as_dict(),
        "fingerprint": ds.fingerprint(),
    }


def _label_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _print_summary(summary: dict[str, Any]) -> None:
    dpq = summary["docs_per_query"]
    miss = summary["missing"]
    labels = "  ".join(f"{k}: {v}" for k, v in summary["labels"].items())
    lines = [
        f"source     {summary['source']}",
        f"rows       {summary['rows']}",
        f"queries    {summary['queries']}",
        f"features   {summary['features']}",
        f"labels     {labels}",
        f"docs/query min {dpq['min']}  mean {dpq['mean']}  max {dpq['max']}",
        f"queries without a relevant doc  {summary['queries_without_relevant']}",
        f"missing    {miss['total']} values in {miss['rows_affected']} rows "
        f"(NULL {miss['null_values']}, NaN {miss['nan_values']}, inf {miss['inf_values']}; "
        f"policy {miss['policy']})",
        f"fingerprint {summary['fingerprint']}",
    ]
    typer.echo("\n".join(lines))


def _save(ds: LetorDataset, out: Path, fmt: Format, *, query_file: bool = False) -> None:
    if fmt is Format.parquet:
        from ltr.data.parquet import to_parquet

        to_parquet(ds, out)
    else:
        from ltr.data.letor import write_letor

        write_letor(ds, out, query_file=query_file)
