"""POST /api/v1/rank and POST /api/v1/batch_rank.

Bodies over 8 KiB are parsed and validated off the event loop (:class:`OffloadedJSONRoute`).
A small request whose reads go to Redis is ranked on the loop with its Redis reads and
writes awaited (:meth:`RankService.rank_async`, bounded by LTR_INLINE_MAX_WORK and
LTR_INLINE_MAX_INFERENCE_MS); any other ranking runs in a worker thread of the request
gate, and so do its background tasks (cache write, impression log, shadow scoring). A 5xx
answer carries a fixed sentence; the exception behind it goes to the log, never to the
client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import orjson
from fastapi import APIRouter, BackgroundTasks, HTTPException, Response

from serving.api.deps import Gate, OffloadedJSONRoute, State
from serving.fairness import current_ticket
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

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["rank"], route_class=OffloadedJSONRoute)

#: What a client is told when the reason is internal (the log has the exception).
FEATURES_UNAVAILABLE = "online feature store unavailable"
MODEL_ERROR = "the model failed to score this request"


def _client_text(exc: BaseException, fallback: str) -> str:
    """The domain message of ``exc``, unless it quotes the exception behind it (a Redis
    error names host and port): then ``fallback``."""
    text = str(exc)
    behind = exc.__cause__ or exc.__context__
    if behind is not None and str(behind) and str(behind) in text:
        return fallback
    return text


def _classify(exc: Exception) -> tuple[int, str, str]:
    """(HTTP status, error kind, detail) of a domain error; server-side ones are logged."""
    if isinstance(exc, RequestLimitExceeded):
        return exc.status, "limit", str(exc)
    if isinstance(exc, MissingRequiredFeatures):
        return 422, "missing_features", str(exc)
    if isinstance(exc, NonFiniteScore) and exc.caused_by_request:
        return 422, "non_finite_score", str(exc)
    behind = exc.__cause__ or exc.__context__
    # one line per failure that has a cause; a breaker that skips Redis adds none
    log.log(
        logging.WARNING if behind is not None else logging.DEBUG,
        "rank failed: %s: %s (caused by %r)",
        type(exc).__name__,
        exc,
        behind,
    )
    if isinstance(exc, FeaturesUnavailable):
        return 503, "features_unavailable", _client_text(exc, FEATURES_UNAVAILABLE)
    if isinstance(exc, ModelNotAvailable):  # the model store's own sentences
        return 503, "model_unavailable", str(exc)
    if isinstance(exc, NonFiniteScore):  # the service's own sentence
        return 500, "model_error", str(exc)
    if isinstance(exc, FloatingPointError):
        return 500, "model_error", MODEL_ERROR
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
    """Per-version counters of /api/v1/models and /metrics (failures: counted by the service)."""
    model = state.store.snapshot.models.get(outcome.model_version)
    if model is not None:
        state.service.record_outcome(model, seconds, "ok")


def _json(payload: object) -> Response:
    # The payload is built from validated data by the service; serialising it once with
    # orjson instead of through the response model keeps 1000-candidate answers cheap.
    # The declared response_model still documents the shape in the OpenAPI schema.
    return Response(orjson.dumps(payload), media_type="application/json")


def _run_each(tasks: list[Callable[[], object]]) -> None:
    """Every task in turn; one that fails is logged and does not stop the others."""
    for task in tasks:
        try:
            task()
        except Exception:
            log.exception("background task %r failed", task)


async def _await_each(tasks: list[Callable[[], Awaitable[object]]]) -> None:
    """Every awaitable task in turn, on the event loop; one that fails is logged."""
    for task in tasks:
        try:
            await task()
        except Exception:
            log.exception("background task %r failed", task)


def _defer(
    gate: Gate,
    background: BackgroundTasks,
    tasks: list[Callable[[], object]],
    atasks: Sequence[Callable[[], Awaitable[object]]] = (),
) -> None:
    """Run ``tasks`` after the answer, in one step of the gate's worker threads (one thread
    hop for the cache write, the impression log and shadow scoring together), and
    ``atasks`` (Redis writes of a request answered on the loop) awaited on the loop.

    Without ``tasks`` the request gives its gate place back once answered: what remains
    is Redis writes awaited with their timeout, bounded on their own, and holding the
    place through them would turn answered requests into 503s under saturation."""
    if atasks:
        background.add_task(_await_each, list(atasks))
    if tasks:
        background.add_task(gate.run_after, _run_each, list(tasks))
        return
    ticket = current_ticket.get()
    if ticket is not None:
        ticket.leave_when_answered = True


@router.post("/rank", response_model=RankResponse)
async def rank(req: RankRequest, state: State, gate: Gate, background: BackgroundTasks) -> Response:
    t0 = time.perf_counter()
    tel = state.telemetry
    tel.candidates.observe(len(req.candidates))
    try:
        outcome = await state.service.rank_async(req, state.request_ids.issue(), gate.run)
    except _DOMAIN_ERRORS as exc:
        status, kind, detail = _classify(exc)
        tel.errors.labels(kind=kind).inc()
        tel.requests.labels(endpoint="rank", status=str(status)).inc()
        raise HTTPException(status, detail) from None
    _defer(gate, background, outcome.background, outcome.abackground)
    response = _json(outcome.payload)
    elapsed = time.perf_counter() - t0
    tel.request_latency.labels(
        endpoint="rank", model_version=outcome.model_version, variant=outcome.variant
    ).observe(elapsed)
    tel.requests.labels(endpoint="rank", status="200").inc()
    _count_success(state, outcome, elapsed)
    response.background = background
    return response


def _rank_all(state: State, items: list[RankRequest]) -> tuple[bytes, list[Callable[[], object]]]:
    """Rank each item (in a worker thread); the JSON answer and the background tasks."""
    tel = state.telemetry
    results: list[dict[str, object]] = []
    tasks: list[Callable[[], object]] = []
    for item in items:
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
        tasks.extend(outcome.background)
        results.append({"ok": True, "result": outcome.payload, "error": None})
        _count_success(state, outcome, time.perf_counter() - t_item)
    return orjson.dumps({"results": results}), tasks


@router.post("/batch_rank", response_model=BatchRankResponse)
async def batch_rank(
    req: BatchRankRequest, state: State, gate: Gate, background: BackgroundTasks
) -> Response:
    t0 = time.perf_counter()
    tel = state.telemetry
    limit = state.settings.max_batch
    if len(req.requests) > limit:
        tel.errors.labels(kind="limit").inc()
        raise HTTPException(
            413, f"too many requests in batch: {len(req.requests)} > {limit} (LTR_MAX_BATCH)"
        )
    body, tasks = await gate.run(_rank_all, state, req.requests)
    _defer(gate, background, tasks)
    tel.request_latency.labels(endpoint="batch_rank", model_version="", variant="").observe(
        time.perf_counter() - t0
    )
    tel.requests.labels(endpoint="batch_rank", status="200").inc()
    response = Response(body, media_type="application/json")
    response.background = background
    return response
