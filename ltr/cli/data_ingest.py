"""``ltr data ingest``: write a ranking file into the offline feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltr.cli.data_common import (
    ImputeOpt,
    JsonOpt,
    Missing,
    MissingOpt,
    QueryFileOpt,
    _load,
)
from ltr.cli.output import emit_json, fail


def ingest(
    path: Annotated[Path, typer.Argument(help="LETOR / SVMlight file (or .parquet) to ingest.")],
    doc_features: Annotated[
        str,
        typer.Option(
            "--doc-features",
            help="1-based feature numbers that depend on the document only, e.g. 41-46 or "
            "1,5,41-46 (default: none). They go to the doc_features view and must be "
            "identical for a document in every query. MQ2008's 41-46 (PageRank, inlinks, "
            "URL...) are document features but LETOR normalises them per query, so whole "
            "MQ2008 files are refused with them: ingest those without --doc-features.",
        ),
    ] = "",
    timestamp: Annotated[
        str | None,
        typer.Option(
            "--timestamp",
            help="Event time of these features, ISO 8601 (no zone = UTC; default: now). "
            "Re-ingesting the same file for the same time replaces it: changed rows win "
            "(online too, after materialize); unchanged data writes nothing.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Name of this ingestion (default: from the file)."),
    ] = None,
    missing: MissingOpt = Missing.reject,
    impute_value: ImputeOpt = 0.0,
    query_file: QueryFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a ranking file into the offline feature store (<LTR_HOME>/feast/data) for Feast."""
    from datetime import UTC, datetime

    from ltr.features.ingest import IngestError, ingest_letor, parse_feature_numbers
    from ltr.features.store import offline_dir

    try:
        doc_indices = parse_feature_numbers(doc_features)
    except ValueError as exc:
        fail(str(exc))
    if timestamp is None:
        event_ts = datetime.now(UTC).replace(microsecond=0)
    else:
        try:
            event_ts = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--timestamp {timestamp!r} is not an ISO 8601 date/time")
    ds = _load(path, missing, impute_value, query_file)
    try:
        result = ingest_letor(
            ds, offline_dir(), doc_feature_indices=doc_indices, event_timestamp=event_ts, name=name
        )
    except (IngestError, ValueError, OSError) as exc:
        fail(str(exc))
    if as_json:
        emit_json(result)
        return
    verb = (
        "kept (unchanged)" if result["unchanged"] else "replaced" if result["replaced"] else "wrote"
    )
    typer.echo(
        f"{verb} {result['partition']} at {result['event_timestamp']}: "
        f"{result['query_doc_rows']} query-document rows ({result['query_doc_features']} "
        f"features), {result['doc_rows']} documents ({result['doc_features']} features)"
    )
