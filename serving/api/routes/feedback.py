"""POST /api/v1/feedback: clicks on a ranked response go to the clicks stream."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from serving.api.deps import State
from serving.schemas import FeedbackRequest, FeedbackResponse

router = APIRouter(prefix="/api/v1", tags=["feedback"])


@router.post("/feedback", response_model=FeedbackResponse)
async def feedback(req: FeedbackRequest, state: State) -> FeedbackResponse:
    limit = state.settings.max_clicks
    if len(req.clicks) > limit:
        state.telemetry.errors.labels(kind="limit").inc()
        raise HTTPException(413, f"too many clicks: {len(req.clicks)} > {limit} (LTR_MAX_CLICKS)")
    logged = state.events.log_clicks(
        req.request_id, req.user_id, [(c.doc_id, c.position) for c in req.clicks]
    )
    if not logged:
        state.telemetry.errors.labels(kind="event_log").inc()
    state.telemetry.requests.labels(endpoint="feedback", status="200").inc()
    return FeedbackResponse(request_id=req.request_id, accepted=len(req.clicks), logged=logged)
