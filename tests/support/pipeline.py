"""Set-up of the DAG tests: an LTR_HOME whose online store is a Feast project of its own in
the shared Redis, tiny training configs, pipeline config files, raw files landed where the
feature pipeline looks for them, and ``dag.test()`` with retries off."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ltr.data.dataset import LetorDataset
from support.env import isolated_home
from support.redis import delete_project_keys, redis_client, unique_project

MLP_TINY = {
    "name": "mlp-tiny",
    "seed": 7,
    "model": {"type": "mlp", "params": {"hidden": [16], "dropout": 0.0}},
    "loss": {"name": "lambdarank"},
    "optimizer": {"name": "adam", "lr": 0.01},
    "training": {"epochs": 3, "batch_size": 16, "patience": 3, "device": "cpu", "threads": 1},
}
LGBM_TINY = {
    "name": "lgbm-tiny",
    "seed": 7,
    "model": {
        "type": "lightgbm",
        "params": {
            "n_estimators": 30,
            "learning_rate": 0.1,
            "num_leaves": 7,
            "min_child_samples": 5,
            "early_stopping_rounds": 10,
        },
    },
}
#: The validation policy of MQ2008 files: labels 0-2, 46 features in [0, 1].
MQ2008_VALIDATION = {
    "label_set": [0, 1, 2],
    "feature_min": 0.0,
    "feature_max": 1.0,
    "n_features": 46,
}


@dataclass
class PipelineHome:
    home: Path
    project: str  # the Feast project: every online key ends with it
    client: Any  # the shared Redis, db of the test
    mp: pytest.MonkeyPatch  # what set the environment (more may be set with it)


@contextlib.contextmanager
def pipeline_home(
    home: Path,
    *,
    redis_url: str,
    prefix: str,
    mp: pytest.MonkeyPatch | None = None,
    socket_timeout: float = 10.0,
    **env: str,
) -> Iterator[PipelineHome]:
    """An isolated LTR_HOME (``support.env.isolated_home``; ``env`` adds variables) with the
    online store in Redis at ``redis_url`` under a Feast project of its own (``prefix_...``),
    whose keys are deleted afterwards. Skips when Redis does not answer."""
    client = redis_client(redis_url, socket_timeout=socket_timeout)
    project = unique_project(prefix)
    try:
        with isolated_home(
            home,
            mp,
            unset=("LTR_FEAST_REPO",),
            LTR_REDIS_URL=redis_url,
            LTR_FEAST_PROJECT=project,
            **env,
        ) as patch:
            yield PipelineHome(home, project, client, patch)
    finally:
        delete_project_keys(client, project)


def training_sections(configs_dir: Path, salt: str, **gates: float) -> dict[str, Any]:
    """What the retrain DAG reads of a pipeline config: the tiny MLP and LightGBM as its
    candidates (their YAML written into ``configs_dir`` unless there already), a 60/20/20
    holdout split salted by ``salt``, no document-only features, and gates on NDCG@10 with a
    generous latency budget (two shared cores must not make a test flaky) and ``gates``."""
    configs_dir.mkdir(parents=True, exist_ok=True)
    configs = []
    for spec in (MLP_TINY, LGBM_TINY):
        path = configs_dir / f"{spec['name']}.yaml"
        if not path.exists():
            path.write_text(yaml.safe_dump(spec))
        configs.append(str(path))
    return {
        "doc_feature_indices": [],
        "training": {
            "configs": configs,
            "holdout": {"valid_fraction": 0.2, "test_fraction": 0.2, "salt": salt},
        },
        "gates": {"metric": "ndcg@10", "latency_budget_ms": 200.0, **gates},
    }


def write_pipeline_config(path: Path, **sections: Any) -> Path:
    """A pipeline config file (what LTR_PIPELINE_CONFIG points at) of these sections."""
    path.write_text(yaml.safe_dump(sections))
    return path


def land_raw(home: Path, ds: LetorDataset, day: str, name: str = "s1.txt") -> Path:
    """Write ``ds`` as the raw LETOR file ``<home>/raw/<day>/<name>``."""
    from ltr.data.letor import write_letor

    path = home / "raw" / day / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_letor(ds, path)
    return path


def run_without_retries(dag: Any, **kwargs: Any) -> Any:
    """``dag.test(**kwargs)`` with every task's retries off (a broken task fails the test at
    once, not after the retry delays); the DAG run."""
    retries = {t.task_id: t.retries for t in dag.tasks}
    try:
        for t in dag.tasks:
            t.retries = 0
        return dag.test(**kwargs)
    finally:
        for t in dag.tasks:
            t.retries = retries[t.task_id]
