"""Typed, immutable experiment configs: the files in configs/, errors, overrides."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import yaml

from ltr.training.config import (
    ExperimentConfig,
    SyntheticConfig,
    load_config,
    parse_overrides,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# pipeline.yaml configures the DAGs, not an experiment (tested in test_pipeline_config.py)
CONFIG_FILES = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "pipeline.yaml")


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_configs_folder_holds_the_template_and_one_file_per_model():
    names = {p.name for p in CONFIG_FILES}
    assert "TEMPLATE.yaml" in names
    assert {"mlp_lambdarank.yaml", "lightgbm.yaml", "attention_listnet.yaml"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_loads_and_matches_its_yaml(path):
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text())
    assert cfg.name == raw["name"]
    assert cfg.model.type == raw["model"]["type"]
    if cfg.model.is_neural:
        assert cfg.loss.name == raw["loss"]["name"]
    # what is written in the file wins over the defaults
    for section in ("model", "training", "optimizer"):
        for key, value in (raw.get(section) or {}).items():
            assert cfg.model_dump(mode="json")[section][key] == value, (section, key)


def _field_paths(model: type[pydantic.BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        out.add(prefix + name)
        ann = field.annotation
        for candidate in (ann, *getattr(ann, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, pydantic.BaseModel):
                out |= _field_paths(candidate, f"{prefix}{name}.")
    return out


def _yaml_paths(node: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in node.items():
        out.add(prefix + k)
        if isinstance(v, dict) and k != "params":
            out |= _yaml_paths(v, f"{prefix}{k}.")
    return out


def test_template_documents_every_field_with_its_default():
    path = CONFIGS / "TEMPLATE.yaml"
    raw = yaml.safe_load(path.read_text())
    assert _yaml_paths(raw) == _field_paths(ExperimentConfig)
    cfg = load_config(path)
    assert cfg.data.synthetic == SyntheticConfig()
    without_synthetic = cfg.model_copy(
        update={"data": cfg.data.model_copy(update={"synthetic": None})}
    )
    assert without_synthetic == ExperimentConfig()


def test_unknown_key_is_an_error_naming_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "name: x\ntraining:\n  epochz: 3\n")
    with pytest.raises(ValueError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert "training.epochz" in msg


def test_invalid_value_is_an_error_naming_the_field_and_the_file(tmp_path):
    path = write(tmp_path, "model: {type: xgboost}\noptimizer: {lr: -1}\n")
    with pytest.raises(ValueError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert str(path) in msg and "model.type" in msg and "optimizer.lr" in msg


@pytest.mark.parametrize(
    ("text", "needle"),
    [("training: [1, 2\n", "not valid YAML"), ("- a\n- b\n", "top level must be a mapping")],
)
def test_malformed_files_are_errors_naming_the_file(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=needle) as exc:
        load_config(path)
    assert str(path) in str(exc.value)


def test_missing_config_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_empty_file_gives_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == ExperimentConfig()


def test_parse_overrides_reads_values_as_yaml():
    got = parse_overrides(
        ["optimizer.lr=0.01", "model.params.hidden=[64,32]", "training.device=cpu", "a.b=x=y"]
    )
    assert got == {
        "optimizer.lr": 0.01,
        "model.params.hidden": [64, 32],
        "training.device": "cpu",
        "a.b": "x=y",
    }


def test_parse_overrides_without_equals_sign_is_an_error():
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["training.epochs"])


def test_dotted_overrides_apply_and_leave_other_keys_alone():
    path = CONFIGS / "mlp_lambdarank.yaml"
    base = load_config(path)
    cfg = load_config(
        path,
        parse_overrides(
            ["optimizer.lr=0.01", "model.params.hidden=[64,32]", "training.epochs=3", "seed=7"]
        ),
    )
    assert cfg.optimizer.lr == 0.01
    assert cfg.model.params == {**base.model.params, "hidden": [64, 32]}
    assert cfg.training.epochs == 3 and cfg.seed == 7
    assert cfg.training.patience == base.training.patience
    assert cfg.loss == base.loss and cfg.evaluation == base.evaluation


def test_override_into_an_unset_section_builds_it_from_defaults():
    cfg = ExperimentConfig().with_overrides({"data.synthetic.n_queries": 50})
    assert cfg.data.synthetic == SyntheticConfig(n_queries=50)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"training.epochs": 0}, "training.epochs"),
        ({"optimizer.lrr": 0.1}, "optimizer.lrr"),
        ({"training.device": "tpu"}, "training.device"),
    ],
)
def test_overrides_are_revalidated_and_errors_name_the_key(overrides, needle):
    path = CONFIGS / "mlp_lambdarank.yaml"
    with pytest.raises(ValueError) as exc:
        load_config(path, overrides)
    assert needle in str(exc.value) and str(path) in str(exc.value)


def test_override_below_a_scalar_is_an_unknown_key():
    with pytest.raises(ValueError, match=r"unknown config key 'seed\.x'"):
        ExperimentConfig().with_overrides({"seed.x": 1})


def test_configs_are_frozen_and_overrides_return_a_copy():
    cfg = ExperimentConfig()
    with pytest.raises(pydantic.ValidationError):
        cfg.training.epochs = 3  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        cfg.seed = 1  # type: ignore[misc]
    other = cfg.with_overrides({"training.epochs": 3})
    assert other.training.epochs == 3 and cfg.training.epochs == 60


def test_name_must_be_a_slug():
    with pytest.raises(pydantic.ValidationError, match="name"):
        ExperimentConfig(name="my run")


def test_resolved_yaml_round_trips_to_the_same_config(tmp_path):
    cfg = load_config(CONFIGS / "attention_listnet.yaml").with_overrides(
        {"data.train": str(tmp_path / "t.txt"), "data.valid": str(tmp_path / "v.txt")}
    )
    assert load_config(write(tmp_path, cfg.to_yaml(), "resolved.yaml")) == cfg
