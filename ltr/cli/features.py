"""``ltr features``: register the Feast repository and fill the online store.

Feast is imported inside the commands (it takes seconds), so ``ltr --help`` stays fast.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from ltr.cli.output import emit_json, fail

features_app = typer.Typer(
    help="Feature store (Feast): apply the feature repository, materialize to the online store.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")


def _parse_time(text: str, option: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} {text!r} is not an ISO 8601 date/time")
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


@features_app.command()
def apply(as_json: JsonOpt = False) -> None:
    """Register entities, views and feature services of feature_repo/ (like `feast apply`)."""
    from ltr.features.store import apply as apply_repo

    try:
        result = apply_repo()
    except (ValueError, OSError, ImportError) as exc:
        fail(str(exc))
    except Exception as exc:  # Feast's own errors (registry, online store)
        fail(f"{type(exc).__name__}: {exc}")
    if as_json:
        emit_json(result)
        return
    typer.echo(
        f"applied project {result['project']} ({result['online_store']} online store) "
        f"in {result['seconds']} s"
    )
    for kind in ("entities", "feature_views", "feature_services"):
        typer.echo(f"  {kind:<17} {', '.join(result[kind])}")
    if result["deleted"]:
        typer.echo(f"  deleted           {', '.join(result['deleted'])}")
    typer.echo(f"  feast config      {result['feature_store_yaml']}")


@features_app.command()
def materialize(
    start: Annotated[
        str | None, typer.Option("--start", help="Window start, ISO 8601 (no zone = UTC).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="Window end, ISO 8601 (default: now).")
    ] = None,
    days: Annotated[
        int | None,
        typer.Option(
            "--days", min=1, help="Window of N days ending at --end (instead of --start)."
        ),
    ] = None,
    view: Annotated[
        list[str] | None,
        typer.Option("--view", help="Only this feature view (repeatable; default: all)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy the latest features with event time in --start..--end into the online store."""
    from ltr.features.store import materialize as run_materialize

    end_ts = _parse_time(end, "--end") if end else datetime.now(UTC)
    if start is not None and days is not None:
        fail("give --start or --days, not both")
    if start is None and days is None:
        fail("give the window start: --start ISO or --days N")
    start_ts = _parse_time(start, "--start") if start else end_ts - timedelta(days=days or 0)
    # Feast shows its per-view progress on stderr.
    try:
        result: dict[str, Any] = run_materialize(start_ts, end_ts, views=view or None)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    except Exception as exc:  # Feast's own errors (registry, online store)
        fail(f"{type(exc).__name__}: {exc}")
    if as_json:
        emit_json(result)
        return
    rows = ", ".join(f"{v} {n}" for v, n in result["rows"].items())
    typer.echo(
        f"materialized {result['total_rows']} rows ({rows}) into {result['online_store']} "
        f"in {result['seconds']} s ({result['rows_per_second']} rows/s); "
        f"{sum(result['written'].values())} newer than the online store's were written"
    )
