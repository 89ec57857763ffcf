"""Request and response models of the HTTP API (pydantic v2), and the bounded parse of a
request body into them.

Hard ceilings live in the models; the configurable limits (settings) are checked before
validation (:func:`parse_rank_request` and its siblings, which run in a worker thread) and
again by the service, with precise messages.

Text rules (ids and feature names): 1 to 256 characters, no control characters
(U+0000-U+001F, U+007F), valid Unicode (a lone surrogate is refused by the JSON parser, and
by pydantic for a request built in Python); a breach is a 422 naming the field.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import orjson
import pydantic_core
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

#: The largest finite float32: the model's input is float32, so a larger value would become inf.
FLOAT32_MAX = 3.4028234663852886e38
#: Longest id or feature name, in characters.
MAX_TEXT_CHARS = 256
_CONTROL_CHAR = re.compile("[\x00-\x1f\x7f]")


def _fits_float32(value: float) -> float:
    if abs(value) > FLOAT32_MAX:
        raise ValueError(f"feature values must lie within float32 range (|x| <= {FLOAT32_MAX:.4g})")
    return value


def _no_control_characters(value: str) -> str:
    bad = _CONTROL_CHAR.search(value)
    if bad is not None:
        code = ord(bad.group())
        raise ValueError(f"contains a control character (U+{code:04X}) at position {bad.start()}")
    return value


Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS),
    AfterValidator(_no_control_characters),
]
FeatureName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS),
    AfterValidator(_no_control_characters),
]
FiniteFloat = Annotated[
    float, Field(allow_inf_nan=False, strict=True), AfterValidator(_fits_float32)
]
HARD_MAX_CANDIDATES = 100_000
HARD_MAX_BATCH = 1000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Candidate(_Request):
    doc_id: Id
    features: dict[FeatureName, FiniteFloat] | None = Field(
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
    errors: int  # failed on the server's side (5xx)
    client_errors: int = 0  # refused for the request's fault (4xx)
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


# ----------------------------------------------------------------- bounded body parse
#: A 422 reports at most this many errors, and says how many more there were.
MAX_REPORTED_ERRORS = 10

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


class BodyRejected(ValueError):
    """The body's structure breaks a configurable limit: answered 413 before validation."""


class InvalidBody(ValueError):
    """The body is not JSON or does not validate: ``errors`` are pydantic-style dicts
    (``type``, ``loc`` starting with ``"body"``, ``msg``; never the input), the first
    :data:`MAX_REPORTED_ERRORS` in field order, and ``omitted`` counts the other errors
    found. ``complete`` is False when validation stopped early: a list's items are
    validated up to the one that brings the errors to :data:`MAX_REPORTED_ERRORS`, so
    that a body of 100,000 bad values costs the validation of a few, and the items after it
    may hold more errors than ``omitted`` counts."""

    def __init__(self, errors: list[dict[str, Any]], omitted: int, complete: bool = True) -> None:
        more = "" if complete else " at least"
        super().__init__(f"{len(errors) + omitted}{more} validation error(s)")
        self.errors = errors
        self.omitted = omitted
        self.complete = complete


@dataclass(frozen=True)
class BodyLimits:
    """The configurable limits checked on a parsed body before it is validated."""

    max_candidates: int
    max_features_per_candidate: int
    max_batch: int
    max_clicks: int


@dataclass
class _Errors:
    """Validation errors: the first ``keep`` of them, and the count of all."""

    keep: int = MAX_REPORTED_ERRORS
    kept: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    #: True once items of a list were left unvalidated (``keep`` errors were found)
    stopped: bool = False

    @property
    def full(self) -> bool:
        return len(self.kept) >= self.keep

    def add(self, errors: Iterable[Any], loc: Loc, skip: Loc | None = None) -> None:
        for err in errors:
            where = (*loc, *err["loc"])
            if where == skip:
                continue
            self.total += 1
            if len(self.kept) < self.keep:
                self.kept.append({"type": str(err["type"]), "loc": where, "msg": str(err["msg"])})

    def merge(self, parts: Iterable[_Errors], order: list[str], depth: int) -> None:
        """Add ``parts``, keeping their errors in the order of the model's fields."""
        rank = {name: i for i, name in enumerate(order)}
        parts = list(parts)
        kept = [e for part in parts for e in part.kept]
        kept.sort(
            key=lambda e: rank.get(e["loc"][depth], len(rank)) if len(e["loc"]) > depth else -1
        )
        for err in kept:
            if len(self.kept) < self.keep:
                self.kept.append(err)
        self.total += sum(part.total for part in parts)
        self.stopped = self.stopped or any(part.stopped for part in parts)


def load_json(raw: bytes) -> Any:
    """Parse ``raw`` with orjson; a body orjson refuses is read again by pydantic's parser,
    which accepts NaN and Infinity, so that validation can name the field that holds one.
    Lone surrogate escapes, invalid UTF-8 and nesting deeper than 1024 are refused."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=True)
    except ValueError:
        error = {"type": "json_invalid", "loc": ("body",), "msg": f"JSON decode error: {reason}"}
        raise InvalidBody([error], 0) from None


def _validate(
    model: type[M], data: Any, errors: _Errors, loc: Loc, skip: Loc | None = None
) -> M | None:
    """``model.model_validate(data)``, or None with the errors added to ``errors``.

    Keys the model does not have are reported here rather than by pydantic, which would
    build one error per key in one call (a body of 400k unknown keys).
    """
    before = errors.total
    fields = model.model_fields
    if isinstance(data, dict) and len(data) > len(fields):
        unknown = [k for k in data if k not in fields]
        extra = "Extra inputs are not permitted"
        first = unknown[: errors.keep]
        errors.add(({"type": "extra_forbidden", "loc": (k,), "msg": extra} for k in first), loc)
        errors.total += len(unknown) - len(first)
        data = {k: data[k] for k in fields if k in data}
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        errors.add(
            exc.errors(include_url=False, include_context=False, include_input=False), loc, skip
        )
    else:
        if errors.total == before:
            return result
    return None


Item = Callable[[Any, _Errors, Loc], BaseModel | None]


def _validate_listed(
    model: type[M], data: Any, name: str, item: Item, errors: _Errors, loc: Loc
) -> M | None:
    """Validate ``data`` as ``model`` whose list field ``name`` is validated item by item:
    no single pydantic call works through a whole large body (each call holds the GIL, and
    the event loop needs it to answer /health). The walk stops at the item whose errors
    fill the reported list (``errors.stopped``): the rest could add to the count only."""
    items = data.get(name) if isinstance(data, dict) else None
    if not isinstance(items, list):
        return _validate(model, data, errors, loc)
    item_errors, own = _Errors(), _Errors()
    valid = []
    for i, value in enumerate(items):
        checked = item(value, item_errors, (*loc, name, i))
        if checked is not None:
            valid.append(checked)
        elif item_errors.full and i + 1 < len(items):
            item_errors.stopped = True
            break
    # Without its bad items, the list's own checks (length, duplicates) would mislead.
    skip = (*loc, name) if item_errors.total else None
    result = _validate(model, {**data, name: valid}, own, loc, skip)
    errors.merge([own, item_errors], list(model.model_fields), depth=len(loc))
    return result if item_errors.total == 0 else None


def _candidate(value: Any, errors: _Errors, loc: Loc) -> Candidate | None:
    return _validate(Candidate, value, errors, loc)


def _rank_request(value: Any, errors: _Errors, loc: Loc) -> RankRequest | None:
    return _validate_listed(RankRequest, value, "candidates", _candidate, errors, loc)


def _click(value: Any, errors: _Errors, loc: Loc) -> Click | None:
    return _validate(Click, value, errors, loc)


def _finish(result: M | None, errors: _Errors) -> M:
    if result is None or errors.total:
        raise InvalidBody(errors.kept, errors.total - len(errors.kept), not errors.stopped)
    return result


#: Rank bodies up to this size are validated in one pydantic call when they are valid.
ONE_CALL_BODY_BYTES = 8 * 1024


def _list(data: Any, name: str) -> list[Any] | None:
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, list) else None


def _check_features(candidates: list[Any], limit: int, where: str) -> None:
    for i, c in enumerate(candidates):
        features = c.get("features") if isinstance(c, dict) else None
        if isinstance(features, dict) and len(features) > limit:
            raise BodyRejected(
                f"{where}candidates[{i}] has {len(features)} features, more than {limit} "
                "(LTR_MAX_FEATURES_PER_CANDIDATE)"
            )


def parse_rank_request(raw: bytes, limits: BodyLimits) -> RankRequest:
    """The bounded parse of a rank body (run in a worker thread): JSON, then the candidate
    and feature limits (:class:`BodyRejected`), then validation candidate by candidate
    (:class:`InvalidBody`)."""
    data = load_json(raw)
    candidates = _list(data, "candidates")
    if candidates is not None:
        if len(candidates) > limits.max_candidates:
            raise BodyRejected(
                f"too many candidates: {len(candidates)} > {limits.max_candidates} "
                "(LTR_MAX_CANDIDATES)"
            )
        _check_features(candidates, limits.max_features_per_candidate, "")
    if len(raw) <= ONE_CALL_BODY_BYTES:
        # a small body: one pydantic call (bounded by the size) is a third of the cost of
        # the item-by-item walk; an invalid one is walked below for its bounded error list
        with contextlib.suppress(ValidationError):
            return RankRequest.model_validate(data)
    errors = _Errors()
    return _finish(_rank_request(data, errors, ("body",)), errors)


def parse_batch_request(raw: bytes, limits: BodyLimits) -> BatchRankRequest:
    """Like :func:`parse_rank_request` for a batch. An item with too many candidates is
    answered in its own result by the service; too many features refuses the whole batch."""
    data = load_json(raw)
    requests = _list(data, "requests")
    if requests is not None:
        if len(requests) > limits.max_batch:
            raise BodyRejected(
                f"too many requests in batch: {len(requests)} > {limits.max_batch} (LTR_MAX_BATCH)"
            )
        for j, item in enumerate(requests):
            candidates = _list(item, "candidates")
            if candidates is not None:
                _check_features(candidates, limits.max_features_per_candidate, f"requests[{j}].")
    errors = _Errors()
    result = _validate_listed(BatchRankRequest, data, "requests", _rank_request, errors, ("body",))
    return _finish(result, errors)


def parse_feedback_request(raw: bytes, limits: BodyLimits) -> FeedbackRequest:
    """Like :func:`parse_rank_request` for feedback (the click limit before validation)."""
    data = load_json(raw)
    clicks = _list(data, "clicks")
    if clicks is not None and len(clicks) > limits.max_clicks:
        raise BodyRejected(f"too many clicks: {len(clicks)} > {limits.max_clicks} (LTR_MAX_CLICKS)")
    errors = _Errors()
    result = _validate_listed(FeedbackRequest, data, "clicks", _click, errors, ("body",))
    return _finish(result, errors)


#: The bounded parser of each request model (see ``serving.api.deps.OffloadedJSONRoute``).
BODY_PARSERS: dict[type[BaseModel], Callable[[bytes, BodyLimits], BaseModel]] = {
    RankRequest: parse_rank_request,
    BatchRankRequest: parse_batch_request,
    FeedbackRequest: parse_feedback_request,
}
