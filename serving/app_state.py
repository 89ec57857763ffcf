"""Everything the routes need, built once per app in the lifespan and injected."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from serving.cache import RankCache
from serving.events import EventLog
from serving.features.redis_wire import RedisWire
from serving.model_store import LoadedModel, ModelStore
from serving.redis_guard import RedisGuard, fail_fast_async_redis, fail_fast_redis
from serving.request_ids import RateLimiter, RequestIdSigner
from serving.service import FeatureReader, RankService
from serving.settings import ServingSettings
from serving.telemetry import Telemetry, create_telemetry

log = logging.getLogger(__name__)

# Join keys of the feature views the platform defines (feature_repo/); a model's metadata
# may override them under "feature_views".
DEFAULT_JOIN_KEYS: dict[str, tuple[str, ...]] = {
    "query_doc_features": ("query_id", "doc_id"),
    "doc_features": ("doc_id",),
}


def redis_client(settings: ServingSettings) -> redis.Redis | None:
    if not settings.redis_url:
        return None
    return fail_fast_redis(settings.redis_url, timeout_seconds=settings.redis_timeout_ms / 1000.0)


@dataclass
class AppState:
    settings: ServingSettings
    telemetry: Telemetry
    store: ModelStore
    redis: redis.Redis | None
    cache: RankCache
    events: EventLog
    service: RankService
    readers: dict[str, FeatureReader | None] = field(default_factory=dict)
    reload_task: asyncio.Task[None] | None = None
    request_ids: RequestIdSigner = field(default_factory=RequestIdSigner)
    feedback_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(200.0, 400))
    #: Failed readiness pings of the feature store's Redis in a row.
    redis_ping_failures: int = 0
    #: Clients of the cache's / events' own Redis (closed with the app).
    own_clients: list[Any] = field(default_factory=list)
    #: ``redis.asyncio`` twins of the feature store's and the cache's clients: small
    #: requests await their reads on the event loop (``RankService.rank_async``).
    redis_async: AsyncRedis | None = None
    async_clients: list[Any] = field(default_factory=list)
    #: One pipelined connection for the feature store's HGET read on the event loop (plain
    #: ``redis://`` URLs; others read through ``redis_async``).
    redis_wire: RedisWire | None = None

    @classmethod
    def build(cls, settings: ServingSettings) -> AppState:
        telemetry = create_telemetry()
        store = ModelStore(
            settings.model_store_path,
            threads=settings.onnx_threads,
            on_refused=lambda version, _why: telemetry.refused_versions.labels(version).inc(),
        )
        client = redis_client(settings)
        timeout = settings.redis_timeout_ms / 1000.0
        own: dict[str, redis.Redis] = {}

        def client_of(url: str | None) -> redis.Redis | None:
            """The feature store's client for its own URL, else one client per URL."""
            if not url or url == settings.redis_url:
                return client
            if url not in own:
                own[url] = fail_fast_redis(url, timeout_seconds=timeout)
            return own[url]

        async_of: dict[str, AsyncRedis] = {}

        def async_client_of(url: str | None) -> AsyncRedis | None:
            """One ``redis.asyncio`` client per URL (created lazily, used by one loop)."""
            if not url or settings.inline_max_work <= 0:
                return None
            if url not in async_of:
                async_of[url] = fail_fast_async_redis(url, timeout_seconds=timeout)
            return async_of[url]

        events_url = settings.events_redis_url or settings.redis_url
        cache_url = settings.cache_redis_url or events_url
        cache_client = client_of(cache_url)
        cache = RankCache(
            cache_client if settings.cache_enabled else None,
            ttl_seconds=settings.cache_ttl_s,
            max_docs=settings.cache_max_docs,
            async_client=async_client_of(cache_url) if settings.cache_enabled else None,
        )
        prefix = settings.events_stream_prefix
        events = EventLog(
            client_of(events_url) if settings.events_enabled else None,
            impressions_stream=f"{prefix}:impressions",
            clicks_stream=f"{prefix}:clicks",
            maxlen=settings.stream_maxlen,
            max_docs=settings.events_max_docs,
            async_client=async_client_of(events_url) if settings.events_enabled else None,
        )
        readers: dict[str, FeatureReader | None] = {}
        state = cls(settings, telemetry, store, client, cache, events, None, readers)  # type: ignore[arg-type]
        state.service = RankService(settings, store, cache, events, telemetry, state.reader_for)
        secret = settings.request_id_secret
        state.request_ids = RequestIdSigner(
            secret.get_secret_value().encode() if secret is not None else None,
            max_age_s=settings.feedback_max_age_s,
        )
        state.feedback_limiter = RateLimiter(
            settings.feedback_rate_per_s, float(settings.feedback_burst)
        )
        state.own_clients = list(own.values())
        state.redis_async = async_client_of(settings.redis_url)
        if state.redis_async is not None and settings.redis_url:
            state.redis_wire = RedisWire.from_url(settings.redis_url, timeout_s=timeout)
        state.async_clients = list(async_of.values())
        return state

    # ----------------------------------------------------------- features
    def reader_for(self, model: LoadedModel) -> FeatureReader | None:
        key = model.version
        if key in self.readers:
            return self.readers[key]
        reader = self._make_reader(model)
        self.readers[key] = reader
        return reader

    def _view_specs(self, model: LoadedModel) -> list[Any]:
        from serving.features.redis_reader import FeatureViewSpec

        declared = model.metadata.get("feature_views") or {}
        specs = []
        for vc in model.schema.views:
            info = declared.get(vc.view, {})
            join_keys = tuple(info.get("join_keys") or DEFAULT_JOIN_KEYS.get(vc.view, ()))
            if not join_keys:
                raise ValueError(f"feature view {vc.view!r}: join keys unknown")
            dim = int(info.get("dim") or vc.min_dim)
            specs.append(FeatureViewSpec(name=vc.view, join_keys=join_keys, dim=dim))
        return specs

    def _make_reader(self, model: LoadedModel) -> FeatureReader | None:
        if not model.schema.views:
            return None
        specs = self._view_specs(model)
        if self.redis is not None:
            from serving.features.redis_reader import RedisFeatureReader

            return RedisFeatureReader(
                self.redis,
                self.settings.feast_project,
                key_version=self.settings.feast_key_version,
                views=specs,
                async_client=self.redis_async,
                wire=self.redis_wire,
            )
        if self.settings.feast_repo.is_dir():
            from serving.features.sqlite_reader import SqliteFeatureReader, sqlite_location

            # Feast's SQLite layout is read directly; other stores go through the Feast SDK.
            location = sqlite_location(self.settings.feast_repo)
            if location is not None:
                return SqliteFeatureReader(
                    location.path,
                    location.project,
                    key_version=location.key_version,
                    views=specs,
                )
            from serving.features.sdk_reader import SdkFeatureReader

            return SdkFeatureReader(self.settings.feast_repo, specs)
        return None

    # ----------------------------------------------------------- Redis health
    def redis_guards(self) -> list[RedisGuard]:
        """Every circuit breaker in front of ``self.redis``: result cache, event log and
        (when the online features come from that Redis) the feature reads."""
        if self.redis is None:
            return []
        return [self.cache.guard, self.events.guard, self.service.feature_guard]

    def answers_without_redis(self) -> bool:
        """True when the production version can score without the feature store's Redis
        (its features come with the request, or from a store that is not that Redis)."""
        if self.redis is None or not self.store.loaded:
            return True
        snap = self.store.snapshot
        model = snap.models.get(snap.config.production)
        return model is not None and not model.schema.views

    def redis_answered(self) -> None:
        """A health probe reached Redis: close every breaker on it, so the next request of
        every kind (cached, logged, online-feature) goes to Redis again instead of waiting
        out a cool-down that an earlier failure armed."""
        for guard in self.redis_guards():
            guard.record_success()

    # ----------------------------------------------------------- reload
    def poll_store(self) -> bool:
        try:
            changed = self.store.poll()
        except Exception:  # never let the reload loop die
            log.exception("model store poll failed")
            self.telemetry.reloads.labels(result="error").inc()
            return False
        if changed:
            self.readers.clear()
            self.telemetry.reloads.labels(result="swapped").inc()
        self.telemetry.models_loaded.set(
            len(self.store.snapshot.models) if self.store.loaded else 0
        )
        self.export_routing()
        return changed

    def export_routing(self) -> None:
        """The routing in force as gauges: its version, and the rollout it names (for the
        alert on a canary left on past its observation window)."""
        if not self.store.loaded:
            return
        cfg = self.store.snapshot.config
        tel = self.telemetry
        tel.routing_version.set(cfg.version)
        tel.rollout_started.clear()
        tel.rollout_deadline.clear()
        if cfg.rollout is not None:
            tel.rollout_started.labels(version=cfg.rollout.version).set(cfg.rollout.started_at)
            tel.rollout_deadline.labels(version=cfg.rollout.version).set(cfg.rollout.deadline)

    async def reload_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            await asyncio.to_thread(self.poll_store)

    def warm_readers(self) -> None:
        """Build the feature readers of every served model before traffic arrives (the
        Feast SDK fallback imports Feast, which takes seconds)."""
        for model in self.store.snapshot.models.values():
            try:
                self.reader_for(model)
            except Exception:  # a request will report the problem with its own error
                log.exception("could not prepare the feature reader of %s", model.version)
                self.readers.pop(model.version, None)

    async def start(self) -> None:
        await asyncio.to_thread(self.store.load)
        await asyncio.to_thread(self.warm_readers)
        self.telemetry.models_loaded.set(len(self.store.snapshot.models))
        self.export_routing()
        self.reload_task = asyncio.create_task(self.reload_loop())

    async def stop(self) -> None:
        if self.reload_task is not None:
            self.reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reload_task
        if self.redis is not None:
            self.redis.close()
        for extra in self.own_clients:
            extra.close()
        if self.redis_wire is not None:
            await self.redis_wire.aclose()
        for aclient in self.async_clients:
            with contextlib.suppress(Exception):  # a connection of a loop already gone
                await aclient.aclose()
