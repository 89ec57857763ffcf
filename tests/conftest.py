"""Shared fixtures: an isolated ``LTR_HOME`` and a small learnable ranking dataset.

The dataset is built here from NumPy with a fixed seed (not with the library's synthetic
generator), so tests of the training code do not depend on the code that generates data.
Helpers shared by several suites are in ``tests/support`` (``pythonpath`` puts ``tests`` on
``sys.path``); pytest rewrites their asserts as it does the tests'.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# MLflow must not phone home from tests; set before anything imports mlflow.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

import numpy as np
import pytest
from _pytest.reports import CollectReport, TestReport

pytest.register_assert_rewrite("support")

from support.env import isolated_home  # noqa: E402

from ltr.data.dataset import LetorDataset  # noqa: E402

# ---------------------------------------------------------------- CI: no silent skips
#: On a laptop a missing service (Redis, PostgreSQL, redis-server) or dataset skips the tests
#: that need it, with the reason. Under CI (``LTR_CI=1``, set by ``.ci/run``, or ``CI=true``)
#: the same skip is a failure with that reason: only tests marked ``device`` (CUDA-only, or
#: CPU-only because CUDA is present) may skip there.


def under_ci() -> bool:
    return os.environ.get("LTR_CI") == "1" or os.environ.get("CI", "").lower() in ("1", "true")


def _skip_reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_under_ci(report: TestReport | CollectReport, where: str) -> None:
    reason = _skip_reason(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"{where}: skipped under CI, which counts as a failure: {reason} "
        "(start the service or provide the dataset; outside CI this is a skip)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report: TestReport = outcome.get_result()
    if (
        report.skipped
        and under_ci()
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("device") is None
    ):
        _fail_under_ci(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    outcome = yield
    report: CollectReport = outcome.get_result()
    if report.skipped and under_ci():
        _fail_under_ci(report, collector.nodeid)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    skipped = terminalreporter.stats.get("skipped", [])
    device = [r for r in skipped if "device" in getattr(r, "keywords", {})]
    terminalreporter.write_line(
        f"ltr-skips: {len(skipped)} skipped ({len(device)} device-specific, "
        f"{len(skipped) - len(device)} other){' [CI]' if under_ci() else ''}"
    )


N_FEATURES = 10
SPLIT_QUERIES = {"train": 120, "valid": 40, "test": 40}


@dataclass(frozen=True)
class Splits3:
    train: LetorDataset
    valid: LetorDataset
    test: LetorDataset


def make_dataset(
    n_queries: int,
    *,
    seed: int,
    n_features: int = N_FEATURES,
    min_docs: int = 5,
    max_docs: int = 40,
    qid_prefix: str = "q",
    weights: np.ndarray | None = None,
    noise: float = 0.3,
) -> LetorDataset:
    """Queries of 5-40 documents; labels 0..3 are quantiles of a noisy linear latent.

    Per query, the top 10% of documents by latent get 3, the next 15% get 2, the next 20%
    get 1 and the rest 0, so every query has at least one relevant document.
    """
    rng = np.random.default_rng(seed)
    w = weights if weights is not None else np.linspace(1.0, -0.5, n_features)
    feats, labels, qids, docs = [], [], [], []
    for q in range(n_queries):
        n = int(rng.integers(min_docs, max_docs + 1))
        x = rng.standard_normal((n, n_features)) + rng.normal(0.0, 0.5, size=n_features)
        latent = x @ w + noise * rng.standard_normal(n)
        pct = np.argsort(np.argsort(-latent)) / n  # 0 = best document of the query
        y = np.select([pct < 0.10, pct < 0.25, pct < 0.45], [3.0, 2.0, 1.0], 0.0)
        y[np.argmax(latent)] = 3.0
        feats.append(x)
        labels.append(y)
        qids += [f"{qid_prefix}{q}"] * n
        docs += [f"{qid_prefix}{q}-d{i}" for i in range(n)]
    return LetorDataset(
        features=np.concatenate(feats).astype(np.float32),
        labels=np.concatenate(labels).astype(np.float32),
        qids=np.array(qids, dtype=object),
        doc_ids=np.array(docs, dtype=object),
    )


@pytest.fixture(scope="session")
def splits() -> Splits3:
    """120 / 40 / 40 queries, 10 features, same weights, disjoint query ids."""
    w = np.linspace(1.0, -0.5, N_FEATURES)
    return Splits3(
        train=make_dataset(SPLIT_QUERIES["train"], seed=1, qid_prefix="tr", weights=w),
        valid=make_dataset(SPLIT_QUERIES["valid"], seed=2, qid_prefix="va", weights=w),
        test=make_dataset(SPLIT_QUERIES["test"], seed=3, qid_prefix="te", weights=w),
    )


@pytest.fixture
def ltr_home(tmp_path, monkeypatch):
    """A fresh ``LTR_HOME`` (runs, models, MLflow store) with the settings cache cleared."""
    home = tmp_path / "ltr_home"
    with isolated_home(home, monkeypatch):
        yield home
