"""GET /health (liveness), GET /ready (readiness), GET /metrics.

``/ready`` is 503 only when the service cannot answer: no model loaded, or the feature
store's Redis failed ``READY_REDIS_FAILURES`` pings in a row while the production version
needs its online features. A Redis that does not answer while the production version scores
from request features is reported as ``degraded`` and the pod stays ready (a Redis hiccup
must not take every replica out of the Service at once). A successful ping closes every
circuit breaker on that Redis (cache, events, online features), so the path that needs Redis
is tried again on the next request. A model store serving less than routing.json asks for
(a referenced version could not be loaded) is reported in ``checks.models``.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.api.deps import State
from serving.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])

#: Failed pings in a row before a Redis the production model needs fails readiness.
READY_REDIS_FAILURES = 3


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@router.get("/ready", response_model=ReadyResponse)
async def ready(state: State) -> Response:
    checks: dict[str, str] = {}
    ok = True
    if state.store.loaded:
        served = ", ".join(sorted(state.store.snapshot.models))
        degraded = state.store.degraded
        checks["models"] = f"degraded: {degraded}" if degraded else f"ok: {served}"
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
            state.redis_ping_failures = 0
            # Redis answers: every breaker on it closes now (documented in README).
            state.redis_answered()
        except Exception as exc:  # any failure means not reachable
            state.redis_ping_failures += 1
            n, kind = state.redis_ping_failures, type(exc).__name__
            if state.answers_without_redis():
                checks["redis"] = (
                    f"degraded: unreachable ({kind}); the production model answers from "
                    "request features, without cache and events"
                )
            elif n < READY_REDIS_FAILURES:
                checks["redis"] = f"degraded: unreachable ({kind}), {n} failed ping(s) in a row"
            else:
                checks["redis"] = (
                    f"unreachable: {kind}, {n} pings in a row; the production model needs "
                    "its online features"
                )
                ok = False
    body = ReadyResponse(ready=ok, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(state: State) -> Response:
    return Response(generate_latest(state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
