"""The ``ltr`` command line end to end, in a temporary LTR_HOME: train, evaluate, export,
evaluate the export, TREC round trip, benchmark, compare, tune, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.device import cpu_only
from support.env import isolated_home
from typer.testing import CliRunner

from ltr.cli.main import app
from ltr.settings import get_settings

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
    pytest.mark.filterwarnings("ignore:The feature will be removed"),
]

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def ltr(*args: object, ok: bool = True):
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (
            f"ltr {' '.join(map(str, args))} -> {result.exit_code}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
        )
    return result


def ltr_json(*args: object) -> dict:
    return json.loads(ltr(*args, "--json").stdout)


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli_home")
    with isolated_home(home):
        yield home


@pytest.fixture(scope="module")
def files(home, splits):
    """train / valid / test LETOR files and the test qrels."""
    from ltr.data.letor import write_letor
    from ltr.metrics.trec import write_qrels

    folder = home / "data"
    paths = {}
    for name in ("train", "valid", "test"):
        paths[name] = folder / f"{name}.txt"
        write_letor(getattr(splits, name), paths[name])
    t = splits.test
    paths["qrels"] = folder / "test.qrels"
    write_qrels(paths["qrels"], t.qids, t.doc_ids, t.labels)
    return paths


def data_args(files) -> list[object]:
    return ["--train", files["train"], "--valid", files["valid"], "--test", files["test"]]


@pytest.fixture(scope="module")
def mlp_run(files):
    return ltr_json(
        "train",
        CONFIGS / "mlp_lambdarank.yaml",
        *data_args(files),
        "--set",
        "training.epochs=3",
        "--set",
        "training.threads=1",
        "--run-name",
        "e2e-mlp",
        "--device",
        "cpu",  # the CPU everywhere, so the checkpoint's scores reproduce the summary exactly
    )


@pytest.fixture(scope="module")
def lgb_run(files):
    return ltr_json(
        "train",
        CONFIGS / "lightgbm.yaml",
        *data_args(files),
        "--set",
        "model.params.n_estimators=30",
        "--set",
        "training.threads=1",
        "--run-name",
        "e2e-lgb",
    )


@pytest.fixture(scope="module")
def exported(mlp_run):
    return ltr_json("export", mlp_run["run_dir"])


def test_train_prints_a_summary_pointing_to_a_run_folder(home, mlp_run, splits):
    run_dir = Path(mlp_run["run_dir"])
    assert run_dir == home / "runs" / "e2e-mlp"
    assert (run_dir / "checkpoint.json").is_file() and (run_dir / "model.pt").is_file()
    assert (mlp_run["model_type"], mlp_run["loss"]) == ("mlp", "lambdarank")
    assert mlp_run["epochs_run"] == 3 and 1 <= mlp_run["best_epoch"] <= 3
    assert mlp_run["mlflow_run_id"]
    assert mlp_run["data_fingerprint"] == splits.train.fingerprint()  # lossless LETOR files
    assert set(mlp_run["metrics"]) == {"valid", "test"}
    assert mlp_run["metrics"]["test"]["ndcg@10"] > 0.6


def test_evaluate_checkpoint_reproduces_the_train_summarys_test_metrics(files, mlp_run):
    out = ltr_json("evaluate", mlp_run["run_dir"], files["test"])
    assert out["n_queries"] == 40 and out["skipped"] == 0
    expected = mlp_run["metrics"]["test"]
    assert set(out["metrics"]) <= set(expected)
    for name, value in out["metrics"].items():
        assert value == pytest.approx(expected[name], abs=1e-12), name


def test_export_writes_a_version_with_parity_and_the_runs_lineage(home, mlp_run, exported):
    folder = Path(exported["path"])
    assert folder == home / "models" / "versions" / "e2e-mlp"
    assert exported["version"] == "e2e-mlp"
    assert exported["parity"]["max_abs_diff"] <= 1e-5
    md = json.loads((folder / "metadata.json").read_text())
    assert md["sha256"] == exported["sha256"]
    assert md["mlflow_run_id"] == mlp_run["mlflow_run_id"]
    assert md["data_fingerprint"] == mlp_run["data_fingerprint"]
    assert md["metrics"] == mlp_run["metrics"]
    assert len(md["latency_ms"]) == 4


def test_evaluating_the_exported_version_matches_the_checkpoint(files, mlp_run, exported):
    onnx_out = ltr_json("evaluate", exported["path"], files["test"])
    assert onnx_out["model"].startswith("onnx")
    ckpt_out = ltr_json("evaluate", mlp_run["run_dir"], files["test"])
    assert onnx_out["metrics"].keys() == ckpt_out["metrics"].keys()
    for name, value in ckpt_out["metrics"].items():
        assert onnx_out["metrics"][name] == pytest.approx(value, abs=1e-5), name


def test_run_file_from_evaluate_agrees_with_evaluate_run(files, mlp_run, tmp_path):
    run_file = tmp_path / "run.txt"
    direct = ltr_json("evaluate", mlp_run["run_dir"], files["test"], "--run-out", run_file)
    lines = run_file.read_text().splitlines()
    assert len(lines) == sum(1 for _ in files["test"].open())
    assert lines[0].split()[1] == "Q0" and lines[0].split()[3] == "1"
    trec = ltr_json("evaluate-run", files["qrels"], run_file)
    assert trec["n_queries"] == 40
    assert trec["means"].keys() == direct["metrics"].keys()
    for name, value in direct["metrics"].items():
        assert trec["means"][name] == pytest.approx(value, abs=1e-9), name


def test_benchmark_reports_one_row_per_size_with_positive_timings(mlp_run):
    out = ltr_json("benchmark", mlp_run["run_dir"], "--sizes", "1,10", "--repeats", "20")
    assert (out["model_type"], out["source"]) == ("mlp", "pytorch")
    rows = out["latency_ms"]
    assert [r["rows"] for r in rows] == [1.0, 10.0]
    for r in rows:
        for key in ("source_p50_ms", "source_p99_ms", "onnx_p50_ms", "onnx_p99_ms"):
            assert r[key] > 0, key


def test_compare_lists_both_runs_and_writes_a_png(mlp_run, lgb_run, tmp_path):
    chart = tmp_path / "compare.png"
    out = ltr_json("compare", "--chart", chart)
    by_id = {row["run_id"]: row for row in out["runs"]}
    assert {mlp_run["mlflow_run_id"], lgb_run["mlflow_run_id"]} <= set(by_id)
    for summary in (mlp_run, lgb_run):
        row = by_id[summary["mlflow_run_id"]]
        assert (row["model_type"], row["loss"]) == (summary["model_type"], summary["loss"])
        for name in ("ndcg@10", "map", "mrr"):
            assert row[name] == pytest.approx(summary["metrics"]["test"][name], rel=1e-12)
    assert out["chart"] == str(chart)
    assert chart.read_bytes()[:8] == PNG_MAGIC


def test_tune_runs_the_trials_and_tracks_each_in_mlflow(files):
    from mlflow import MlflowClient

    out = ltr_json(
        "tune",
        CONFIGS / "mlp_lambdarank.yaml",
        "--trials",
        "2",
        "--study-name",
        "e2e-study",
        "--set",
        "training.epochs=2",
        "--set",
        "training.threads=1",
        "--set",
        f"data.train={files['train']}",
        "--set",
        f"data.valid={files['valid']}",
    )
    assert out["study"] == "e2e-study"
    assert out["n_trials"] == 2 and out["complete"] + out["pruned"] == 2
    assert 0 < out["best_value"] <= 1
    assert {"lr", "batch_size", "width", "dropout"} <= set(out["best_params"])
    client = MlflowClient(tracking_uri=get_settings().tracking_uri)
    exp = client.get_experiment_by_name("ltr")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`ltr.study` = 'e2e-study'")
    assert len(runs) == 2
    assert sorted(r.data.tags["ltr.trial"] for r in runs) == ["0", "1"]
    assert out["best_mlflow_run_id"] in {r.info.run_id for r in runs}
    best = next(r for r in runs if r.info.run_id == out["best_mlflow_run_id"])
    assert best.data.metrics["final_valid_ndcg_at_10"] == pytest.approx(out["best_value"])
    assert Path(out["best_run_dir"], "checkpoint.json").is_file()


def test_missing_config_file_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert_one_line_error(ltr("train", missing, ok=False), "config file not found", str(missing))


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("training.epochs", "key=value"),
        ("training.nope=1", "training.nope"),
        ("training.epochs=0", "training.epochs"),
    ],
)
def test_bad_set_is_a_one_line_error(override, needle):
    result = ltr("train", CONFIGS / "mlp_lambdarank.yaml", "--set", override, ok=False)
    assert_one_line_error(result, needle)


@pytest.mark.parametrize("command", ["evaluate", "export", "benchmark"])
def test_nonexistent_checkpoint_is_a_one_line_error(files, tmp_path, command):
    missing = tmp_path / "no-such-run"
    args = [command, missing, files["test"]] if command == "evaluate" else [command, missing]
    assert_one_line_error(ltr(*args, ok=False), str(missing))


def test_train_file_without_valid_file_is_a_one_line_error(files):
    result = ltr(
        "train", CONFIGS / "mlp_lambdarank.yaml", "--train", files["train"], "--no-track", ok=False
    )
    assert_one_line_error(result, "data.valid is required")


@cpu_only
def test_device_cuda_without_cuda_is_a_one_line_error(files):
    result = ltr(
        "train",
        CONFIGS / "mlp_lambdarank.yaml",
        *data_args(files),
        "--device",
        "cuda",
        "--no-track",
        ok=False,
    )
    assert_one_line_error(result, "no CUDA device is available")


@pytest.mark.parametrize(
    "command",
    ["train", "evaluate", "evaluate-run", "export", "benchmark", "compare", "tune", "demo", "data"],
)
def test_every_command_has_help(command):
    result = ltr(command, "--help")
    assert "Usage:" in result.stdout and command in result.stdout


def test_ltr_help_answers_without_importing_any_heavy_library():
    """`ltr --help` stays quick because the CLI imports heavy libraries only inside the
    commands that use them (how quick is measured by a benchmark, not asserted here)."""
    exe = Path(sys.executable).parent / "ltr"
    if not exe.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run([str(exe), "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and "export" in done.stdout
    heavy = ["torch", "feast", "mlflow", "lightgbm", "great_expectations", "airflow", "optuna"]
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.argv = ['ltr', '--help']\n"
            "import ltr.cli.main as m\n"
            "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
            f"print(sorted(set({heavy!r}) & {{n.split('.')[0] for n in sys.modules}}))",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=REPO,
    )
    assert probe.stdout.strip().splitlines()[-1] == "[]", probe.stdout + probe.stderr
