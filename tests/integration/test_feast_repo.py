"""The Feast repository applies, and the registry holds the contract's objects (real Feast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from support.env import isolated_home
from typer.testing import CliRunner

from ltr.cli.main import app
from ltr.features import definitions as d
from ltr.settings import Settings, get_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
FEATURE_REPO = REPO_ROOT / "feature_repo"


@pytest.fixture
def feast_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """An empty LTR_HOME with the SQLite online store and the default project name."""
    with isolated_home(
        tmp_path / "home", monkeypatch, unset=("LTR_FEAST_PROJECT", "LTR_REDIS_URL")
    ):
        yield get_settings()


def test_checked_in_feature_store_yaml_matches_the_contract() -> None:
    from ltr.features.online_store import ONLINE_STORE_TYPES

    config = yaml.safe_load((FEATURE_REPO / "feature_store.yaml").read_text())
    assert config["project"] == d.PROJECT
    assert config["entity_key_serialization_version"] == d.ENTITY_KEY_SERIALIZATION_VERSION
    assert config["registry"]["path"] == f"../var/{d.REGISTRY_FILE}"
    assert config["online_store"] == {
        "type": ONLINE_STORE_TYPES["sqlite"],
        "path": f"../var/{d.SQLITE_FILE}",
    }
    assert config["offline_store"]["type"] == "file"


def test_apply_registers_entities_views_and_service_with_metadata(feast_home: Settings) -> None:
    from feast.types import Array, Float32
    from feast.value_type import ValueType

    from ltr.features.store import apply, get_feature_store

    result = apply(feast_home)
    assert result["project"] == "ltr" and result["online_store"] == "sqlite"
    assert (feast_home.home / "feast" / "registry.db").is_file()
    store = get_feature_store(feast_home)

    entities = {e.name: e for e in store.list_entities()}
    assert set(entities) == {d.QUERY_ENTITY, d.DOC_ENTITY}
    assert entities[d.QUERY_ENTITY].join_key == d.QUERY_JOIN_KEY
    assert entities[d.DOC_ENTITY].join_key == d.DOC_JOIN_KEY
    for entity in entities.values():
        assert entity.value_type == ValueType.STRING
        assert entity.description and entity.owner and entity.tags

    views = {v.name: v for v in store.list_feature_views()}
    assert set(views) == {d.QUERY_DOC_VIEW, d.DOC_VIEW}
    assert sorted(views[d.QUERY_DOC_VIEW].entities) == sorted([d.QUERY_ENTITY, d.DOC_ENTITY])
    assert views[d.DOC_VIEW].entities == [d.DOC_ENTITY]
    for name, view in views.items():
        assert [(f.name, f.dtype) for f in view.features] == [(d.FEATURE_FIELD, Array(Float32))]
        assert sorted(c.name for c in view.entity_columns) == sorted(d.VIEW_JOIN_KEYS[name])
        assert view.ttl in (None, timedelta(0))  # 0: never expires
        assert view.online
        assert view.description and view.owner and view.tags
        assert view.batch_source.path == str(
            (feast_home.home / "feast" / "data" / d.OFFLINE_FILES[name]).resolve()
        )

    services = {s.name: s for s in store.list_feature_services()}
    assert set(services) == set(d.FEATURE_SERVICES)
    for name, service in services.items():
        assert [p.name for p in service.feature_view_projections] == list(d.FEATURE_SERVICES[name])
        assert service.description and service.owner and service.tags


def test_apply_again_changes_nothing_and_deletes_nothing(feast_home: Settings) -> None:
    from ltr.features.store import apply, get_feature_store

    apply(feast_home)
    before = sorted(v.name for v in get_feature_store(feast_home).list_feature_views())
    again = apply(feast_home)
    assert again["deleted"] == []
    assert sorted(v.name for v in get_feature_store(feast_home).list_feature_views()) == before


def test_project_name_comes_from_settings(feast_home: Settings) -> None:
    from ltr.features.store import apply, get_feature_store

    settings = feast_home.model_copy(update={"feast_project": "ltr_other"})
    apply(settings)
    assert get_feature_store(settings).get_feature_service("ranker_v1").name == "ranker_v1"
    assert get_feature_store(feast_home).list_feature_services() == []  # project "ltr": empty


def test_feast_cli_applies_the_checked_in_config_and_reads_the_rendered_one(
    feast_home: Settings, tmp_path: Path
) -> None:
    """`feast` itself: the checked-in feature_store.yaml (paths moved to a temporary home) and
    the one `ltr features apply` renders; one subprocess runs both commands."""
    from ltr.features.store import apply

    rendered = Path(apply(feast_home)["feature_store_yaml"])
    cli_home = tmp_path / "cli_home"
    cli_home.mkdir()  # Feast creates the registry's folder but not its parents
    checked_in = tmp_path / "checked_in.yaml"
    checked_in.write_text(
        (FEATURE_REPO / "feature_store.yaml").read_text().replace("../var", str(cli_home))
    )
    commands = [
        ["-c", str(FEATURE_REPO), "-f", str(checked_in), "apply"],
        ["-c", str(FEATURE_REPO), "-f", str(checked_in), "feature-services", "list"],
        ["-c", str(FEATURE_REPO), "-f", str(rendered), "feature-services", "list"],
    ]
    script = (
        "import json, sys\n"
        "from feast.cli.cli import cli\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        cli.main(args, standalone_mode=False)\n"
        "    except SystemExit as exc:\n"
        "        if exc.code: raise\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(commands)],
        capture_output=True,
        text=True,
        env={**os.environ, "LTR_HOME": str(cli_home)},
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # Feast takes its legacy apply path for an online store class of the project's (no
    # "Created ..." diff is printed): each registry lists the service once it is applied.
    listed = [ln.split() for ln in out.stdout.splitlines() if ln.startswith("ranker_v1 ")]
    assert listed == [["ranker_v1", "query_doc_features:features,", "doc_features:features"]] * 2
    assert (cli_home / "feast" / "registry.db").is_file()
    assert (cli_home / "feast" / "registry.db").is_file()
    assert not list(FEATURE_REPO.glob("**/__pycache__"))


def test_cli_features_apply_prints_json(feast_home: Settings) -> None:
    result = CliRunner().invoke(app, ["features", "apply", "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["feature_services"] == ["ranker_v1"]
    assert out["feature_views"] == sorted([d.QUERY_DOC_VIEW, d.DOC_VIEW])


def test_cli_features_materialize_without_data_exits_2(feast_home: Settings) -> None:
    result = CliRunner().invoke(app, ["features", "materialize", "--days", "1", "--json"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: nothing to materialize")
