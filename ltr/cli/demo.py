"""``ltr demo``: the whole research loop on embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ltr.cli.output import emit_json, fail


def demo(
    train: Annotated[
        Path | None, typer.Option(help="real LETOR training file (default: synthetic)")
    ] = None,
    valid: Annotated[Path | None, typer.Option(help="validation file (with --train)")] = None,
    test: Annotated[Path | None, typer.Option(help="test file (with --train)")] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="research loop only (train, compare, export, serve) without the Airflow DAGs",
        ),
    ] = False,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="stop after the export (no online store, no service)")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The whole loop on embedded defaults: the feature, retrain and promotion DAGs on two
    days of synthetic data, then the rank service serving the promoted model. With --quick
    or real files (--train/--valid/--test): train two rankers, compare, export, serve."""
    if train is not None and valid is None:
        fail("--valid is required with --train")
    if train is None and not quick:
        from ltr.demo import run_platform_demo
        from ltr.settings import get_settings

        try:
            result = run_platform_demo(
                get_settings(), (lambda _m: None) if json_out else typer.echo
            )
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            fail(str(exc))
        if json_out:
            emit_json(result)
        return
    from ltr.demo import run_demo
    from ltr.settings import get_settings

    # The research loop keeps its own state under <LTR_HOME>/quick (runs, models, MLflow
    # unless LTR_MLFLOW_TRACKING_URI is set, offline store) and its own Feast project (the
    # online store): it never collides with the platform demo's data or routing, so both
    # commands run in any order on the same LTR_HOME.
    base = get_settings()
    settings = base.model_copy(
        update={"home": base.home / "quick", "feast_project": f"{base.feast_project}_quick"}
    )
    try:
        result = run_demo(
            train=train,
            valid=valid,
            test=test,
            settings=settings,
            say=(lambda _m: None) if json_out else typer.echo,
            serve=not no_serve,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    if json_out:
        emit_json(result)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
