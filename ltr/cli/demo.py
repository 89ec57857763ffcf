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
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="stop after the export (no online store, no service)")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Generate data, train two rankers, compare them, export the better one to ONNX."""
    if train is not None and valid is None:
        fail("--valid is required with --train")
    from ltr.demo import run_demo

    try:
        result = run_demo(
            train=train,
            valid=valid,
            test=test,
            say=(lambda _m: None) if json_out else typer.echo,
            serve=not no_serve,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    if json_out:
        emit_json(result)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
