"""Settings of the rank service: one object from LTR_* variables or .env, validated on
creation; defaults that would be unsafe in production refuse to start there, with a
message that names the variable and does not echo the secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from support.serving import make_settings, rank_body, serve

from serving.main import create_app
from serving.settings import MIN_API_KEY_LENGTH, ServingSettings

STRONG_KEY = "Zq8-strong-admin-key-1234567890"
ENVIRONMENTS = ["staging", "production"]


def settings_from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> ServingSettings:
    for name, value in env.items():
        monkeypatch.setenv(f"LTR_{name.upper()}", value)
    return ServingSettings(_env_file=None)  # type: ignore[call-arg]


def test_development_defaults_work_without_any_variable(monkeypatch):
    s = settings_from_env(monkeypatch)
    assert s.environment == "development"
    assert s.api_key is None
    assert s.redis_url is None
    assert s.model_store_path == Path("var") / "models"
    assert (s.max_candidates, s.max_batch, s.max_body_bytes) == (1000, 32, 4 * 1024 * 1024)


def test_settings_come_from_ltr_variables(monkeypatch, tmp_path):
    s = settings_from_env(
        monkeypatch,
        home=str(tmp_path),
        max_candidates="77",
        redis_url="redis://127.0.0.1:6379/8",
        cache_enabled="false",
    )
    assert s.max_candidates == 77
    assert s.redis_url == "redis://127.0.0.1:6379/8"
    assert s.cache_enabled is False
    assert s.model_store_path == tmp_path / "models"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_outside_development_a_missing_api_key_refuses_to_start_naming_ltr_api_key(
    monkeypatch, environment
):
    with pytest.raises(ValidationError, match=f"LTR_API_KEY .* LTR_ENVIRONMENT={environment}"):
        settings_from_env(monkeypatch, environment=environment, redis_url="redis://r:6379/0")


@pytest.mark.parametrize("key", ["changeme", "short-key", "x" * (MIN_API_KEY_LENGTH - 1)])
def test_outside_development_a_weak_api_key_refuses_to_start(monkeypatch, key):
    with pytest.raises(ValidationError, match="LTR_API_KEY must be set to a secret") as err:
        settings_from_env(
            monkeypatch, environment="production", api_key=key, redis_url="redis://r:6379/0"
        )
    assert key not in str(err.value)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_outside_development_a_missing_redis_url_refuses_to_start_naming_ltr_redis_url(
    monkeypatch, environment
):
    with pytest.raises(ValidationError, match="LTR_REDIS_URL must be set") as err:
        settings_from_env(monkeypatch, environment=environment, api_key=STRONG_KEY)
    # the refusal goes to logs: it must not carry the (valid) secret
    assert STRONG_KEY not in str(err.value)
    assert STRONG_KEY[-10:] not in str(err.value)


SECRET = "s3cr3t-request-id-hmac-key-of-40-chars!!"


def test_production_with_a_strong_key_redis_and_a_request_id_secret_starts(monkeypatch):
    s = settings_from_env(
        monkeypatch,
        environment="production",
        api_key=STRONG_KEY,
        redis_url="redis://r:6379/0",
        request_id_secret=SECRET,
    )
    assert s.api_key is not None and s.api_key.get_secret_value() == STRONG_KEY
    assert STRONG_KEY not in repr(s) and SECRET not in repr(s)


@pytest.mark.parametrize("secret", [None, "short"])
def test_production_refuses_a_missing_or_short_request_id_secret(monkeypatch, secret):
    values = {"environment": "production", "api_key": STRONG_KEY, "redis_url": "redis://r/0"}
    if secret is not None:
        values["request_id_secret"] = secret
    with pytest.raises(ValidationError, match="LTR_REQUEST_ID_SECRET") as err:
        settings_from_env(monkeypatch, **values)
    assert "short" not in str(err.value).replace("LTR_REQUEST_ID_SECRET", "")


def test_the_app_refuses_to_build_in_production_with_unsafe_defaults(monkeypatch):
    monkeypatch.setenv("LTR_ENVIRONMENT", "production")
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    with pytest.raises(ValidationError, match="LTR_API_KEY"):
        create_app()


def test_a_dot_env_file_is_read_and_validated_too(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("LTR_ENVIRONMENT=staging\nLTR_API_KEY=tiny\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="LTR_API_KEY"):
        ServingSettings()


@pytest.mark.parametrize(
    ("name", "value"),
    [("max_candidates", "0"), ("max_body_bytes", "10"), ("reload_interval_s", "0")],
)
def test_out_of_range_limits_are_refused_naming_the_setting(monkeypatch, name, value):
    with pytest.raises(ValidationError, match=name):
        settings_from_env(monkeypatch, **{name: value})


def test_the_serve_command_exits_with_a_one_line_reason(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from ltr.cli.main import app

    monkeypatch.setenv("LTR_ENVIRONMENT", "production")
    monkeypatch.setenv("LTR_API_KEY", "tiny-k3y")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "LTR_API_KEY" in lines[0]
    assert "tiny-k3y" not in lines[0]


def test_development_settings_serve_requests(store):
    with serve(make_settings(store, environment="development")) as client:
        assert client.post("/api/v1/rank", json=rank_body(2)).status_code == 200


def test_the_service_sets_the_gil_switch_interval_it_is_given(store):
    import sys

    before = sys.getswitchinterval()
    try:
        with serve(make_settings(store, gil_switch_interval_ms=2.5)):
            assert sys.getswitchinterval() == pytest.approx(0.0025)
        assert ServingSettings(_env_file=None).gil_switch_interval_ms == 1.0
    finally:
        sys.setswitchinterval(before)


def test_bad_trusted_proxies_are_refused_naming_the_entry(monkeypatch):
    with pytest.raises(ValidationError, match="LTR_TRUSTED_PROXIES: not an IP address or CIDR"):
        settings_from_env(monkeypatch, trusted_proxies="10.0.0.0/8, proxy.internal")
