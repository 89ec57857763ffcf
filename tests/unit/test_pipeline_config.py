"""The DAGs' pipeline config: the shipped file loads, every training config it names exists
and loads, and mistakes are reported with the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltr.pipelines.config import DEFAULT_PATH, load_pipeline_config, pipeline_config_path
from ltr.training.config import load_config


def test_the_shipped_pipeline_config_loads_and_names_loadable_experiment_configs() -> None:
    cfg = load_pipeline_config(DEFAULT_PATH)
    assert cfg.training.configs
    for path in cfg.training.configs:
        experiment = load_config(cfg.resolve(path))
        assert experiment.name
    assert 0 < cfg.training.holdout.valid_fraction + cfg.training.holdout.test_fraction < 1
    assert cfg.gates.parity_tolerance == pytest.approx(1e-5)


def test_an_unknown_key_is_named_with_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("gates:\n  min_margn: 0.1\n")
    with pytest.raises(ValueError, match=r"p\.yaml.*gates\.min_margn"):
        load_pipeline_config(bad)


def test_an_out_of_range_value_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("promotion:\n  canary_percent: 150\n")
    with pytest.raises(ValueError, match=r"promotion\.canary_percent"):
        load_pipeline_config(bad)


def test_the_environment_variable_selects_the_file(tmp_path: Path, monkeypatch) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("registry_name: elsewhere\n")
    monkeypatch.setenv("LTR_PIPELINE_CONFIG", str(other))
    assert load_pipeline_config().registry_name == "elsewhere"


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pipeline config not found"):
        load_pipeline_config(tmp_path / "nope.yaml")


def test_the_home_config_is_read_when_no_variable_names_one(tmp_path: Path, monkeypatch) -> None:
    """`ltr demo` writes <LTR_HOME>/pipeline.yaml; Airflow on the same home reads it."""
    monkeypatch.delenv("LTR_PIPELINE_CONFIG", raising=False)
    monkeypatch.setenv("LTR_HOME", str(tmp_path))
    assert pipeline_config_path() == DEFAULT_PATH  # nothing in the home yet
    (tmp_path / "pipeline.yaml").write_text("registry_name: the-demos\n")
    assert pipeline_config_path() == tmp_path / "pipeline.yaml"
    assert load_pipeline_config().registry_name == "the-demos"
    other = tmp_path / "other.yaml"
    other.write_text("registry_name: chosen\n")
    monkeypatch.setenv("LTR_PIPELINE_CONFIG", str(other))  # the variable still wins
    assert load_pipeline_config().registry_name == "chosen"


# ----------------------------------------------------------------- checks before training
def _store_layout(home: Path, n_features: int, doc: list[int]) -> None:
    store = home / "feast" / "data"
    store.mkdir(parents=True, exist_ok=True)
    layout = {"n_features": n_features, "query_doc_features": [], "doc_features": doc}
    (store / "layout.json").write_text(json.dumps(layout))


def test_the_retrain_inputs_pass_when_config_and_stores_agree(ltr_home: Path, monkeypatch) -> None:
    from ltr.pipelines.preflight import check_retrain_inputs
    from ltr.settings import get_settings

    monkeypatch.delenv("LTR_PIPELINE_CONFIG", raising=False)
    _store_layout(ltr_home, 46, [])
    out = check_retrain_inputs(load_pipeline_config(DEFAULT_PATH), get_settings())
    assert out["layout"] == {"n_features": 46}


def test_every_mismatch_that_would_fail_after_training_is_named_before_it_with_the_fix(
    ltr_home: Path, tmp_path: Path, monkeypatch
) -> None:
    """The demo's store has document-only columns the repository's config does not know,
    a training config is missing, the metric is a typo and the champion reads 10 features:
    each is named in one refusal, with the file to fix."""
    from ltr.pipelines.failures import PipelineConfigError
    from ltr.pipelines.preflight import check_retrain_inputs
    from ltr.settings import get_settings

    _store_layout(ltr_home, 20, [15, 16, 17, 18, 19])
    champion = ltr_home / "models" / "versions" / "old"
    champion.mkdir(parents=True)
    (champion / "metadata.json").write_text(json.dumps({"version": "old", "n_features": 10}))
    (ltr_home / "models" / "routing.json").write_text(
        json.dumps({"strategy": "single", "production": "old"})
    )
    cfg_path = tmp_path / "p.yaml"
    cfg_path.write_text(
        "training:\n  configs: [configs/lightgbm.yaml, configs/nope.yaml]\n"
        "gates:\n  metric: ndgc@10\n"
    )
    monkeypatch.setenv("LTR_PIPELINE_CONFIG", str(cfg_path))

    with pytest.raises(PipelineConfigError) as err:
        check_retrain_inputs(load_pipeline_config(), get_settings())

    message = str(err.value)
    assert message.startswith(f"the retrain cannot succeed with the pipeline config {cfg_path}")
    assert "'configs/nope.yaml'" in message and "config file not found" in message
    assert "gates.metric: unknown metric 'ndgc@10'" in message
    assert "set doc_feature_indices: [15, 16, 17, 18, 19]" in message
    assert "the champion old takes 10 features, the offline store holds 20" in message
    assert message.endswith("then clear the task.")
    assert "configs/lightgbm.yaml" not in message  # only what is wrong is named


def test_a_champion_whose_artifact_is_gone_is_named_before_training(
    ltr_home: Path, monkeypatch
) -> None:
    from ltr.pipelines.failures import PipelineConfigError
    from ltr.pipelines.preflight import check_retrain_inputs
    from ltr.settings import get_settings

    monkeypatch.delenv("LTR_PIPELINE_CONFIG", raising=False)
    (ltr_home / "models").mkdir(parents=True)
    (ltr_home / "models" / "routing.json").write_text(
        json.dumps({"strategy": "single", "production": "gone"})
    )
    with pytest.raises(PipelineConfigError, match=r"routing\.json names the champion gone"):
        check_retrain_inputs(load_pipeline_config(DEFAULT_PATH), get_settings())
