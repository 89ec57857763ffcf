"""Latency of the source model (PyTorch or LightGBM) against ONNX Runtime, per list size."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

DEFAULT_SIZES = (1, 10, 100, 1000)


def make_session(model_path: str, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session configured like the server's (one intra-op thread, no spin)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])


def _time(fn: Callable[[], Any], repeats: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1000.0


def measure_latency(
    source_fn: Callable[[np.ndarray], Any],
    onnx_path: str,
    n_features: int,
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    repeats: int = 200,
    warmup: int = 20,
    seed: int = 0,
    sample: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """p50/p99 milliseconds of ``source_fn`` and of ONNX Runtime on the same inputs.

    Inputs are rows of ``sample`` (cycled) when given, else standard-normal features.
    """
    import torch

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sess = make_session(onnx_path)
        rng = np.random.default_rng(seed)
        rows = []
        for n in sizes:
            if sample is not None and len(sample):
                x = np.ascontiguousarray(sample[np.arange(n) % len(sample)], dtype=np.float32)
            else:
                x = rng.standard_normal((n, n_features)).astype(np.float32)
            reps = max(20, repeats if n <= 100 else repeats // 4)
            src = _time(functools.partial(source_fn, x), reps, warmup)
            onx = _time(functools.partial(sess.run, None, {"features": x}), reps, warmup)
            rows.append(
                {
                    "rows": float(n),
                    "source_p50_ms": float(np.percentile(src, 50)),
                    "source_p99_ms": float(np.percentile(src, 99)),
                    "onnx_p50_ms": float(np.percentile(onx, 50)),
                    "onnx_p99_ms": float(np.percentile(onx, 99)),
                }
            )
        return rows
    finally:
        torch.set_num_threads(torch_threads)
