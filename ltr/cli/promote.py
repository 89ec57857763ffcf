"""``ltr promote`` (canary or blue-green rollout with automatic rollback) and ``ltr rollback``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ltr.cli.output import emit_json, fail

_REGISTRY_HELP = "MLflow registered model whose aliases follow production"


def _models_dir(models_dir: Path | None) -> Path:
    from ltr.settings import get_settings

    return models_dir or get_settings().models_dir


def promote(
    version: Annotated[str, typer.Argument(help="model-store version (models/versions/<v>)")],
    strategy: Annotated[
        str, typer.Option(help="canary (a share of users first) | blue-green (switch all)")
    ] = "canary",
    canary_percent: Annotated[
        float, typer.Option("--canary-percent", help="share of users on the new version")
    ] = 10.0,
    observe_minutes: Annotated[
        float, typer.Option("--observe-minutes", help="how long to watch the service")
    ] = 10.0,
    max_error_rate: Annotated[
        float, typer.Option("--max-error-rate", help="roll back above this error rate")
    ] = 0.01,
    max_p99_ms: Annotated[
        float, typer.Option("--max-p99-ms", help="roll back above this p99 latency")
    ] = 50.0,
    min_requests: Annotated[
        int, typer.Option("--min-requests", help="requests needed to decide (else roll back)")
    ] = 50,
    service_url: Annotated[
        str | None, typer.Option("--service-url", help="rank service, e.g. http://127.0.0.1:8000")
    ] = None,
    models_dir: Annotated[
        Path | None, typer.Option("--models-dir", help="model store root (default var/models)")
    ] = None,
    registry: Annotated[str, typer.Option("--registry", help=_REGISTRY_HELP)] = "ltr-ranker",
    no_registry: Annotated[
        bool, typer.Option("--no-registry", help="leave the MLflow registry alone")
    ] = False,
    no_observe: Annotated[
        bool, typer.Option("--no-observe", help="promote without watching traffic")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Roll VERSION out: check the artifact, shift traffic, watch the service's error rate
    and latency, then promote it or roll back automatically (exit 1 with the reason)."""
    from ltr.promotion import PromotionError, PromotionPlan, run_promotion

    if strategy.replace("-", "_") not in ("canary", "blue_green"):
        fail(f"--strategy must be canary or blue-green, not {strategy!r}")
    try:
        plan = PromotionPlan(
            store_version=version,
            strategy="canary" if strategy == "canary" else "blue_green",
            canary_percent=canary_percent,
            observe_minutes=observe_minutes,
            max_error_rate=max_error_rate,
            max_p99_ms=max_p99_ms,
            min_requests=min_requests,
            service_url=service_url,
        )
        result = run_promotion(
            plan,
            _models_dir(models_dir),
            registry_name=None if no_registry else registry,
            observe_traffic=not no_observe,
        )
    except (PromotionError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    _report(result, json_out)
    if result["status"] == "rolled_back":
        fail(f"rolled back: {result['reason']}", code=1)


def _report(result: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(result)
        return
    status = result["status"]
    if status == "already_promoted":
        typer.echo(f"{result['version']} already serves all traffic; nothing changed")
        return
    for step in result.get("steps", []):
        line = f"{step['step']:<9} {step.get('from') or '-'} -> {step.get('to') or '-'}"
        if step.get("reason"):
            line += f"  ({step['reason']})"
        typer.echo(line)
    if status == "promoted":
        typer.echo(f"promoted  {result['version']} now serves all traffic")


def rollback(
    to: Annotated[
        str | None, typer.Option("--to", help="version to serve (default: previous production)")
    ] = None,
    reason: Annotated[str, typer.Option(help="why, for the promotion history")] = "manual rollback",
    models_dir: Annotated[
        Path | None, typer.Option("--models-dir", help="model store root (default var/models)")
    ] = None,
    registry: Annotated[str, typer.Option("--registry", help=_REGISTRY_HELP)] = "ltr-ranker",
    no_registry: Annotated[
        bool, typer.Option("--no-registry", help="leave the MLflow registry alone")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Serve the previous production version again (or --to VERSION), recorded in
    promotions.jsonl."""
    from ltr.promotion import PromotionError
    from ltr.promotion import rollback as do_rollback

    try:
        result = do_rollback(
            _models_dir(models_dir),
            reason=reason,
            to_version=to,
            registry_name=None if no_registry else registry,
        )
    except (PromotionError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    if json_out:
        emit_json(result)
        return
    if not result["changed"]:
        typer.echo(f"{result['to']} already serves all traffic; nothing changed")
        return
    typer.echo(f"rolled back {result['from']} -> {result['to']} ({result['reason']})")
    reg = result.get("registry") or {}
    if reg.get("error"):
        typer.echo(f"warning: registry not updated: {reg['error']}", err=True)


def register(app: typer.Typer) -> None:
    app.command("promote")(promote)
    app.command("rollback")(rollback)
