"""PyTorch vs ONNX Runtime latency at 1, 10, 100 and 1000 rows, with the export parity.

    python -m bench.export_latency [--datasets DIR]

Trains an MLP (LambdaRank) and the LightGBM baseline on MQ2008 fold 1 when the dataset is
present (else on the project's synthetic data), exports both through the same code as
`ltr export`, and prints source-model and ONNX Runtime p50/p99 side by side (one thread each).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

from bench.quality import default_datasets_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", type=Path, default=default_datasets_dir())
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from ltr.export.latency import measure_latency
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
    worst = 0.0
    for name, spec in specs.items():
        cfg = ExperimentConfig.model_validate(
            {"name": name, "tracking": {"enabled": False}, **spec}
        )
        ranker = fit(cfg, splits.train, splits.valid, progress=False).ranker
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            write_onnx(ranker, path)
            diff = parity(ranker, path, splits.valid)
            worst = max(worst, diff)
            rows = measure_latency(
                ranker.score_features,
                str(path),
                splits.train.n_features,
                repeats=args.repeats,
                sample=splits.valid.features,
            )
        src = "lightgbm" if name == "lightgbm" else "pytorch"
        print(f"\n{name}: parity max abs diff {diff:.2e} (target <= 1e-5)")
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
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
