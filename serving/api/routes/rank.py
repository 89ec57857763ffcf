"""POST /api/v1/rank and POST /api/v1/batch_rank."""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, BackgroundTasks, HTTPException, Response

from serving.api.deps import State
from serving.features.schema import MissingRequiredFeatures
from serving.model_store import ModelNotAvailable
from serving.schemas import (
    BatchRankRequest,
    BatchRankResponse,
    RankRequest,
    RankResponse,
)
from serving.service import (
    FeaturesUnavailable,
    NonFiniteScore,
    RankOutcome,
    RequestLimitExceeded,
)

router = APIRouter(prefix="/api/v1", tags=["rank"])


def _classify(exc: Exception) -> tuple[int, str, str]:
    """(HTTP status, error kind, detail) of a domain error."""
    if isinstance(exc, RequestLimitExceeded):
        return exc.status, "limit", str(exc)
    if isinstance(exc, MissingRequiredFeatures):
        return 422, "missing_features", str(exc)
    if isinstance(exc, FeaturesUnavailable):
        return 503, "features_unavailable", str(exc)
    if isinstance(exc, ModelNotAvailable):
        return 503, "model_unavailable", str(exc)
    if isinstance(exc, NonFiniteScore) and exc.caused_by_request:
        return 422, "non_finite_score", str(exc)
    if isinstance(exc, FloatingPointError):
        return 500, "model_error", str(exc)
    raise exc


_DOMAIN_ERRORS = (
    RequestLimitExceeded,
    MissingRequiredFeatures,
    FeaturesUnavailable,
    ModelNotAvailable,
    FloatingPointError,
)


def _rank_one(state: State, req: RankRequest) -> RankOutcome:
    return state.service.rank(req, state.request_ids.issue())


def _count_success(state: State, outcome: RankOutcome, seconds: float) -> None:
    """Per-version counters of /api/v1/models (failures are counted by the service)."""
    model = state.store.snapshot.models.get(outcome.model_version)
    if model is not None:
        model.record(seconds, True)


def _json(payload: object) -> Response:
    # The payload is built from validated data by the service; serialising it once with
    # orjson instead of through the response model keeps 1000-candidate answers cheap.
    # The declared response_model still documents the shape in the OpenAPI schema.
    return Response(orjson.dumps(payload), media_type="application/json")


@router.post("/rank", response_model=RankResponse)
async def rank(req: RankRequest, state: State, background: BackgroundTasks) -> Response:
    t0 = time.perf_counter()
    tel = state.telemetry
    tel.candidates.observe(len(req.candidates))
    try:
        outcome = _rank_one(state, req)
    except _DOMAIN_ERRORS as exc:
        status, kind, detail = _classify(exc)
        tel.errors.labels(kind=kind).inc()
        tel.requests.labels(endpoint="rank", status=str(status)).inc()
        raise HTTPException(status, detail) from None
    for task in outcome.background:
        background.add_task(task)
    response = _json(outcome.payload)
    elapsed = time.perf_counter() - t0
    tel.request_latency.labels(
        endpoint="rank", model_version=outcome.model_version, variant=outcome.variant
    ).observe(elapsed)
    tel.requests.labels(endpoint="rank", status="200").inc()
    _count_success(state, outcome, elapsed)
    response.background = background
    return response


@router.post("/batch_rank", response_model=BatchRankResponse)
async def batch_rank(req: BatchRankRequest, state: State, background: BackgroundTasks) -> Response:
    t0 = time.perf_counter()
    tel = state.telemetry
    limit = state.settings.max_batch
    if len(req.requests) > limit:
        tel.errors.labels(kind="limit").inc()
        raise HTTPException(
            413, f"too many requests in batch: {len(req.requests)} > {limit} (LTR_MAX_BATCH)"
        )
    results: list[dict[str, object]] = []
    for item in req.requests:
        t_item = time.perf_counter()
        try:
            outcome = _rank_one(state, item)
        except _DOMAIN_ERRORS as exc:
            status, kind, detail = _classify(exc)
            tel.errors.labels(kind=kind).inc()
            results.append(
                {"ok": False, "result": None, "error": {"status": status, "detail": detail}}
            )
            continue
        for task in outcome.background:
            background.add_task(task)
        results.append({"ok": True, "result": outcome.payload, "error": None})
        _count_success(state, outcome, time.perf_counter() - t_item)
    tel.request_latency.labels(endpoint="batch_rank", model_version="", variant="").observe(
        time.perf_counter() - t0
    )
    tel.requests.labels(endpoint="batch_rank", status="200").inc()
    response = _json({"results": results})
    response.background = background
    return response
