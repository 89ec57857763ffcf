"""ONNX export: parity (recomputed here with onnxruntime), the artifact's metadata, and the
gates that refuse to publish a bad or clashing version."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ltr.data.dataset import LetorDataset
from ltr.export import onnx_export
from ltr.export.onnx_export import ExportParityError, export_checkpoint, export_ranker
from ltr.settings import get_settings
from ltr.training.checkpoint import load_checkpoint
from ltr.training.config import ExperimentConfig
from ltr.training.runner import Splits, run_experiment

torch.set_num_threads(1)

# The project exports with TorchScript on purpose (dynamo=False); its deprecation is noise here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
    pytest.mark.filterwarnings("ignore:The feature will be removed"),
]

COMMON = {
    "seed": 9,
    "training": {"epochs": 2, "batch_size": 16, "device": "cpu", "threads": 1},
    "optimizer": {"lr": 0.01},
    "tracking": {"enabled": False},
}
MODELS = {
    "mlp": {"model": {"type": "mlp", "params": {"hidden": [32, 16]}}, "loss": {"name": "ranknet"}},
    "attention": {
        "model": {
            "type": "attention",
            "params": {"d_model": 16, "n_heads": 2, "n_layers": 1, "dim_feedforward": 32},
        },
        "loss": {"name": "listnet"},
    },
    "lightgbm": {"model": {"type": "lightgbm", "params": {"n_estimators": 20, "num_leaves": 7}}},
}
DESIGN_FIELDS = {
    "version",
    "created_at",
    "model_type",
    "loss",
    "feature_schema",
    "metrics",
    "opset",
    "sha256",
    "data_fingerprint",
    "mlflow_run_id",
    "mlflow_model_version",
    "parity",
    "latency_ms",
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, splits):
    """One trained checkpoint per model type: ``{name: (run_dir, ranker, meta)}``."""
    home = tmp_path_factory.mktemp("export_home")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LTR_HOME", str(home))
        get_settings.cache_clear()
        for name, spec in MODELS.items():
            cfg = ExperimentConfig.model_validate({**COMMON, **spec, "name": f"exp-{name}"})
            summary = run_experiment(
                cfg,
                splits=Splits(splits.train, splits.valid, splits.test),
                run_name=f"exp-{name}",
                progress=False,
            )
            run_dir = Path(summary["run_dir"])
            ranker, meta = load_checkpoint(run_dir)
            out[name] = (run_dir, ranker, meta)
    get_settings.cache_clear()
    return out


def ort_max_abs_diff(model_path: Path, ranker, ds: LetorDataset) -> float:
    """Independent parity: a plain onnxruntime session, one list per query."""
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    ref = np.asarray(ranker.score(ds), dtype=np.float64)
    worst = 0.0
    for _, rows in ds.iter_queries():
        (got,) = sess.run(["scores"], {"features": ds.features[rows]})
        assert got.dtype == np.float32 and got.shape == (rows.stop - rows.start,)
        worst = max(worst, float(np.abs(got.astype(np.float64) - ref[rows]).max()))
    return worst


@pytest.mark.parametrize("name", list(MODELS))
def test_exported_graph_reproduces_the_rankers_scores(checkpoints, splits, tmp_path, name):
    _, ranker, meta = checkpoints[name]
    result = export_ranker(ranker, meta, splits.valid, tmp_path / "models", latency=False)
    path = Path(result["path"])
    assert path == tmp_path / "models" / "versions" / f"exp-{name}"
    assert result["parity"]["max_abs_diff"] <= 1e-5
    for ds in (splits.valid, splits.test):
        assert ort_max_abs_diff(path / "model.onnx", ranker, ds) <= 1e-5


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_signature_is_features_in_and_scores_out(checkpoints, splits, tmp_path, name):
    _, ranker, meta = checkpoints[name]
    result = export_ranker(ranker, meta, splits.valid, tmp_path, latency=False)
    model = onnx.load(str(Path(result["path"]) / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["scores"]
    inp, out = model.graph.input[0], model.graph.output[0]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = inp.type.tensor_type.shape.dim
    out_dims = out.type.tensor_type.shape.dim
    assert len(in_dims) == 2 and len(out_dims) == 1
    assert not in_dims[0].HasField("dim_value")  # any number of documents
    assert in_dims[1].dim_value == 10
    assert not out_dims[0].HasField("dim_value")
    # the dynamic first axis really is dynamic: 1 and 37 documents
    sess = ort.InferenceSession(str(Path(result["path"]) / "model.onnx"))
    for n in (1, 37):
        x = np.random.default_rng(n).normal(size=(n, 10)).astype(np.float32)
        (got,) = sess.run(None, {"features": x})
        assert got.shape == (n,)
        np.testing.assert_allclose(got, ranker.score_features(x), atol=1e-5)


def test_metadata_has_every_field_design_lists(checkpoints, splits, tmp_path):
    _, ranker, meta = checkpoints["mlp"]
    meta = {**meta, "mlflow_run_id": "run-123", "mlflow_model_version": "4"}
    result = export_ranker(ranker, meta, splits.valid, tmp_path, version="v1", latency=True)
    folder = Path(result["path"])
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "model.onnx"]
    md = json.loads((folder / "metadata.json").read_text())
    assert set(md) >= DESIGN_FIELDS
    assert md["version"] == "v1" == result["version"]
    assert md["created_at"].endswith("+00:00")
    assert (md["model_type"], md["loss"]) == ("mlp", "ranknet")
    assert md["feature_schema"] == [
        {"name": f"f{i}", "source": "request", "default": 0.0} for i in range(1, 11)
    ]
    assert md["n_features"] == 10
    assert md["input"] == {
        "name": "features",
        "dtype": "float32",
        "shape": ["n_docs", "n_features"],
    }
    assert md["output"] == {"name": "scores", "dtype": "float32", "shape": ["n_docs"]}
    assert md["metrics"] == meta["metrics"] and "test" in md["metrics"]
    assert md["opset"] == onnx_export.DEFAULT_OPSET
    onnx_opset = {o.domain: o.version for o in onnx.load(str(folder / "model.onnx")).opset_import}
    assert onnx_opset[""] == md["opset"]
    assert md["sha256"] == hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    assert md["sha256"] == result["sha256"]
    assert md["data_fingerprint"] == splits.train.fingerprint()
    assert (md["mlflow_run_id"], md["mlflow_model_version"]) == ("run-123", "4")
    assert md["parity"]["max_abs_diff"] <= 1e-5
    assert md["parity"]["tolerance"] == 1e-5
    assert (md["parity"]["n_docs"], md["parity"]["n_queries"]) == (splits.valid.n_docs, 40)
    assert [row["rows"] for row in md["latency_ms"]] == [1.0, 10.0, 100.0, 1000.0]
    for row in md["latency_ms"]:
        for key in ("source_p50_ms", "source_p99_ms", "onnx_p50_ms", "onnx_p99_ms"):
            assert row[key] > 0
        assert row["source_p99_ms"] >= row["source_p50_ms"]
        assert row["onnx_p99_ms"] >= row["onnx_p50_ms"]
    assert md["source_run"] == "exp-mlp"


def test_lightgbm_metadata_uses_opset_at_most_15(checkpoints, splits, tmp_path):
    _, ranker, meta = checkpoints["lightgbm"]
    result = export_ranker(ranker, meta, splits.valid, tmp_path, latency=False)
    md = json.loads((Path(result["path"]) / "metadata.json").read_text())
    assert md["opset"] == 15 and md["model_type"] == "lightgbm"


def _leftovers(models_dir: Path) -> list[str]:
    versions = models_dir / "versions"
    return sorted(p.name for p in versions.iterdir()) if versions.exists() else []


def test_a_real_parity_failure_raises_and_leaves_nothing_behind(checkpoints, splits, tmp_path):
    """LightGBM's float32 graph differs from its float64 booster by ~1e-7, not by 0."""
    _, ranker, meta = checkpoints["lightgbm"]
    with pytest.raises(ExportParityError) as exc:
        export_ranker(ranker, meta, splits.valid, tmp_path, latency=False, tolerance=1e-12)
    err = exc.value
    assert 0 < err.max_abs_diff <= 1e-5 and err.tolerance == 1e-12
    assert f"{err.max_abs_diff:.3e}" in str(err) and "1.0e-12" in str(err)
    assert _leftovers(tmp_path) == []


def test_parity_gate_reports_the_figure_and_publishes_nothing(
    checkpoints, splits, tmp_path, monkeypatch
):
    _, ranker, meta = checkpoints["mlp"]
    monkeypatch.setattr(onnx_export, "parity", lambda *_a, **_k: 1.0)
    with pytest.raises(ExportParityError, match=r"1\.000e\+00 exceeds the tolerance 1\.0e-05"):
        export_ranker(ranker, meta, splits.valid, tmp_path, latency=False)
    assert _leftovers(tmp_path) == []


def test_exporting_an_existing_version_needs_overwrite(checkpoints, splits, tmp_path):
    _, ranker, meta = checkpoints["mlp"]
    first = export_ranker(ranker, meta, splits.valid, tmp_path, version="v1", latency=False)
    md_path = Path(first["path"]) / "metadata.json"
    before = json.loads(md_path.read_text())
    with pytest.raises(FileExistsError, match="v1"):
        export_ranker(ranker, meta, splits.valid, tmp_path, version="v1", latency=False)
    assert json.loads(md_path.read_text()) == before
    export_ranker(ranker, meta, splits.valid, tmp_path, version="v1", latency=False, overwrite=True)
    after = json.loads(md_path.read_text())
    assert after["created_at"] >= before["created_at"]
    assert _leftovers(tmp_path) == ["v1"]


@pytest.mark.parametrize("version", ["../escape", "a b", ".hidden", "v/1", "x" * 129])
def test_invalid_version_name_is_a_value_error(checkpoints, splits, tmp_path, version):
    _, ranker, meta = checkpoints["mlp"]
    with pytest.raises(ValueError, match="invalid model version"):
        export_ranker(ranker, meta, splits.valid, tmp_path, version=version, latency=False)
    assert not (tmp_path / "versions").exists()


def test_validation_data_with_the_wrong_feature_count_is_a_value_error(
    checkpoints, splits, tmp_path
):
    _, ranker, meta = checkpoints["mlp"]
    v = splits.valid
    wide = LetorDataset(np.hstack([v.features, v.features[:, :2]]), v.labels, v.qids, v.doc_ids)
    with pytest.raises(ValueError, match="12 features; the model expects 10"):
        export_ranker(ranker, meta, wide, tmp_path, latency=False)
    assert not (tmp_path / "versions").exists()


def test_export_checkpoint_loads_the_run_folder(checkpoints, splits, tmp_path):
    run_dir, ranker, _ = checkpoints["attention"]
    result = export_checkpoint(run_dir, tmp_path, validation=splits.test, latency=False)
    assert result["version"] == "exp-attention"
    assert result["parity"]["n_queries"] == splits.test.n_queries
    assert ort_max_abs_diff(Path(result["path"]) / "model.onnx", ranker, splits.test) <= 1e-5
