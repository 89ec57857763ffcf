"""``ltr data``: generate, validate and convert ranking data; build cross-validation folds.

Only Typer is imported at module level so that ``ltr --help`` stays fast; NumPy, sklearn
and pyarrow are imported inside the commands.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ltr.cli.output import emit_json, fail

if TYPE_CHECKING:
    from ltr.data.dataset import LetorDataset

data_app = typer.Typer(
    help="Ranking data: generate, validate, convert (LETOR <-> Parquet), build folds.",
    no_args_is_help=True,
)


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


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


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


@data_app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="LETOR / SVMlight file (or .parquet).")],
    missing: MissingOpt = Missing.reject,
    impute_value: ImputeOpt = 0.0,
    query_file: QueryFileOpt = None,
    expectations: Annotated[
        bool,
        typer.Option(
            "--expectations",
            help="Also run the data expectations (Great Expectations); exit 1 when one fails. "
            "Missing values are then kept and counted against --max-missing-fraction "
            "(--missing / --impute-value do not apply).",
        ),
    ] = False,
    label_set: Annotated[
        str | None,
        typer.Option(
            "--label-set",
            help="With --expectations: allowed labels, e.g. 0,1,2 "
            "(default: any non-negative integer).",
        ),
    ] = None,
    feature_range: Annotated[
        str | None,
        typer.Option(
            "--feature-range",
            help="With --expectations: feature bounds MIN,MAX, e.g. "
            "0,1 (either may be empty: 0, or ,1).",
        ),
    ] = None,
    min_docs: Annotated[
        int | None,
        typer.Option(
            "--min-docs",
            min=1,
            help="With --expectations: documents per query, at least (default 1).",
        ),
    ] = None,
    max_docs: Annotated[
        int | None,
        typer.Option(
            "--max-docs",
            min=1,
            help="With --expectations: documents per query, at most (default 5000).",
        ),
    ] = None,
    n_features: Annotated[
        int | None,
        typer.Option("--n-features", min=1, help="With --expectations: expected feature count."),
    ] = None,
    max_missing_fraction: Annotated[
        float | None,
        typer.Option(
            "--max-missing-fraction",
            min=0.0,
            max=1.0,
            help="With --expectations: "
            "share of feature cells that may be NULL/NaN/inf (default 0).",
        ),
    ] = None,
    allow_duplicate_docs: Annotated[
        bool,
        typer.Option(
            "--allow-duplicate-docs", help="With --expectations: a (qid, doc_id) pair may repeat."
        ),
    ] = False,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report-dir",
            help="With --expectations: write <name>.validation.json and GX's <name>.gx.json there.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Parse a ranking file and print what it holds; exit 2 naming file:line when malformed.

    With --expectations, also check a data policy with Great Expectations; exit 1 if it fails.
    """
    options = {
        "--label-set": label_set is not None,
        "--feature-range": feature_range is not None,
        "--min-docs": min_docs is not None,
        "--max-docs": max_docs is not None,
        "--n-features": n_features is not None,
        "--max-missing-fraction": max_missing_fraction is not None,
        "--allow-duplicate-docs": allow_duplicate_docs,
        "--report-dir": report_dir is not None,
    }
    if not expectations:
        given = [name for name, used in options.items() if used]
        if given:
            fail(f"{', '.join(given)} need --expectations")
        ds = _load(path, missing, impute_value, query_file)
        summary = summarize(ds)
        if as_json:
            emit_json(summary)
        else:
            _print_summary(summary)
        return
    if missing is not Missing.reject or impute_value != 0.0:
        fail(
            "--missing / --impute-value do not apply with --expectations: missing values "
            "are kept and counted against --max-missing-fraction"
        )
    _validate_expectations(
        path,
        query_file,
        label_set=label_set,
        feature_range=feature_range,
        min_docs=min_docs,
        max_docs=max_docs,
        n_features=n_features,
        max_missing_fraction=max_missing_fraction,
        allow_duplicate_docs=allow_duplicate_docs,
        report_dir=report_dir,
        as_json=as_json,
    )


def _numbers(text: str, option: str, *, allow_empty: bool = False) -> list[float | None]:
    """``"0,1,2"`` -> ``[0.0, 1.0, 2.0]``; an empty item is None when ``allow_empty``."""
    out: list[float | None] = []
    for item in text.split(","):
        item = item.strip()
        if not item and allow_empty:
            out.append(None)
            continue
        try:
            out.append(float(item))
        except ValueError:
            fail(f"{option} {text!r}: {item!r} is not a number")
    return out


def _validate_expectations(
    path: Path,
    query_file: Path | None,
    *,
    label_set: str | None,
    feature_range: str | None,
    min_docs: int | None,
    max_docs: int | None,
    n_features: int | None,
    max_missing_fraction: float | None,
    allow_duplicate_docs: bool,
    report_dir: Path | None,
    as_json: bool,
) -> None:
    from ltr.validation import ValidationPolicy, read_raw, report_name, validate_dataset

    kwargs: dict[str, Any] = {"allow_duplicate_docs": allow_duplicate_docs}
    if label_set is not None:
        kwargs["label_set"] = tuple(_numbers(label_set, "--label-set"))
    if feature_range is not None:
        bounds = _numbers(feature_range, "--feature-range", allow_empty=True)
        if len(bounds) != 2:
            fail(f"--feature-range {feature_range!r} must be MIN,MAX")
        kwargs["feature_min"], kwargs["feature_max"] = bounds
    if min_docs is not None:
        kwargs["min_docs_per_query"] = min_docs
    if max_docs is not None:
        kwargs["max_docs_per_query"] = max_docs
    if n_features is not None:
        kwargs["n_features"] = n_features
    if max_missing_fraction is not None:
        kwargs["max_missing_fraction"] = max_missing_fraction
    try:
        policy = ValidationPolicy(**kwargs)
    except ValueError as exc:
        fail(str(exc))
    try:
        ds = read_raw(path, query_file=query_file)
    except FileNotFoundError as exc:
        fail(f"{exc.filename}: no such file" if exc.filename else str(exc))
    except (ValueError, OSError) as exc:
        fail(str(exc))
    summary = summarize(ds)
    try:
        report = validate_dataset(ds, policy, report_dir=report_dir, name=report_name(path))
    except OSError as exc:
        fail(f"could not write the report: {exc}")
    if as_json:
        emit_json({**summary, "validation": report.to_dict()})
    else:
        _print_summary(summary)
        stats = report.statistics
        typer.echo(
            f"expectations {stats['successful_expectations']} of "
            f"{stats['evaluated_expectations']} passed"
        )
        if not report.success:
            typer.echo(report.summary())
        if report.report_path is not None:
            typer.echo(f"report     {report.report_path}")
    if not report.success:
        lines = report.summary().splitlines()
        more = f" (+{len(lines) - 3} more)" if len(lines) > 3 else ""
        fail(
            f"{path}: {len(lines)} of {len(report.results)} expectations failed: "
            + "; ".join(lines[:3])
            + more,
            code=1,
        )


@data_app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output file (.parquet selects Parquet).")],
    queries: Annotated[int, typer.Option("--queries", min=1, help="Number of queries.")] = 200,
    features: Annotated[int, typer.Option("--features", min=1, help="Number of features.")] = 20,
    doc_only: Annotated[
        int, typer.Option("--doc-only", min=0, help="How many of them are document-only.")
    ] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    fmt: Annotated[
        Format | None,
        typer.Option("--format", help="letor or parquet (default: from OUT's suffix)."),
    ] = None,
    query_file: Annotated[
        bool,
        typer.Option("--query-file", help="LETOR only: LightGBM layout, group sizes in OUT.query."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate a synthetic ranking dataset with a learnable signal."""
    from ltr.data.synth import generate_synthetic

    if doc_only > features:
        fail(f"--doc-only ({doc_only}) cannot exceed --features ({features})")
    chosen = fmt or (Format.parquet if _is_parquet(out) else Format.letor)
    if query_file and chosen is Format.parquet:
        fail("--query-file applies to the LETOR format only")
    ds = generate_synthetic(n_queries=queries, n_features=features, n_doc_only=doc_only, seed=seed)
    try:
        _save(ds, out, chosen, query_file=query_file)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    summary = {"out": str(out), "format": chosen.value, **summarize(ds)}
    if as_json:
        emit_json(summary)
    else:
        typer.echo(
            f"wrote {out} ({chosen.value}): {ds.n_queries} queries, {ds.n_docs} rows, "
            f"{ds.n_features} features"
        )


def _save(ds: LetorDataset, out: Path, fmt: Format, *, query_file: bool = False) -> None:
    if fmt is Format.parquet:
        from ltr.data.parquet import to_parquet

        to_parquet(ds, out)
    else:
        from ltr.data.letor import write_letor

        write_letor(ds, out, query_file=query_file)


@data_app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="Input: LETOR file or .parquet.")],
    out: Annotated[Path, typer.Argument(help="Output: .parquet, or a LETOR file.")],
    missing: MissingOpt = Missing.reject,
    impute_value: ImputeOpt = 0.0,
    query_file: QueryFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Convert LETOR -> Parquet (or Parquet -> LETOR, chosen by OUT's suffix)."""
    ds = _load(src, missing, impute_value, query_file)
    fmt = Format.parquet if _is_parquet(out) else Format.letor
    try:
        _save(ds, out, fmt)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        emit_json({"in": str(src), "out": str(out), "format": fmt.value, **summarize(ds)})
    else:
        typer.echo(f"wrote {out} ({fmt.value}): {ds.n_queries} queries, {ds.n_docs} rows")


@data_app.command()
def folds(
    root: Annotated[Path, typer.Argument(help="Folder holding S1.txt .. S<n>.txt.")],
    out_dir: Annotated[Path, typer.Argument(help="Where Fold1..Fold<n>/ are written.")],
    subsets: Annotated[int, typer.Option("--subsets", min=3, help="Number of subsets.")] = 5,
    missing: MissingOpt = Missing.reject,
    impute_value: ImputeOpt = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Build cross-validation folds by rotating S1..S5 (LETOR 4.0: Fold1 = S1-S3 / S4 / S5)."""
    from ltr.data.folds import rotation, write_folds

    try:
        written = write_folds(
            root, out_dir, n_subsets=subsets, missing=missing.value, impute_value=impute_value
        )
    except (ValueError, OSError) as exc:
        fail(str(exc))
    result = {
        f"Fold{k}": {
            split: {
                "path": str(path),
                "subsets": [f"S{i}" for i in rotation(k, subsets)[split]],
            }
            for split, path in splits.items()
        }
        for k, splits in written.items()
    }
    if as_json:
        emit_json(result)
        return
    for name, splits in result.items():
        parts = "  ".join(f"{s}: {'+'.join(v['subsets'])}" for s, v in splits.items())
        typer.echo(f"{name}  {parts}")
    typer.echo(f"wrote {len(result)} folds under {out_dir}")


@data_app.command()
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
            "Re-ingesting the same file for the same time replaces it.",
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
    verb = "replaced" if result["replaced"] else "wrote"
    typer.echo(
        f"{verb} {result['partition']} at {result['event_timestamp']}: "
        f"{result['query_doc_rows']} query-document rows ({result['query_doc_features']} "
        f"features), {result['doc_rows']} documents ({result['doc_features']} features)"
    )
