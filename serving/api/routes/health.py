"""GET /health (liveness), GET /ready (model loaded, stores reachable), GET /metrics.

``/ready`` pings Redis when one is configured; a successful ping closes every circuit
breaker on that Redis (cache, events, online features), so once ``/ready`` answers 200 after
an outage, every path that needs Redis is tried again on the next request.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.api.deps import State
from serving.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/ready", response_model=ReadyResponse)
async def ready(state: State) -> Response:
    checks: dict[str, str] = {}
    ok = True
    if state.store.loaded:
        checks["models"] = "ok: " + ", ".join(sorted(state.store.snapshot.models))
    else:
        checks["models"] = "no model loaded"
        ok = False
    if state.redis is None:
        checks["redis"] = "not configured"
    else:
        client = state.redis
        try:
            await asyncio.to_thread(client.ping)
            checks["redis"] = "ok"
            # Redis answers: every breaker on it closes now (documented in README).
            state.redis_answered()
        except Exception as exc:  # any failure means not reachable
            checks["redis"] = f"unreachable: {type(exc).__name__}"
            ok = False
    body = ReadyResponse(ready=ok, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(state: State) -> Response:
    return Response(generate_latest(state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
