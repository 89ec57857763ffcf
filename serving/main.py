"""The FastAPI application of the rank service (OpenAPI at /docs)."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.api.routes import feedback, health, models, rank
from serving.app_state import AppState
from serving.middleware import BodySizeLimit
from serving.settings import ServingSettings

log = logging.getLogger(__name__)


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """Build the app; state (model store, Redis, readers) is created in the lifespan."""
    s = settings or ServingSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState.build(s)
        app.state.ltr = state
        await state.start()
        if s.gc_tuning:
            # Long-lived objects (models, sessions, app) move out of the collector's sight
            # and young-generation collections run less often: fewer latency spikes.
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 50, 100)
        log.info("serving %s from %s", sorted(state.store.snapshot.models), s.model_store_path)
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="ltr-platform rank service",
        version="1",
        lifespan=lifespan,
        description="Learning-to-rank scoring with ONNX Runtime and online features.",
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each bad field; the offending input is not echoed back (it may be
        huge, or a NaN that JSON cannot carry)."""
        errors = [
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
            for err in exc.errors()
        ]
        state = getattr(request.app.state, "ltr", None)
        if state is not None:
            state.telemetry.errors.labels(kind="validation").inc()
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}"
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    for module in (rank, feedback, models, health):
        app.include_router(module.router)
    app.add_middleware(BodySizeLimit, max_bytes=s.max_body_bytes)
    return app
