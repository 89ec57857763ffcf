"""Settings of the CLI and library, from the environment (``LTR_`` prefix) or ``.env``.

Built once per process through :func:`get_settings`; nothing is created at import time.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LTR_", env_file=".env", extra="ignore")

    environment: str = Field("development", description="development | staging | production")
    home: Path = Field(Path("var"), description="root of all runtime state (git-ignored)")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default sqlite:///<home>/mlflow.db"
    )
    mlflow_experiment: str = "ltr"
    feast_project: str = Field(
        "ltr", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", description="Feast project name"
    )
    feast_repo: Path = Field(
        Path("feature_repo"), description="the Feast repository (entities, views, services)"
    )
    redis_url: str | None = Field(
        None,
        description="Redis online store, e.g. redis://127.0.0.1:6379/0; unset: SQLite under home",
    )

    events_redis_url: str | None = Field(
        None,
        description="Redis holding the impression/click streams; default LTR_REDIS_URL",
    )
    events_stream_prefix: str = Field(
        "ltr:events", description="streams <prefix>:impressions and <prefix>:clicks"
    )

    @property
    def events_redis(self) -> str | None:
        """The Redis of the event streams (``events_redis_url``, else ``redis_url``)."""
        return self.events_redis_url or self.redis_url

    @property
    def events_dir(self) -> Path:
        """Drained events, in the offline store: ``<home>/feast/data/events``."""
        return (self.home / "feast" / "data" / "events").resolve()

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.home / "mlartifacts").resolve()


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
