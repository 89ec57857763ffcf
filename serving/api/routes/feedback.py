"""POST /api/v1/feedback: clicks on a ranked answer go to the clicks stream.

Accepted only for answers this service (or a replica with the same secret) issued: the
``request_id`` of a rank answer is signed (:mod:`serving.request_ids`) and expires after
``LTR_FEEDBACK_MAX_AGE_S``. Each answer's clicks are recorded once (a second call for the
same id is answered 409); each client (by address) gets ``LTR_FEEDBACK_RATE_PER_S`` calls per
second with bursts of ``LTR_FEEDBACK_BURST`` (429 with ``Retry-After`` beyond).
"""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException, Request

from serving.api.deps import Gate, OffloadedJSONRoute, State
from serving.fairness import current_ticket
from serving.schemas import FeedbackRequest, FeedbackResponse

# the body is parsed and validated in a worker thread, and the Redis call runs there too
router = APIRouter(prefix="/api/v1", tags=["feedback"], route_class=OffloadedJSONRoute)


def _refuse(state: State, status: int, kind: str, detail: str, **headers: str) -> HTTPException:
    state.telemetry.errors.labels(kind=kind).inc()
    state.telemetry.requests.labels(endpoint="feedback", status=str(status)).inc()
    return HTTPException(status, detail, headers=headers or None)


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    responses={
        403: {"description": "request_id not issued by this service, or expired"},
        409: {"description": "feedback for this answer was already recorded"},
        429: {"description": "too many feedback calls from this client (see Retry-After)"},
    },
)
async def feedback(
    req: FeedbackRequest, request: Request, state: State, gate: Gate
) -> FeedbackResponse:
    ticket = current_ticket.get()  # the client as the gate sees it (trusted proxies too)
    client = ticket.client if ticket else (request.client.host if request.client else "unknown")
    wait = state.feedback_limiter.allow(client)
    if wait > 0:
        raise _refuse(
            state,
            429,
            "feedback_rate",
            "too many feedback calls from this client; retry later",
            **{"Retry-After": str(max(1, math.ceil(wait)))},
        )
    limit = state.settings.max_clicks
    if len(req.clicks) > limit:
        raise _refuse(
            state, 413, "limit", f"too many clicks: {len(req.clicks)} > {limit} (LTR_MAX_CLICKS)"
        )
    seen: set[str] = set()
    for i, c in enumerate(req.clicks):
        if c.doc_id in seen:
            raise _refuse(state, 422, "validation", f"clicks[{i}]: doc_id {c.doc_id!r} repeated")
        seen.add(c.doc_id)
    why = state.request_ids.check(req.request_id)
    if why is not None:
        raise _refuse(state, 403, "feedback_refused", why)
    ttl = max(1, math.ceil(state.settings.feedback_max_age_s))
    logged = await gate.run(
        lambda: state.events.log_feedback_once(
            req.request_id,
            req.user_id,
            [(c.doc_id, c.position) for c in req.clicks],
            ttl_seconds=ttl,
        )
    )
    if logged is None:
        raise _refuse(
            state, 409, "feedback_repeated", "feedback for this request_id was already recorded"
        )
    if not logged:
        state.telemetry.errors.labels(kind="event_log").inc()
    state.telemetry.requests.labels(endpoint="feedback", status="200").inc()
    return FeedbackResponse(request_id=req.request_id, accepted=len(req.clicks), logged=logged)
