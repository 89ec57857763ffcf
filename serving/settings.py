"""Settings of the rank service: one object, from the environment (``LTR_`` prefix) or ``.env``,
validated on creation. Defaults that would be unsafe in production refuse to start there."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from serving.fairness import Network

MIN_API_KEY_LENGTH = 16
_KNOWN_WEAK_KEYS = {"changeme", "secret", "password", "admin", "test", "development"}


class ServingSettings(BaseSettings):
    # hide_input_in_errors: a refusal must not echo the input, which holds LTR_API_KEY
    model_config = SettingsConfigDict(
        env_prefix="LTR_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    environment: Literal["development", "staging", "production"] = "development"
    home: Path = Path("var")
    model_store: Path | None = Field(None, description="model store root; default <home>/models")

    redis_url: str | None = Field(None, description="Redis for online features, cache, events")
    redis_timeout_ms: int = Field(50, ge=1, le=10_000)
    feast_project: str = "ltr"
    feast_repo: Path = Path("feature_repo")
    feast_key_version: int = Field(3, ge=1)

    cache_enabled: bool = True
    cache_ttl_s: int = Field(300, ge=1)
    events_enabled: bool = True
    events_redis_url: str | None = Field(
        None,
        description="Redis for the impression/click streams; default the feature store's "
        "(LTR_REDIS_URL). Set it to log events when features come from SQLite.",
    )
    cache_redis_url: str | None = Field(
        None,
        description="Redis for the result cache; default LTR_EVENTS_REDIS_URL, else "
        "LTR_REDIS_URL. Give cache and events a Redis (or logical database) of their own with "
        "maxmemory and maxmemory-policy volatile-lru: cache entries (with a TTL) are evicted, "
        "streams never are",
    )
    cache_max_docs: int = Field(
        200, ge=1, description="rankings of more candidates are not cached (bounds entry size)"
    )
    events_max_docs: int = Field(
        100, ge=1, description="an impression logs at most this many shown documents"
    )
    request_id_secret: SecretStr | None = Field(
        None,
        description="HMAC key of request ids (feedback is accepted only for ids the service "
        "issued); the same on every replica; required outside development",
    )
    feedback_max_age_s: float = Field(86_400.0, gt=0, description="feedback window per answer")
    feedback_rate_per_s: float = Field(
        200.0, gt=0, description="feedback calls per second per client (address)"
    )
    feedback_burst: int = Field(400, ge=1, description="feedback calls a client may burst")
    events_stream_prefix: str = Field(
        "ltr:events",
        pattern=r"^[A-Za-z0-9:_.-]{1,64}$",
        description="streams are <prefix>:impressions and <prefix>:clicks",
    )
    stream_maxlen: int = Field(100_000, ge=100)

    max_candidates: int = Field(1000, ge=1, le=100_000)
    max_batch: int = Field(32, ge=1, le=1000)
    max_features_per_candidate: int = Field(1024, ge=1)
    max_clicks: int = Field(100, ge=1, le=10_000)

    # request path limits (issue 9)
    max_body_bytes: int | None = Field(
        None,
        ge=1024,
        description="largest request body of any endpoint, a batch included (413 beyond); "
        "default sized from LTR_MAX_CANDIDATES and LTR_MAX_FEATURES_PER_CANDIDATE, see "
        "default_body_limit",
    )
    max_streamed_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="largest body sent without Content-Length (chunked); beyond it 411: a "
        "large body must be declared, so one that is too large is refused from its headers "
        "instead of being read up to LTR_MAX_BODY_BYTES",
    )
    body_read_timeout_s: float = Field(
        10.0, gt=0, le=600, description="a request body must arrive within this time (408)"
    )
    request_workers: int = Field(
        2,
        ge=1,
        le=256,
        description="requests doing blocking work at once (body parse and validation, Redis, "
        "ONNX Runtime), each step in a worker thread; about the CPU cores of the process "
        "(more threads contend for the GIL with the event loop and slow /health down)",
    )
    inline_max_work: int = Field(
        256,
        ge=0,
        le=10_000,
        description="a rank request with at most this many candidates plus request feature "
        "values, whose cache and feature reads go to Redis, is answered on the event loop "
        "(Redis awaited, matrix and ONNX Runtime inline, well under a millisecond) instead of "
        "in a worker thread: two thread hand-overs fewer; 0: every request in a thread",
    )
    inline_max_inference_ms: float = Field(
        1.0,
        ge=0,
        le=100,
        description="... and whose model's inference, estimated from its cost per row "
        "measured at load, takes at most this long (a large tree ensemble at 256 candidates "
        "goes to a thread)",
    )
    request_queue: int = Field(
        32,
        ge=0,
        le=100_000,
        description="rank, batch and feedback requests admitted beyond the workers, waiting "
        "for one; more are answered 503 with Retry-After at once",
    )
    retry_after_s: int = Field(1, ge=1, le=3600, description="Retry-After of a 503 at capacity")
    request_client_share: int | None = Field(
        None,
        ge=1,
        description="places in the gate one client may hold while others are in it (more: "
        "429 with Retry-After, the others still admitted); default half of LTR_REQUEST_WORKERS + "
        "LTR_REQUEST_QUEUE, at least twice LTR_REQUEST_WORKERS",
    )
    heavy_body_bytes: int = Field(
        64 * 1024,
        ge=1,
        description="bodies above this size are heavy: they use at most LTR_REQUEST_WORKERS - 1 "
        "worker threads at once, so small requests always find one",
    )
    body_check_processes: int = Field(
        1,
        ge=0,
        le=64,
        description="helper processes (nice +10, started on first use) that parse and "
        "validate bodies above LTR_HEAVY_BODY_BYTES, so their cost is not paid by the event "
        "loop and the other requests; 0: parse them in the service's worker threads",
    )
    trusted_proxies: str = Field(
        "",
        description="comma-separated CIDRs of proxies whose X-Forwarded-For names the client "
        "(for per-client shares and rate limits); empty: the peer address is the client",
    )
    #: Body bytes that one request-supplied feature takes, written in full: a name of up to
    #: ~20 characters, a float in its longest form (-1.2345678901234567e-305), punctuation.
    BODY_BYTES_PER_FEATURE: ClassVar[int] = 48
    #: Body bytes of a candidate besides its features: a doc_id of up to 256 characters, keys.
    BODY_BYTES_PER_CANDIDATE: ClassVar[int] = 320
    #: Body bytes of a request besides its candidates (query_id, user_id, top_k).
    BODY_BYTES_OVERHEAD: ClassVar[int] = 4096
    #: The derived default never exceeds this (the parse of a body this size takes tens of
    #: milliseconds of a worker); set LTR_MAX_BODY_BYTES to go beyond.
    BODY_BYTES_CAP: ClassVar[int] = 4 * 1024 * 1024

    @classmethod
    def default_body_limit(cls, max_candidates: int, max_features_per_candidate: int) -> int:
        """The body limit when LTR_MAX_BODY_BYTES is not set: a rank request with every limit
        reached (max_candidates x (320 + max_features x 48) + 4096 bytes), capped at 4 MiB."""
        per_candidate = cls.BODY_BYTES_PER_CANDIDATE + (
            max_features_per_candidate * cls.BODY_BYTES_PER_FEATURE
        )
        full = max_candidates * per_candidate + cls.BODY_BYTES_OVERHEAD
        return min(full, cls.BODY_BYTES_CAP)

    @model_validator(mode="after")
    def _size_the_body_limit(self) -> ServingSettings:
        if self.max_body_bytes is None:
            self.max_body_bytes = self.default_body_limit(
                self.max_candidates, self.max_features_per_candidate
            )
        return self

    @model_validator(mode="after")
    def _check_trusted_proxies(self) -> ServingSettings:
        try:
            self.trusted_networks  # noqa: B018  (parsed to refuse a bad entry here)
        except ValueError as exc:
            raise ValueError(f"LTR_TRUSTED_PROXIES: {exc}") from None
        return self

    @property
    def trusted_networks(self) -> tuple[Network, ...]:
        """``trusted_proxies`` parsed (checked when the settings were made)."""
        from serving.fairness import parse_networks

        return parse_networks(self.trusted_proxies.split(","))

    @property
    def client_share(self) -> int:
        """``request_client_share`` as set, or half the gate's places (at least twice
        the workers)."""
        from serving.fairness import default_client_share

        if self.request_client_share is not None:
            return self.request_client_share
        return default_client_share(self.request_workers, self.request_queue)

    @property
    def body_limit_bytes(self) -> int:
        """``max_body_bytes`` as set or derived."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return self.default_body_limit(self.max_candidates, self.max_features_per_candidate)

    # end of request path limits (issue 9)

    reload_interval_s: float = Field(2.0, gt=0)
    onnx_threads: int = Field(1, ge=1)
    gc_tuning: bool = Field(True, description="freeze start-up objects, rarer young-gen GC")
    gil_switch_interval_ms: float = Field(
        1.0,
        gt=0,
        le=100,
        description="how long a thread may hold the GIL while another waits for it (Python's "
        "default is 5 ms): shorter lets the event loop (/health, new requests) in sooner "
        "while worker threads compute",
    )
    api_key: SecretStr | None = Field(None, description="required for admin actions")

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> ServingSettings:
        if self.environment == "development":
            return self
        key = self.api_key.get_secret_value() if self.api_key else ""
        if len(key) < MIN_API_KEY_LENGTH or key.lower() in _KNOWN_WEAK_KEYS:
            raise ValueError(
                f"LTR_API_KEY must be set to a secret of at least {MIN_API_KEY_LENGTH} characters "
                f"when LTR_ENVIRONMENT={self.environment}"
            )
        if self.redis_url is None:
            raise ValueError(f"LTR_REDIS_URL must be set when LTR_ENVIRONMENT={self.environment}")
        secret = self.request_id_secret.get_secret_value() if self.request_id_secret else ""
        if len(secret) < 32:
            raise ValueError(
                "LTR_REQUEST_ID_SECRET must be set to a secret of at least 32 characters (the "
                f"same on every replica) when LTR_ENVIRONMENT={self.environment}"
            )
        return self

    @property
    def model_store_path(self) -> Path:
        return self.model_store if self.model_store is not None else self.home / "models"
