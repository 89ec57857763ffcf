"""Entry point of the ``ltr`` command: one Typer app, commands registered per module."""

from __future__ import annotations

import importlib
import logging
import os

import typer

app = typer.Typer(
    name="ltr",
    help="ltr-platform: learning-to-rank research, evaluation, export and serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log progress details"),
) -> None:
    """ltr-platform command line."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        for noisy in ("mlflow", "alembic", "feast"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


# Each module defines ``register(app)``; modules stay light at import time.
_COMMAND_MODULES = (
    "ltr.cli.data",
    "ltr.cli.features",
    "ltr.cli.evaluate",
    "ltr.cli.train",
    "ltr.cli.experiments",
    "ltr.cli.export",
    "ltr.cli.demo",
    "ltr.cli.serve",
    "ltr.cli.pipeline",
    "ltr.cli.promote",
    "ltr.cli.online",
)

for _name in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a module not written yet
        if exc.name != _name:
            raise
        continue
    _mod.register(app)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
