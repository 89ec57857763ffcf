"""The rank path: route -> cache -> online features -> ONNX Runtime -> ranked list -> events.

Routes stay thin and call :class:`RankService`; domain errors are raised as named
exceptions and translated into HTTP answers by the routes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from serving.cache import RankCache
from serving.events import EventLog
from serving.features.schema import MissingRequiredFeatures, assemble
from serving.model_store import LoadedModel, ModelNotAvailable, ModelStore, Outcome, Snapshot
from serving.redis_guard import RedisGuard
from serving.routing import Decision, team_draft_interleave
from serving.schemas import RankRequest, RankResponse
from serving.settings import ServingSettings
from serving.telemetry import Telemetry

log = logging.getLogger(__name__)


class FeaturesUnavailable(RuntimeError):
    """The online feature store cannot be read and the model needs it."""


class RequestLimitExceeded(ValueError):
    """A configurable request limit was exceeded (answered with 413/422)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class NonFiniteScore(FloatingPointError):
    """The model produced a non-finite score.

    ``caused_by_request`` is True when the request supplied feature values for the affected
    documents (extreme values drove the model out of range: a 422), False when the model
    misbehaves on stored or default features (a 500).
    """

    def __init__(self, message: str, *, caused_by_request: bool) -> None:
        super().__init__(message)
        self.caused_by_request = caused_by_request


def client_fault(exc: BaseException) -> bool:
    """True when a failed rank was the request's fault (answered 4xx): a required feature
    it did not send, or feature values that drove the model out of range."""
    return isinstance(exc, MissingRequiredFeatures) or (
        isinstance(exc, NonFiniteScore) and exc.caused_by_request
    )


class FeatureReader(Protocol):
    def read(self, query_id: str, doc_ids: Sequence[str]) -> Any: ...


ReaderFactory = Callable[[LoadedModel], FeatureReader | None]


@dataclass
class Scored:
    model: LoadedModel
    doc_ids: list[str]
    scores: np.ndarray
    order: np.ndarray


@dataclass
class RankOutcome:
    """A ranked answer as plain data (serialised once, straight to JSON, by the route)."""

    payload: dict[str, Any]
    background: list[Callable[[], object]] = field(default_factory=list)
    #: Background work awaited on the event loop after the answer (Redis writes of a
    #: request answered there: no worker thread).
    abackground: list[Callable[[], Awaitable[object]]] = field(default_factory=list)

    @property
    def model_version(self) -> str:
        return str(self.payload["model_version"])

    @property
    def variant(self) -> str:
        return str(self.payload["variant"])

    @property
    def response(self) -> RankResponse:
        """The validated response model (slower; for callers that want the typed object)."""
        return RankResponse.model_validate(self.payload)


class RankService:
    def __init__(
        self,
        settings: ServingSettings,
        store: ModelStore,
        cache: RankCache,
        events: EventLog,
        telemetry: Telemetry,
        reader_for: ReaderFactory,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache
        self.events = events
        self.telemetry = telemetry
        self.reader_for = reader_for
        self._stage = telemetry.stage_latency
        # Skips the feature store for a short cool-down after repeated failures, so a dead
        # Redis costs one timeout per cool-down instead of one per request.
        self.feature_guard = RedisGuard(name="online-features")

    # ------------------------------------------------------------ checks
    def check_limits(self, req: RankRequest) -> None:
        s = self.settings
        n = len(req.candidates)
        if n > s.max_candidates:
            raise RequestLimitExceeded(
                f"too many candidates: {n} > {s.max_candidates} (LTR_MAX_CANDIDATES)", 413
            )
        for i, c in enumerate(req.candidates):
            if c.features is not None and len(c.features) > s.max_features_per_candidate:
                raise RequestLimitExceeded(
                    f"candidates[{i}] has {len(c.features)} features, more than "
                    f"{s.max_features_per_candidate} (LTR_MAX_FEATURES_PER_CANDIDATE)",
                    413,
                )

    # ------------------------------------------------------------ scoring
    def _reader(self, model: LoadedModel) -> FeatureReader:
        """The model's online feature reader, or :class:`FeaturesUnavailable` when there is
        none or the store's circuit breaker is open (the model has views)."""
        reader = self.reader_for(model)
        if reader is None:
            raise FeaturesUnavailable(
                f"model {model.version} needs online features "
                f"({', '.join(model.schema.view_names)}) but no online store is configured"
            )
        if not self.feature_guard.allow():
            self.telemetry.errors.labels(kind="feature_store").inc()
            raise FeaturesUnavailable(
                "online feature store unavailable (recent errors; retrying shortly)"
            )
        return reader

    def _read_failed(self, exc: Exception) -> FeaturesUnavailable:
        self.feature_guard.record_failure(exc)
        self.telemetry.errors.labels(kind="feature_store").inc()
        return FeaturesUnavailable("online feature store unavailable: read failed")

    @contextlib.contextmanager
    def _timed_read(self) -> Iterator[None]:
        """Times a feature read; a failure feeds the breaker and becomes FeaturesUnavailable."""
        t = time.perf_counter()
        try:
            yield
        except Exception as exc:
            raise self._read_failed(exc) from None
        finally:
            self._stage.labels(stage="features").observe(time.perf_counter() - t)
        self.feature_guard.record_success()

    def _read(self, model: LoadedModel, req: RankRequest, doc_ids: list[str]) -> Any:
        """The online features of ``req``'s candidates (None: the model has no views)."""
        if not model.schema.views:
            return None
        reader = self._reader(model)
        with self._timed_read():
            return reader.read(req.query_id, doc_ids)

    async def _aread(self, model: LoadedModel, req: RankRequest, doc_ids: list[str]) -> Any:
        """:meth:`_read` awaited on the event loop (the reader has ``aread``)."""
        if not model.schema.views:
            return None
        reader = self._reader(model)
        with self._timed_read():
            return await reader.aread(req.query_id, doc_ids)  # type: ignore[attr-defined]

    def _score(self, model: LoadedModel, req: RankRequest) -> Scored:
        doc_ids = [c.doc_id for c in req.candidates]
        return self._score_read(model, req, doc_ids, self._read(model, req, doc_ids))

    def _score_read(
        self, model: LoadedModel, req: RankRequest, doc_ids: list[str], result: Any
    ) -> Scored:
        """Matrix + ONNX Runtime + order, from the online features already read."""
        vectors: dict[str, np.ndarray] = {} if result is None else result.vectors
        found: dict[str, np.ndarray] = {} if result is None else result.found
        t = time.perf_counter()
        x, stats = assemble(
            model.schema, doc_ids, [c.features for c in req.candidates], vectors, found
        )
        for view, n in stats.missing_online.items():
            self.telemetry.feature_misses.labels(view=view).inc(n)
        if stats.missing_request:
            self.telemetry.feature_misses.labels(view="request").inc(stats.missing_request)
        if stats.unknown_request:
            self.telemetry.unknown_features.inc(stats.unknown_request)
        scores = model.score(x)
        self._stage.labels(stage="inference").observe(time.perf_counter() - t)
        if not np.all(np.isfinite(scores)):
            self.telemetry.errors.labels(kind="non_finite_score").inc()
            bad = np.flatnonzero(~np.isfinite(scores))
            supplied = [int(i) for i in bad if req.candidates[int(i)].features]
            if supplied:
                i = supplied[0]
                raise NonFiniteScore(
                    f"model {model.version} produced a non-finite score for candidates[{i}] "
                    f"(doc_id {doc_ids[i]!r}): its feature values are out of the model's range",
                    caused_by_request=True,
                )
            raise NonFiniteScore(
                f"model {model.version} produced a non-finite score", caused_by_request=False
            )
        order = np.argsort(-scores, kind="stable")
        return Scored(model, doc_ids, scores, order)

    @staticmethod
    def _ranked(scored: Scored, top_k: int | None) -> list[dict[str, Any]]:
        order = scored.order if top_k is None else scored.order[:top_k]
        ids = scored.doc_ids
        scores = scored.scores[order].astype(np.float64).tolist()
        return [
            {"doc_id": ids[i], "score": s, "rank": r}
            for r, (i, s) in enumerate(zip(order.tolist(), scores, strict=True), start=1)
        ]

    # ------------------------------------------------------------ counters
    def record_outcome(self, model: LoadedModel, seconds: float, outcome: Outcome) -> None:
        """Count one request ``model`` handled, in ``GET /api/v1/models`` and in the
        Prometheus metrics a promotion judges (``ltr_model_requests_total``,
        ``ltr_model_latency_seconds``, failed requests included)."""
        model.record(seconds, outcome)
        self.telemetry.model_requests.labels(model_version=model.version, outcome=outcome).inc()
        self.telemetry.model_latency.labels(model_version=model.version).observe(seconds)

    # ------------------------------------------------------------ rank
    def rank(self, req: RankRequest, request_id: str) -> RankOutcome:
        """Rank ``req`` (blocking: run it in a worker thread, not on the event loop)."""
        t0 = time.perf_counter()
        self.check_limits(req)
        snap = self.store.snapshot
        decision: Decision = snap.router.decide(req.user_id, request_id)
        return self._rank_decided(req, request_id, snap, decision, t0)

    def inline_work(self, req: RankRequest) -> int:
        """What scoring ``req`` costs on the event loop: candidates plus request feature
        values (compared with LTR_INLINE_MAX_WORK)."""
        return len(req.candidates) + sum(len(c.features or ()) for c in req.candidates)

    async def rank_async(
        self,
        req: RankRequest,
        request_id: str,
        offload: Callable[..., Awaitable[Any]],
    ) -> RankOutcome:
        """:meth:`rank` from the event loop. A small request (:meth:`inline_work` at most
        LTR_INLINE_MAX_WORK, the model's estimated inference at most
        LTR_INLINE_MAX_INFERENCE_MS) of one model whose cache and feature reads can be
        awaited (Redis) is answered here: its Redis reads are awaited, its matrix and ONNX
        Runtime run inline, so it needs no worker thread. Any other request is ranked by
        ``offload(fn, *args)`` (the request gate's worker threads)."""
        t0 = time.perf_counter()
        self.check_limits(req)
        snap = self.store.snapshot
        decision: Decision = snap.router.decide(req.user_id, request_id)
        model = snap.models.get(decision.version) if decision.interleave is None else None
        if model is None or not self._awaitable(model, req):
            outcome: RankOutcome = await offload(
                self._rank_decided, req, request_id, snap, decision, t0
            )
            return outcome
        key = self._cache_key(model, req)
        ranked = None
        if key is not None:
            t = time.perf_counter()
            ranked = await self.cache.aget(key, [c.doc_id for c in req.candidates])
            self._cache_counted(ranked, t)
        if ranked is not None:
            return self._answer(req, request_id, snap, decision, model, ranked, None, True)
        doc_ids = [c.doc_id for c in req.candidates]
        try:
            result = await self._aread(model, req, doc_ids)
            scored = self._score_read(model, req, doc_ids, result)
        except Exception as exc:
            self._failed(model, exc, t0)
            raise
        return self._answer(req, request_id, snap, decision, model, scored, key, True)

    def _awaitable(self, model: LoadedModel, req: RankRequest) -> bool:
        if self.inline_work(req) > self.settings.inline_max_work:
            return False
        estimate_ms = 1000.0 * model.seconds_per_row * len(req.candidates)
        if estimate_ms > self.settings.inline_max_inference_ms:
            return False
        if self.cache.enabled and not self.cache.reads_async:
            return False
        if not model.schema.views:
            return True
        reader = self.reader_for(model)
        return reader is not None and bool(getattr(reader, "reads_async", False))

    def _cache_key(self, model: LoadedModel, req: RankRequest) -> str | None:
        if not self.cache.enabled:
            return None
        return self.cache.key(
            model.version, req.query_id, [(c.doc_id, c.features) for c in req.candidates]
        )

    def _cache_counted(self, ranked: list[dict[str, Any]] | None, started: float) -> None:
        self._stage.labels(stage="cache").observe(time.perf_counter() - started)
        self.telemetry.cache.labels(result="hit" if ranked is not None else "miss").inc()

    def _failed(self, model: LoadedModel, exc: Exception, started: float) -> None:
        outcome: Outcome = "client_error" if client_fault(exc) else "server_error"
        self.record_outcome(model, time.perf_counter() - started, outcome)

    def _rank_decided(
        self,
        req: RankRequest,
        request_id: str,
        snap: Snapshot,
        decision: Decision,
        t0: float,
    ) -> RankOutcome:
        if decision.interleave is not None:
            return self._rank_interleaved(req, request_id, decision, snap.get, *decision.interleave)
        model = snap.get(decision.version)
        key = self._cache_key(model, req)
        if key is not None:
            t = time.perf_counter()
            ranked = self.cache.get(key, [c.doc_id for c in req.candidates])
            self._cache_counted(ranked, t)
            if ranked is not None:
                return self._answer(req, request_id, snap, decision, model, ranked, None)
        try:
            scored = self._score(model, req)
        except Exception as exc:
            self._failed(model, exc, t0)
            raise
        return self._answer(req, request_id, snap, decision, model, scored, key)

    def _answer(
        self,
        req: RankRequest,
        request_id: str,
        snap: Snapshot,
        decision: Decision,
        model: LoadedModel,
        result: Scored | list[dict[str, Any]],
        key: str | None,
        on_loop: bool = False,
    ) -> RankOutcome:
        """The answer and its background work, from a fresh score or a cached list (a list:
        ``cached`` is true and nothing is written back). ``on_loop``: the Redis writes are
        awaited on the event loop where they can be (``abackground``)."""
        background: list[Callable[[], object]] = []
        abackground: list[Callable[[], Awaitable[object]]] = []
        cached = isinstance(result, list)
        if isinstance(result, list):
            ranked = result
        else:
            ranked = self._ranked(result, None)
            if key is not None:
                full = ranked
                if on_loop and self.cache.reads_async:
                    abackground.append(lambda: self.cache.aset(key, full))
                else:
                    background.append(lambda: self.cache.set(key, full))
        if req.top_k is not None:
            ranked = ranked[: req.top_k]
        payload = {
            "request_id": request_id,
            "model_version": model.version,
            "variant": decision.variant,
            "ranked": ranked,
            "cached": cached,
        }
        doc_order = [r["doc_id"] for r in ranked]
        shadow_version = decision.shadow_version
        if shadow_version is not None and shadow_version in snap.models:
            shadow_model = snap.models[shadow_version]
            background.append(
                lambda: self._shadow(shadow_model, req, request_id, decision, doc_order)
            )
        elif self.events.enabled:
            impression = (
                request_id,
                req.user_id,
                decision.variant,
                model.version,
                req.query_id,
                doc_order,
            )
            if on_loop and self.events.writes_async:
                abackground.append(lambda: self.events.alog_impression(*impression))
            else:
                background.append(lambda: self.events.log_impression(*impression))
        return RankOutcome(payload, background, abackground)

    def _shadow(
        self,
        shadow_model: LoadedModel,
        req: RankRequest,
        request_id: str,
        decision: Decision,
        served: list[str],
    ) -> None:
        """Score with the challenger after the answer went out; log both, never fail."""
        shadow: dict[str, Any] | None
        try:
            scored = self._score(shadow_model, req)
            top = [scored.doc_ids[i] for i in scored.order[: len(served)]]
            shadow = {"version": shadow_model.version, "doc_ids": top}
            self.telemetry.shadow.labels(version=shadow_model.version, result="ok").inc()
        except Exception as exc:  # shadow scoring must never affect the champion
            log.warning("shadow scoring with %s failed: %s", shadow_model.version, exc)
            self.telemetry.shadow.labels(version=shadow_model.version, result="error").inc()
            shadow = {"version": shadow_model.version, "error": str(exc)[:200]}
        self.events.log_impression(
            request_id,
            req.user_id,
            decision.variant,
            decision.version,
            req.query_id,
            served,
            shadow=shadow,
        )

    def _rank_interleaved(
        self,
        req: RankRequest,
        request_id: str,
        decision: Decision,
        get: Callable[[str], LoadedModel],
        version_a: str,
        version_b: str,
    ) -> RankOutcome:
        a, b = self._score(get(version_a), req), self._score(get(version_b), req)
        ids_a = [a.doc_ids[i] for i in a.order]
        ids_b = [b.doc_ids[i] for i in b.order]
        merged, team = team_draft_interleave(ids_a, ids_b, rng_seed=request_id, k=req.top_k)
        score_a = dict(zip(a.doc_ids, a.scores.tolist(), strict=True))
        score_b = dict(zip(b.doc_ids, b.scores.tolist(), strict=True))
        ranked = [
            {
                "doc_id": d,
                "score": float(score_b[d] if team.get(d) == "b" else score_a[d]),
                "rank": r + 1,
            }
            for r, d in enumerate(merged)
        ]
        payload = {
            "request_id": request_id,
            "model_version": f"{version_a}|{version_b}",
            "variant": decision.variant,
            "ranked": ranked,
            "cached": False,
        }
        background: list[Callable[[], object]] = []
        if self.events.enabled:
            attribution = {d: team.get(d, "none") for d in merged}
            background.append(
                lambda: self.events.log_impression(
                    request_id,
                    req.user_id,
                    decision.variant,
                    f"{version_a}|{version_b}",
                    req.query_id,
                    merged,
                    interleave={"a": version_a, "b": version_b, "teams": attribution},
                )
            )
        return RankOutcome(payload, background)


__all__ = [
    "FeaturesUnavailable",
    "MissingRequiredFeatures",
    "ModelNotAvailable",
    "NonFiniteScore",
    "RankOutcome",
    "RankService",
    "RequestLimitExceeded",
]
