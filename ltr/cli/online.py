"""``ltr simulate-traffic`` and ``ltr events drain``: the online half of the loop from a shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltr.cli.output import emit_json, fail

events_app = typer.Typer(help="The impression/click event log: drain it into the offline store.")


def simulate_traffic(
    url: Annotated[str, typer.Option(help="the rank service, on this machine (loopback)")],
    data: Annotated[Path, typer.Option(help="LETOR/SVMlight file of held-out queries")],
    queries: Annotated[int, typer.Option(help="simulated queries to send")] = 2000,
    seed: Annotated[int, typer.Option(help="seed of queries, users and clicks")] = 0,
    click_model: Annotated[str, typer.Option(help="pbm or cascade")] = "pbm",
    eta: Annotated[float, typer.Option(help="PBM examination (1/rank)^eta")] = 1.0,
    noise: Annotated[float, typer.Option(help="click probability of an irrelevant result")] = 0.1,
    users: Annotated[int, typer.Option(help="size of the simulated user pool")] = 500,
    top_k: Annotated[int, typer.Option(help="results shown per query")] = 10,
    send_features: Annotated[
        bool, typer.Option(help="send the file's feature values (else ids only)")
    ] = False,
    concurrency: Annotated[int, typer.Option(help="parallel simulated clients")] = 4,
    all_queries: Annotated[
        bool, typer.Option(help="also queries without a relevant document (pure noise clicks)")
    ] = False,
    max_seconds: Annotated[float, typer.Option(help="stop after this long")] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Send simulated users to a running service: rank requests for held-out queries, then
    clicks from a seeded click model on the graded labels (docs/online.md)."""
    from ltr.data.letor import read_letor
    from ltr.online.clickmodel import ClickModel
    from ltr.online.simulate import SimulationError, TrafficSimulator

    if not data.is_file():
        fail(f"{data}: no such file")
    try:
        ds = read_letor(data)
        model = ClickModel(
            click_model,  # type: ignore[arg-type]
            eta=eta,
            noise=noise,
            max_grade=max(1, int(ds.labels.max())),
        )
        sim = TrafficSimulator(
            url,
            ds,
            click_model=model,
            seed=seed,
            n_users=users,
            top_k=top_k,
            send_features=send_features,
            concurrency=concurrency,
            all_queries=all_queries,
        )
        report = sim.run(queries, max_seconds=max_seconds)
    except (SimulationError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        emit_json(report.to_dict())
        return
    typer.echo(
        f"{report.answered}/{report.sent} queries answered in {report.seconds:.1f} s, "
        f"{report.clicks} clicks in {report.feedback_sent} feedback calls"
    )
    typer.echo("variants: " + ", ".join(f"{k} {v}" for k, v in sorted(report.variants.items())))
    typer.echo(
        "NDCG@10 of the lists shown (graded labels): "
        + ", ".join(f"{k} {v:.4f}" for k, v in report.shown_ndcg_at_10.items())
    )
    if report.errors:
        typer.echo(f"errors: {report.errors}")
    if report.stopped_early:
        typer.echo(f"stopped early: {report.stopped_early}")


@events_app.command("drain")
def drain(
    max_entries: Annotated[
        int | None, typer.Option(help="at most this many entries per stream")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Move impressions and clicks from Redis Streams into the offline store, exactly once."""
    import redis

    from ltr.online.drain import Drainer, DrainError
    from ltr.settings import get_settings

    settings = get_settings()
    url = settings.events_redis
    if not url:
        fail("no event log configured: set LTR_EVENTS_REDIS_URL or LTR_REDIS_URL")
    prefix = settings.events_stream_prefix
    streams = {"impressions": f"{prefix}:impressions", "clicks": f"{prefix}:clicks"}
    try:
        client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
        report = Drainer(client, settings.events_dir, streams=streams).drain(max_entries)
    except (DrainError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        emit_json(report.to_dict())
        return
    for kind, s in report.streams.items():
        typer.echo(
            f"{kind}: {s.written} written in {len(s.files)} file(s), {s.acked} acknowledged, "
            f"watermark {s.watermark}, {s.trimmed} trimmed from Redis"
        )
    typer.echo(f"offline store: {settings.events_dir}")


def register(app: typer.Typer) -> None:
    app.command("simulate-traffic")(simulate_traffic)
    app.add_typer(events_app, name="events")
