"""``ltr data validate``: parse a ranking file, optionally check data expectations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ltr.cli.data_common import (
    ImputeOpt,
    JsonOpt,
    Missing,
    MissingOpt,
    QueryFileOpt,
    _load,
    _print_summary,
    summarize,
)
from ltr.cli.output import emit_json, fail


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
