"""The CLI's output layer: plain text or JSON, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer


def emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line reason on stderr and exit non-zero."""
    first = " ".join(str(message).split())
    typer.echo(f"error: {first}", err=True)
    raise typer.Exit(code)
