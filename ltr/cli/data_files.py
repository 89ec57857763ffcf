"""``ltr data synth | convert | folds``: generate, convert and fold ranking files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltr.cli.data_common import (
    Format,
    ImputeOpt,
    JsonOpt,
    Missing,
    MissingOpt,
    QueryFileOpt,
    _is_parquet,
    _load,
    _save,
    summarize,
)
from ltr.cli.output import emit_json, fail


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
