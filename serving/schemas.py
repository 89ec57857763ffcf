"""Request and response models of the HTTP API (pydantic v2). Hard ceilings live here; the
configurable limits (settings) are checked in the routes with precise messages."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

#: The largest finite float32: the model's input is float32, so a larger value would become inf.
FLOAT32_MAX = 3.4028234663852886e38


def _fits_float32(value: float) -> float:
    if abs(value) > FLOAT32_MAX:
        raise ValueError(f"feature values must lie within float32 range (|x| <= {FLOAT32_MAX:.4g})")
    return value


Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]
FiniteFloat = Annotated[
    float, Field(allow_inf_nan=False, strict=True), AfterValidator(_fits_float32)
]
HARD_MAX_CANDIDATES = 100_000
HARD_MAX_BATCH = 1000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Candidate(_Request):
    doc_id: Id
    features: dict[str, FiniteFloat] | None = Field(
        None, description="request-supplied feature values by name (override online features)"
    )


class RankRequest(_Request):
    query_id: Id
    user_id: Id | None = None
    candidates: list[Candidate] = Field(min_length=1, max_length=HARD_MAX_CANDIDATES)
    top_k: int | None = Field(None, ge=1, le=HARD_MAX_CANDIDATES)

    @field_validator("candidates")
    @classmethod
    def _unique_doc_ids(cls, v: list[Candidate]) -> list[Candidate]:
        seen: set[str] = set()
        for i, c in enumerate(v):
            if c.doc_id in seen:
                raise ValueError(f"duplicate doc_id {c.doc_id!r} at candidates[{i}]")
            seen.add(c.doc_id)
        return v


class BatchRankRequest(_Request):
    requests: list[RankRequest] = Field(min_length=1, max_length=HARD_MAX_BATCH)


class Click(_Request):
    doc_id: Id
    position: int = Field(ge=0, le=HARD_MAX_CANDIDATES)


class FeedbackRequest(_Request):
    request_id: Id
    user_id: Id | None = None
    clicks: list[Click] = Field(max_length=HARD_MAX_CANDIDATES)


class RankedDoc(BaseModel):
    doc_id: str
    score: float
    rank: int


class RankResponse(BaseModel):
    request_id: str
    model_version: str
    variant: str
    ranked: list[RankedDoc]
    cached: bool


class BatchItemError(BaseModel):
    status: int
    detail: str


class BatchItem(BaseModel):
    ok: bool
    result: RankResponse | None = None
    error: BatchItemError | None = None


class BatchRankResponse(BaseModel):
    results: list[BatchItem]


class FeedbackResponse(BaseModel):
    request_id: str
    accepted: int
    logged: bool


class VersionInfo(BaseModel):
    version: str
    model_type: str | None
    n_features: int
    feature_views: list[str]
    requests: int
    errors: int
    mean_latency_ms: float | None
    roles: list[str]


class ModelsResponse(BaseModel):
    routing_version: int
    strategy: str
    production: str
    weights: dict[str, float]
    shadow: str | None
    interleave: list[str] | None
    versions: list[VersionInfo]


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    ready: bool
    checks: dict[str, str]
