"""PyTorch vs ONNX Runtime latency at 1, 10, 100 and 1000 rows, with the export parity.

    python -m bench.export_latency [--datasets DIR]

Trains an MLP (LambdaRank) and the LightGBM baseline on MQ2008 fold 1 when the dataset is
present (else on the project's synthetic data), exports both through the same code as
`ltr export`, and prints source-model and ONNX Runtime p50/p99 side by side, one thread per
runtime: torch.set_num_threads(1) (checked during the timed calls), one intra- and one
inter-op thread in the ONNX Runtime session, ``num_threads=1`` on every LightGBM prediction.

Targets (DESIGN.md): parity max abs score difference <= 1e-5 for every model; ONNX Runtime
p50 no slower than the source model at every list size (1..1000 rows), both timed in this
run. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._targets import Targets
from bench.quality import default_datasets_dir

PARITY_TOLERANCE = 1e-5


def one_thread_source(ranker: Any, seen_torch_threads: set[int]) -> Callable[[np.ndarray], Any]:
    """The source model's scoring on one thread; records torch's thread count at each call."""
    if getattr(ranker, "model_type", "") == "lightgbm":
        booster = ranker.booster

        def lightgbm_one_thread(x: np.ndarray) -> np.ndarray:
            return np.asarray(booster.predict(x, num_threads=1), dtype=np.float64)

        return lightgbm_one_thread
    import torch

    def torch_scores(x: np.ndarray) -> Any:
        seen_torch_threads.add(torch.get_num_threads())
        return ranker.score_features(x)

    return torch_scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", type=Path, default=default_datasets_dir())
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from ltr.export.latency import make_session, measure_latency
    from ltr.export.onnx_export import parity, write_onnx
    from ltr.training.config import ExperimentConfig
    from ltr.training.runner import Splits, load_splits
    from ltr.training.trainer import fit

    root = args.datasets / "mq2008"
    if (root / "S1.txt").is_file():
        from ltr.data.folds import load_fold

        splits = Splits(*load_fold(root, 1))
        source = "MQ2008 fold 1"
    else:
        splits = load_splits(ExperimentConfig())
        source = "synthetic"
    print(f"data: {source}; {platform.machine()} {os.cpu_count()} cores; one thread per runtime")
    specs = {
        "mlp-lambdarank": {
            "model": {"type": "mlp", "params": {"hidden": [128, 64]}},
            "training": {"epochs": 20, "threads": 1},
        },
        "attention-listnet": {
            "model": {"type": "attention"},
            "loss": {"name": "listnet"},
            "training": {"epochs": 10, "threads": 1},
        },
        "lightgbm": {"model": {"type": "lightgbm"}},
    }
    targets = Targets()
    seen_torch_threads: set[int] = set()
    ort_threads: set[tuple[int, int]] = set()
    for name, spec in specs.items():
        cfg = ExperimentConfig.model_validate(
            {"name": name, "tracking": {"enabled": False}, **spec}
        )
        ranker = fit(cfg, splits.train, splits.valid, progress=False).ranker
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            write_onnx(ranker, path)
            diff = parity(ranker, path, splits.valid)
            options = make_session(str(path)).get_session_options()  # as measure_latency's
            ort_threads.add((options.intra_op_num_threads, options.inter_op_num_threads))
            rows = measure_latency(
                one_thread_source(ranker, seen_torch_threads),
                str(path),
                splits.train.n_features,
                repeats=args.repeats,
                sample=splits.valid.features,
            )
        src = "lightgbm" if name == "lightgbm" else "pytorch"
        print(f"\n{name}: parity max abs diff {diff:.2e}")
        print(
            f"| rows | {src} p50 ms | {src} p99 ms | onnxruntime p50 ms | onnxruntime p99 ms |"
            " speed-up p50 |"
        )
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {int(r['rows'])} | {r['source_p50_ms']:.3f} | {r['source_p99_ms']:.3f} | "
                f"{r['onnx_p50_ms']:.3f} | {r['onnx_p99_ms']:.3f} | "
                f"{r['source_p50_ms'] / r['onnx_p50_ms']:.1f}x |"
            )
        targets.at_most(f"{name} parity max abs diff", diff, PARITY_TOLERANCE, fmt=".2e")
        for r in rows:
            targets.check(
                f"{name} onnxruntime no slower than {src} at {int(r['rows'])} rows",
                f"p50 {r['onnx_p50_ms']:.3f} ms vs {r['source_p50_ms']:.3f} ms",
                f"onnxruntime p50 <= {src} p50",
                r["onnx_p50_ms"] <= r["source_p50_ms"],
            )
    print()
    targets.check(
        "one thread per runtime",
        f"torch {sorted(seen_torch_threads)} during the timed calls, onnxruntime intra/inter "
        f"{sorted(ort_threads)}, lightgbm predict num_threads=1",
        "torch [1], onnxruntime [(1, 1)]",
        seen_torch_threads == {1} and ort_threads == {(1, 1)},
    )
    return targets.report()


if __name__ == "__main__":
    raise SystemExit(main())
