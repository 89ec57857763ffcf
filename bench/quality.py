"""MQ2008 5-fold cross-validation of every neural loss and the LightGBM baseline, one run.

    python -m bench.quality [--datasets DIR] [--folds 1,2,3,4,5] [--models all|name,...]

Each model runs its folds in a fresh child process so that its peak resident memory can be
reported alone. Prints NDCG@1/5/10, MAP, MRR (mean over the test folds, DESIGN.md
conventions), mean fit seconds per fold and peak RSS, then checks the targets of DESIGN.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._targets import Targets

METRICS = ("ndcg@1", "ndcg@5", "ndcg@10", "map", "mrr")
MLP = {"type": "mlp", "params": {"hidden": [128, 64], "dropout": 0.1}}
TRAIN = {"epochs": 60, "batch_size": 16, "patience": 15, "metric": "ndcg@10", "threads": 2}

MODELS: dict[str, dict[str, Any]] = {
    "lightgbm": {"model": {"type": "lightgbm", "params": {"n_estimators": 500}}},
    **{
        f"mlp-{loss}": {"model": MLP, "loss": {"name": loss}, "training": TRAIN}
        for loss in ("ranknet", "lambdarank", "listnet", "listmle", "approxndcg")
    },
    "attention-listnet": {
        "model": {
            "type": "attention",
            "params": {"d_model": 32, "n_heads": 4, "n_layers": 1, "dim_feedforward": 64},
        },
        "loss": {"name": "listnet"},
        "training": {**TRAIN, "epochs": 40, "patience": 10},
    },
}


def default_datasets_dir() -> Path:
    env = os.environ.get("LTR_DATASETS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def run_one(name: str, root: Path, folds: list[int]) -> dict[str, Any]:
    """Child process body: every fold of one model; prints one JSON line."""
    import resource

    import numpy as np

    from ltr.data.folds import load_fold
    from ltr.training.config import ExperimentConfig
    from ltr.training.runner import Splits, run_experiment

    spec = MODELS[name]
    per_fold = []
    for fold in folds:
        train, valid, test = load_fold(root, fold)
        cfg = ExperimentConfig.model_validate(
            {"name": f"bench-{name}-fold{fold}", "seed": 42, "tracking": {"enabled": False}, **spec}
        )
        summary = run_experiment(cfg, splits=Splits(train, valid, test), progress=False)
        per_fold.append(
            {"fold": fold, "fit_seconds": summary["fit_seconds"], **summary["metrics"]["test"]}
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    means = {m: float(np.mean([f[m] for f in per_fold])) for m in METRICS}
    return {
        "model": name,
        "folds": per_fold,
        "mean": means,
        "fit_seconds_mean": float(np.mean([f["fit_seconds"] for f in per_fold])),
        "fit_seconds_max": float(np.max([f["fit_seconds"] for f in per_fold])),
        "peak_rss_mb": peak_mb,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", type=Path, default=default_datasets_dir())
    ap.add_argument("--folds", default="1,2,3,4,5")
    ap.add_argument("--models", default="all", help=f"comma-separated subset of {list(MODELS)}")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    folds = [int(f) for f in args.folds.split(",")]
    root = args.datasets / "mq2008"
    if args.child:
        print(json.dumps(run_one(args.child, root, folds)))
        return 0
    if not (root / "S1.txt").is_file():
        print(f"MQ2008 not found under {root}; set LTR_DATASETS_DIR or --datasets", file=sys.stderr)
        return 2
    names = list(MODELS) if args.models == "all" else args.models.split(",")
    unknown = set(names) - set(MODELS)
    if unknown:
        print(f"unknown models {sorted(unknown)}; valid: {list(MODELS)}", file=sys.stderr)
        return 2
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    results = []
    t0 = time.perf_counter()
    for name in names:
        cmd = [
            sys.executable,
            "-m",
            "bench.quality",
            "--child",
            name,
            "--folds",
            args.folds,
            "--datasets",
            str(args.datasets),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        res = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(res)
        print(
            f"  {name:<20} ndcg@10 {res['mean']['ndcg@10']:.4f}  "
            f"{res['fit_seconds_mean']:.1f} s/fold",
            file=sys.stderr,
            flush=True,
        )
    total = time.perf_counter() - t0

    print(
        f"\nMQ2008 {len(folds)}-fold CV (test folds), {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print("| model | NDCG@1 | NDCG@5 | NDCG@10 | MAP | MRR | fit s/fold (max) | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        m = r["mean"]
        print(
            f"| {r['model']} | {m['ndcg@1']:.4f} | {m['ndcg@5']:.4f} | {m['ndcg@10']:.4f} | "
            f"{m['map']:.4f} | {m['mrr']:.4f} | {r['fit_seconds_mean']:.1f} "
            f"({r['fit_seconds_max']:.1f}) | {r['peak_rss_mb']:.0f} |"
        )
    print(f"total wall time {total:.0f} s")

    by = {r["model"]: r for r in results}
    neural = [r for r in results if r["model"] != "lightgbm"]
    targets = Targets()
    if "lightgbm" in by and neural:
        best = max(neural, key=lambda r: r["mean"]["ndcg@10"])
        targets.at_least(
            f"best neural ({best['model']}) NDCG@10 vs LightGBM in this run",
            best["mean"]["ndcg@10"],
            by["lightgbm"]["mean"]["ndcg@10"],
            fmt=".4f",
        )
    for r in neural:
        if r["model"].startswith("mlp-"):
            targets.at_least(f"{r['model']} NDCG@10", r["mean"]["ndcg@10"], 0.68, fmt=".4f")
    for r in results:
        targets.at_most(
            f"{r['model']} max fit time per fold", r["fit_seconds_max"], 60.0, "s", ".1f"
        )
    code = targets.report()
    if args.json:
        from ltr.utils.io import write_json_atomic

        write_json_atomic(args.json, {"results": results, "checks": targets.as_dicts()})
    return code


if __name__ == "__main__":
    raise SystemExit(main())
