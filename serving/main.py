"""The FastAPI application of the rank service (OpenAPI at /docs)."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.api.deps import TruncatedValidationError
from serving.api.routes import feedback, health, models, rank
from serving.app_state import AppState
from serving.body_check import BodyChecker
from serving.middleware import Admission, BodySizeLimit, RequestGate
from serving.schemas import MAX_REPORTED_ERRORS
from serving.settings import ServingSettings

log = logging.getLogger(__name__)

#: The data-plane endpoints: admitted through the request gate (503 beyond its capacity).
GATED_PATHS = ("/api/v1/rank", "/api/v1/batch_rank", "/api/v1/feedback")
#: Longest location part or type echoed in a 422 (a feature name can be long).
MAX_ERROR_TEXT = 100


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """Build the app; state (model store, Redis, readers) is created in the lifespan."""
    s = settings or ServingSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState.build(s)
        app.state.ltr = state
        await state.start()
        sys.setswitchinterval(s.gil_switch_interval_ms / 1000.0)
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
            if checker is not None:
                checker.close()

    app = FastAPI(
        title="ltr-platform rank service",
        version="1",
        lifespan=lifespan,
        description="Learning-to-rank scoring with ONNX Runtime and online features.",
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each bad field, at most MAX_REPORTED_ERRORS of them (``errors_omitted``
        counts the other errors found; ``errors_complete`` is false when validation stopped
        at the item that filled the list, so more may follow); the offending input is never
        echoed back (it may be huge, or a NaN that JSON cannot carry), and long names in a
        location are cut short."""
        all_errors = exc.errors()
        omitted, complete = 0, True
        if isinstance(exc, TruncatedValidationError):
            omitted, complete = exc.omitted, exc.complete
        omitted += max(0, len(all_errors) - MAX_REPORTED_ERRORS)
        errors = [_error_entry(err) for err in all_errors[:MAX_REPORTED_ERRORS]]
        state = getattr(request.app.state, "ltr", None)
        if state is not None:
            state.telemetry.errors.labels(kind="validation").inc()
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}"
        payload = {
            "detail": detail,
            "errors": errors,
            "errors_omitted": omitted,
            "errors_complete": complete,
        }
        return JSONResponse(payload, status_code=422)

    gate = RequestGate(
        s.request_workers,
        s.request_queue,
        s.retry_after_s,
        client_share=s.client_share,
        heavy_body_bytes=s.heavy_body_bytes,
        trusted_proxies=s.trusted_networks,
    )
    app.state.gate = gate

    def _rejected(path: str, status: int) -> None:
        state = getattr(app.state, "ltr", None)
        if state is not None:
            kind = "overloaded" if status == 503 else "client_share"
            state.telemetry.errors.labels(kind=kind).inc()
            endpoint = path.rsplit("/", 1)[-1]
            state.telemetry.requests.labels(endpoint=endpoint, status=str(status)).inc()

    gate.on_reject = _rejected
    # bodies above LTR_HEAVY_BODY_BYTES: parsed in a low-priority helper process
    checker = BodyChecker(s.body_check_processes) if s.body_check_processes > 0 else None
    app.state.body_checker = checker
    if checker is not None:

        def _check_failed() -> None:
            state = getattr(app.state, "ltr", None)
            if state is not None:
                state.telemetry.errors.labels(kind="body_check").inc()

        checker.on_failure = _check_failed

    for module in (rank, feedback, models, health):
        app.include_router(module.router)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=s.body_limit_bytes,
        timeout_s=s.body_read_timeout_s,
        max_streamed_bytes=s.max_streamed_body_bytes,
    )
    # admitted once its body is in (a slow body holds no place); over capacity: 503 at once
    app.add_middleware(Admission, gate=gate, paths=GATED_PATHS)
    return app


def _text(value: object, limit: int = MAX_ERROR_TEXT) -> str:
    """``value`` as text for a 422 body: at most ``limit`` characters, valid UTF-8."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text.encode("utf-8", "replace").decode("utf-8")


def _error_entry(err: Any) -> dict[str, Any]:
    return {
        "loc": [_text(p) for p in err.get("loc", ())],
        "msg": _text(err.get("msg", ""), 2 * MAX_ERROR_TEXT),
        "type": _text(err.get("type", "")),
    }
