"""``ltr promote`` and ``ltr rollback`` end to end in a temporary LTR_HOME: real exported
artifacts, real routing.json, the real MLflow registry (SQLite) and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.models import export_tiny_mlp, register_versions
from typer.testing import CliRunner, Result

from ltr.cli.main import app
from ltr.model_store import serve_single
from ltr.settings import get_settings
from serving.routing import RoutingConfig

pytestmark = pytest.mark.e2e

runner = CliRunner()


def ltr(*args: object, code: int = 0) -> Result:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (
        f"ltr {' '.join(map(str, args))} -> {result.exit_code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    )
    return result


def one_line_error(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return str(lines[0])


@pytest.fixture
def store(ltr_home: Path) -> Path:
    """var/models with v1 (in production, registry champion) and v2 (registered challenger)."""
    models = get_settings().models_dir
    export_tiny_mlp(models, "v1", seed=1, meta={"model_type": "mlp"})
    export_tiny_mlp(models, "v2", seed=2, meta={"model_type": "mlp"})
    register_versions(models, ["v1", "v2"], champion="v1")
    serve_single(models, "v1")
    return models


def test_promote_without_observation_then_rollback_as_json(store: Path) -> None:
    from ltr import registry

    out = json.loads(ltr("promote", "v2", "--no-observe", "--json").stdout)

    assert (out["status"], out["version"], out["champion"]) == ("promoted", "v2", "v1")
    assert [s["step"] for s in out["steps"]] == ["deploy", "shift", "promote"]
    assert RoutingConfig.load(store / "routing.json").production == "v2"
    assert registry.get_alias(registry.DEFAULT_NAME, "champion").store_version == "v2"  # type: ignore[union-attr]

    again = json.loads(ltr("promote", "v2", "--no-observe", "--json").stdout)
    assert (again["status"], again["changed"]) == ("already_promoted", False)

    back = json.loads(ltr("rollback", "--reason", "ctr dropped", "--json").stdout)

    assert (back["from"], back["to"], back["reason"]) == ("v2", "v1", "ctr dropped")
    assert RoutingConfig.load(store / "routing.json").production == "v1"
    assert registry.get_alias(registry.DEFAULT_NAME, "champion").store_version == "v1"  # type: ignore[union-attr]
    lines = (store / "promotions.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == ["deploy", "shift", "promote", "rollback"]


def test_promote_prints_the_steps_in_plain_text(store: Path) -> None:
    # without a registry, only a recorded gate verdict qualifies v2: the override says why
    text = ltr(
        "promote", "v2", "--no-observe", "--no-registry", "--allow-ungated",
        "--override-reason", "registry down for maintenance",
    ).stdout  # fmt: skip
    assert "override  override: registry down for maintenance" in text
    assert "deploy" in text and "v1 -> v2" in text
    assert "promoted  v2 now serves all traffic" in text


def champion() -> str | None:
    from ltr import registry

    rv = registry.get_alias(registry.DEFAULT_NAME, registry.CHAMPION)
    return rv.store_version if rv else None


def test_a_version_that_is_neither_gated_nor_registered_is_refused_and_nothing_changes(
    store: Path,
) -> None:
    export_tiny_mlp(store, "v3", seed=3, meta={"model_type": "mlp"})  # exported by hand only

    error = one_line_error(ltr("promote", "v3", "--no-observe", code=2))

    assert "v3 has no passing gate verdict (gates.json) and is not registered" in error
    assert "--allow-ungated --override-reason" in error and "Nothing was changed." in error
    reason = one_line_error(ltr("promote", "v3", "--no-observe", "--allow-ungated", code=2))
    assert "allow_ungated needs a reason" in reason
    assert RoutingConfig.load(store / "routing.json").production == "v1"
    assert champion() == "v1"
    assert not (store / "promotions.jsonl").exists()


def test_the_champion_alias_names_what_serves_after_an_override_promotion_and_its_rollback(
    store: Path,
) -> None:
    """An override registers the ungated version (tagged with the reason), so the champion
    alias follows routing; a rollback gives both back to the former champion."""
    from ltr import registry

    export_tiny_mlp(store, "v3", seed=3, meta={"model_type": "mlp"})

    out = json.loads(
        ltr(
            "promote", "v3", "--no-observe", "--json",
            "--allow-ungated", "--override-reason", "hotfix INC-42",
        ).stdout
    )  # fmt: skip

    assert out["status"] == "promoted" and out["eligibility"]["eligible_by"] == "override"
    assert RoutingConfig.load(store / "routing.json").production == "v3"
    assert champion() == "v3"
    rv = registry.find_store_version("v3")
    assert rv is not None and rv.tags["ltr.promotion.override"] == "hotfix INC-42"
    records = [json.loads(x) for x in (store / "promotions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == ["override", "deploy", "shift", "promote"]
    assert records[0]["reason"] == "hotfix INC-42"
    assert len({r["promotion_id"] for r in records}) == 1

    back = json.loads(ltr("rollback", "--reason", "hotfix reverted", "--json").stdout)

    assert (back["from"], back["to"]) == ("v3", "v1")
    assert RoutingConfig.load(store / "routing.json").production == "v1"
    assert champion() == "v1"


def test_promote_errors_are_one_line_with_a_non_zero_exit(store: Path) -> None:
    assert "v9" in one_line_error(ltr("promote", "v9", "--no-observe", code=2))
    assert "--service-url" in one_line_error(ltr("promote", "v2", code=2))
    assert "blue-green" in one_line_error(ltr("promote", "v2", "--strategy", "purple", code=2))
    assert "canary_percent" in one_line_error(
        ltr("promote", "v2", "--no-observe", "--canary-percent", "150", code=2)
    )
    assert RoutingConfig.load(store / "routing.json").production == "v1"


def test_rollback_without_history_asks_for_a_target(store: Path) -> None:
    assert "--to" in one_line_error(ltr("rollback", code=2))
    out = json.loads(ltr("rollback", "--to", "v2", "--no-registry", "--json").stdout)
    assert out["to"] == "v2"
