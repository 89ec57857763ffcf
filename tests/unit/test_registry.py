"""The MLflow model registry of exported rankers: registration, lineage tags and aliases.

Real MLflow on a SQLite store in a temporary LTR_HOME (one store for the module, one
registered-model name per test) and real exported ONNX artifacts of a tiny MLP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.env import isolated_home
from support.models import export_tiny_mlp

from ltr import registry
from ltr.registry import RegistryError

META = {
    "model_type": "mlp",
    "loss": "ranknet",
    "metrics": {"valid": {"ndcg@10": 0.71, "map": 0.5}, "test": {"ndcg@10": 0.69}},
    "data_fingerprint": "fp-123",
    "code_version": "abc1234",
}


def export_version(models_dir: Path, version: str, seed: int, **meta: object) -> Path:
    """A real exported artifact: a tiny MLP scorer through export_ranker (parity checked)."""
    return export_tiny_mlp(models_dir, version, seed, {**META, **meta})


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One LTR_HOME (MLflow store, model store) for the module."""
    root = tmp_path_factory.mktemp("registry_home")
    with isolated_home(root):
        yield root


@pytest.fixture(scope="module")
def training_run(home: Path) -> str:
    """A finished MLflow run with logged params, as `ltr train` leaves one."""
    from ltr.tracking import RunTracker

    with RunTracker("train-mlp") as tracker:
        tracker.log_params({"model": {"type": "mlp", "params": {"hidden": [4]}}, "seed": 1})
    assert tracker.run_id is not None
    return str(tracker.run_id)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A registered-model name of this test's own."""
    return "ranker-" + str(request.node.name).removeprefix("test_")[:60]


@pytest.fixture
def models_dir(home: Path, name: str) -> Path:
    return home / "models" / name


def test_register_model_sets_challenger_alias_and_lineage_tags(
    models_dir: Path, name: str, training_run: str
) -> None:
    art = export_version(models_dir, "v1", seed=1, mlflow_run_id=training_run)
    meta = json.loads((art / "metadata.json").read_text())

    rv = registry.register_model(art, name=name, tags={"ltr.dag_run": "nightly-1"})

    assert rv.name == name
    assert rv.version == "1"
    assert rv.aliases == ("challenger",)
    assert rv.run_id == training_run
    assert rv.store_version == "v1"
    assert rv.source.endswith("/onnx_model")
    t = rv.tags
    assert t["ltr.store_version"] == "v1"
    assert t["ltr.sha256"] == meta["sha256"]
    assert t["ltr.data_fingerprint"] == "fp-123"
    assert t["ltr.code_version"] == "abc1234"
    assert float(t["ltr.parity_max_abs_diff"]) == meta["parity"]["max_abs_diff"]
    assert len(t["ltr.config_hash"]) == 64
    assert json.loads(t["ltr.metrics"]) == META["metrics"]
    assert float(t["ltr.metric.valid.ndcg_at_10"]) == 0.71
    assert t["ltr.dag_run"] == "nightly-1"
    # the artifact folder was logged to the training run, byte for byte
    from mlflow import MlflowClient

    client = MlflowClient()
    logged = {f.path for f in client.list_artifacts(training_run, "onnx_model")}
    assert logged == {"onnx_model/model.onnx", "onnx_model/metadata.json"}
    local = Path(client.download_artifacts(training_run, "onnx_model/model.onnx"))
    assert local.read_bytes() == (art / "model.onnx").read_bytes()


def test_get_alias_returns_the_registered_version_and_none_when_unset(
    models_dir: Path, name: str, training_run: str
) -> None:
    art = export_version(models_dir, "v1", seed=1, mlflow_run_id=training_run)
    rv = registry.register_model(art, name=name)

    got = registry.get_alias(name, "challenger")
    assert got is not None
    assert (got.version, got.store_version, got.aliases) == (rv.version, "v1", ("challenger",))
    assert registry.get_alias(name, "champion") is None
    assert registry.get_alias("no-such-model", "champion") is None


def test_registering_the_same_artifact_again_returns_the_existing_version(
    models_dir: Path, name: str, training_run: str
) -> None:
    art = export_version(models_dir, "v1", seed=1, mlflow_run_id=training_run)
    first = registry.register_model(art, name=name)
    again = registry.register_model(art, name=name)
    assert again.version == first.version
    assert [v.version for v in registry.describe(name)] == [first.version]


def test_register_refuses_an_artifact_whose_sha256_does_not_match(
    models_dir: Path, name: str
) -> None:
    art = export_version(models_dir, "v1", seed=1)
    with open(art / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(RegistryError, match="sha256"):
        registry.register_model(art, name=name)
    assert registry.describe(name) == []


def test_register_without_a_known_run_logs_to_a_registration_run(
    models_dir: Path, name: str
) -> None:
    from mlflow import MlflowClient

    art = export_version(models_dir, "v7", seed=2, mlflow_run_id="0" * 32)
    rv = registry.register_model(art, name=name)
    assert rv.run_id is not None
    run = MlflowClient().get_run(rv.run_id)
    assert run.info.run_name == "register-v7"
    assert rv.store_version == "v7"


def test_register_with_an_unknown_explicit_run_id_fails(models_dir: Path, name: str) -> None:
    art = export_version(models_dir, "v1", seed=1)
    with pytest.raises(RegistryError, match="does not exist"):
        registry.register_model(art, name=name, run_id="f" * 32)


def test_moving_champion_keeps_previous_champion_and_clears_challenger(
    models_dir: Path, name: str, training_run: str
) -> None:
    v1 = registry.register_model(
        export_version(models_dir, "v1", seed=1, mlflow_run_id=training_run), name=name
    )
    assert registry.set_champion(name, v1.version) == {
        "champion": v1.version,
        "previous_champion": None,
    }
    v2 = registry.register_model(export_version(models_dir, "v2", seed=2), name=name)
    assert registry.get_alias(name, "challenger").version == v2.version  # type: ignore[union-attr]

    moved = registry.set_champion(name, v2.version)

    assert moved == {"champion": v2.version, "previous_champion": v1.version}
    assert registry.get_alias(name, "champion").store_version == "v2"  # type: ignore[union-attr]
    assert registry.get_alias(name, "previous_champion").store_version == "v1"  # type: ignore[union-attr]
    assert registry.get_alias(name, "challenger") is None
    # moving it again to the same version changes nothing
    assert registry.set_champion(name, v2.version) == moved


def test_find_store_version_looks_versions_up_by_their_model_store_tag(
    models_dir: Path, name: str
) -> None:
    registry.register_model(export_version(models_dir, "v1", seed=1), name=name)
    v2 = registry.register_model(export_version(models_dir, "v2", seed=2), name=name)
    found = registry.find_store_version("v2", name)
    assert found is not None and found.version == v2.version
    assert registry.find_store_version("v9", name) is None


def test_champion_metrics_come_from_the_champions_lineage_tags(
    models_dir: Path, name: str, training_run: str
) -> None:
    rv = registry.register_model(
        export_version(models_dir, "v1", seed=1, mlflow_run_id=training_run), name=name
    )
    assert registry.champion_metrics(name) is None  # no champion yet
    registry.set_alias(name, "champion", rv.version)
    assert registry.champion_metrics(name) == META["metrics"]


def test_describe_lists_every_version_with_its_aliases(models_dir: Path, name: str) -> None:
    v1 = registry.register_model(export_version(models_dir, "v1", seed=1), name=name)
    registry.set_champion(name, v1.version)
    registry.register_model(export_version(models_dir, "v2", seed=2), name=name)
    rows = [(r.version, r.store_version, r.aliases) for r in registry.describe(name)]
    assert rows == [("1", "v1", ("champion",)), ("2", "v2", ("challenger",))]
    assert registry.describe("no-such-model") == []


def test_set_alias_refuses_an_unknown_version(models_dir: Path, name: str) -> None:
    registry.register_model(export_version(models_dir, "v1", seed=1), name=name)
    with pytest.raises(RegistryError, match="no version 42"):
        registry.set_alias(name, "champion", 42)
