"""``ltr promote`` (canary or blue-green rollout with automatic rollback) and ``ltr rollback``."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from ltr.cli.output import emit_json, fail

_REGISTRY_HELP = "MLflow registered model whose aliases follow production"


def _models_dir(models_dir: Path | None) -> Path:
    from ltr.settings import get_settings

    return models_dir or get_settings().models_dir


def promote(
    version: Annotated[
        str | None,
        typer.Argument(
            help="model-store version (models/versions/<v>); not with --resume/--status"
        ),
    ] = None,
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
    apply_timeout: Annotated[
        float,
        typer.Option("--apply-timeout", help="seconds for every replica to apply a routing change"),
    ] = 60.0,
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
    replica: Annotated[
        list[str] | None,
        typer.Option(
            "--replica",
            help="a replica's URL, once per replica: their counters are summed (repeat)",
        ),
    ] = None,
    prometheus_url: Annotated[
        str | None,
        typer.Option("--prometheus-url", help="judge from this Prometheus's fleet-wide queries"),
    ] = None,
    prometheus_selector: Annotated[
        str,
        typer.Option(
            "--prometheus-selector", help='label matchers of the service, e.g. job="ltr-serving"'
        ),
    ] = "",
    kubernetes_service: Annotated[
        str | None,
        typer.Option(
            "--kubernetes-service",
            help="[namespace/]name of the Service whose endpoints are the replicas (in a pod)",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="finish the rollout a dead promotion left in routing.json (or undo it when "
            "its window has passed)",
        ),
    ] = False,
    status: Annotated[
        bool,
        typer.Option("--status", help="show the rollout in flight and whether it is overdue"),
    ] = False,
    allow_ungated: Annotated[
        bool,
        typer.Option(
            "--allow-ungated",
            help="promote a version with no passing gate verdict that is not registered "
            "(needs --override-reason; logged and recorded in promotions.jsonl)",
        ),
    ] = False,
    override_reason: Annotated[
        str | None,
        typer.Option(
            "--override-reason", help="why the gates are overridden (with --allow-ungated)"
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Roll VERSION out: check the artifact, shift traffic, watch the service's error rate
    and latency, then promote it or roll back automatically (exit 1 with the reason).

    Only a version the retrain accepted (its gates.json) or one registered in the MLflow
    registry may be promoted; anything else needs --allow-ungated --override-reason."""
    from ltr.promotion import PromotionError, PromotionPlan, run_promotion

    if strategy.replace("-", "_") not in ("canary", "blue_green"):
        fail(f"--strategy must be canary or blue-green, not {strategy!r}")
    sources = {
        "service_url": service_url,
        "replica_urls": tuple(replica) if replica else None,
        "prometheus_url": prometheus_url,
        "prometheus_selector": prometheus_selector or None,
        "kubernetes_service": kubernetes_service,
    }
    if status or resume:
        if version is not None:
            fail("--status and --resume take no VERSION (they act on routing.json's rollout)")
        _status_or_resume(
            _models_dir(models_dir), resume, sources, None if no_registry else registry, json_out
        )
        return
    if version is None:
        fail("VERSION is required (or --resume / --status)")
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
            apply_timeout_s=apply_timeout,
            replica_urls=tuple(replica or ()),
            prometheus_url=prometheus_url,
            prometheus_selector=prometheus_selector,
            kubernetes_service=kubernetes_service,
            allow_ungated=allow_ungated,
            override_reason=override_reason,
        )
        with _sigterm_interrupts():
            result = run_promotion(
                plan,
                _models_dir(models_dir),
                registry_name=None if no_registry else registry,
                observe_traffic=not no_observe,
            )
    except (PromotionError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:
        fail(f"interrupted ({exc or 'SIGINT'}): the rollout was rolled back", code=130)
    _finish(result, json_out)


def _finish(result: dict[str, Any], json_out: bool) -> None:
    _report(result, json_out)
    if result["status"] == "rolled_back":
        fail(f"rolled back: {result['reason']}", code=1)
    if result["status"] == "preempted":
        fail(f"pre-empted: {result['reason']}", code=1)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a stopped container, a killed Airflow task) interrupts like Ctrl-C, so the
    promotion rolls its canary back before it exits (SIGKILL cannot be caught: then
    routing.json keeps the rollout for `ltr promote --resume`, and it alerts when overdue)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    try:
        old = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _status_or_resume(
    models_dir: Path,
    resume: bool,
    sources: dict[str, Any],
    registry_name: str | None,
    json_out: bool,
) -> None:
    from ltr.promotion import PromotionError, promotion_status, resume_promotion

    if not resume:
        st = promotion_status(models_dir)
        if json_out:
            emit_json(st)
            return
        ro = st["rollout"]
        if not ro:
            typer.echo(f"no rollout in flight; {st['production']} serves ({st['strategy']})")
            return
        state = f"OVERDUE by {st['overdue_s']:.0f} s" if st["overdue"] else "within its window"
        who = "a promotion is running it" if st["running"] else "no promotion is running it"
        typer.echo(
            f"rollout of {ro['version']} (promotion {ro['promotion_id']}) against "
            f"{st['production']}: {state} (due {st['deadline']}); {who}"
        )
        if st["overdue"] and not st["running"]:
            typer.echo("finish or undo it: ltr promote --resume (or ltr rollback)")
        return
    try:
        with _sigterm_interrupts():
            result = resume_promotion(models_dir, registry_name=registry_name, overrides=sources)
    except (PromotionError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:
        fail(f"interrupted ({exc or 'SIGINT'}): the rollout stays; resume it again", code=130)
    if result["status"] == "nothing_to_resume":
        if json_out:
            emit_json(result)
        else:
            typer.echo(f"nothing to resume: {result['reason']}")
        return
    _finish(result, json_out)


def _report(result: dict[str, Any], json_out: bool) -> None:
    if json_out:
        emit_json(result)
        return
    status = result["status"]
    if status == "already_promoted":
        typer.echo(f"{result['version']} already serves all traffic; nothing changed")
        return
    eligibility = result.get("eligibility") or {}
    if eligibility.get("eligible_by") == "override":
        typer.echo(f"override  {eligibility['detail']}")
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
