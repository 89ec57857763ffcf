"""``ltr serve``: the FastAPI rank service under uvicorn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ltr.cli.output import fail


def serve(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    model_store: Annotated[
        Path | None, typer.Option("--model-store", help="model store root (default var/models)")
    ] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Serve /api/v1/rank, /api/v1/batch_rank, /api/v1/feedback, /api/v1/models, /health,
    /ready and /metrics. Settings come from LTR_* environment variables."""
    if model_store is not None:
        if not (model_store / "routing.json").is_file():
            fail(f"{model_store}: no routing.json (export a model and publish it first)")
        os.environ["LTR_MODEL_STORE"] = str(model_store.resolve())
    try:
        from serving.settings import ServingSettings

        settings = ServingSettings()
    except ValueError as exc:
        fail(str(exc))
    store = settings.model_store_path
    if not (store / "routing.json").is_file():
        fail(f"{store}: no routing.json (export a model and publish it first)")
    import uvicorn

    uvicorn.run(
        "serving.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
