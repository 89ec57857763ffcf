"""The DAGs' pipeline config: the shipped file loads, every training config it names exists
and loads, and mistakes are reported with the file and the key."""

from __future__ import annotations

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
