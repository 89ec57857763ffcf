"""Routing is identical across processes: separate interpreters with different hash seeds.

These tests start fresh Python processes (no network, no service); a process with another
``PYTHONHASHSEED`` would route differently if anything used Python's ``hash()``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from serving.routing import Router, RoutingConfig, stable_bucket, team_draft_interleave

ROOT = Path(__file__).resolve().parents[2]
USERS = [f"user-{i}" for i in range(1000)]
SALT = "exp-2026-11"
CONFIG = {
    "version": 3,
    "strategy": "ab",
    "production": "v12",
    "variants": [
        {"name": "control", "version": "v12", "weight": 90},
        {"name": "treatment", "version": "v13", "weight": 10},
    ],
    "shadow": {"version": "v14", "sample_percent": 30},
    "salt": SALT,
}

CHILD = """
import dataclasses, json, sys
from serving.routing import Router, RoutingConfig, stable_bucket, team_draft_interleave
users, salt, config = json.loads(sys.stdin.read())
router = Router(RoutingConfig.model_validate(config))
a = [f"d{i}" for i in range(12)]
b = list(reversed(a))
print(json.dumps({
    "buckets": [stable_bucket(u, salt) for u in users],
    "decisions": [dataclasses.asdict(router.decide(u, "req")) for u in users],
    "interleave": [team_draft_interleave(a, b, rng_seed=f"r{i}") for i in range(20)],
    "python_hash": [hash(u) for u in users[:20]],
}))
"""


def run_child(hash_seed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps([USERS, SALT, CONFIG]),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_buckets_decisions_and_interleavings_are_identical_in_two_processes_with_other_hash_seeds():
    first, second = run_child("1"), run_child("2")
    # the two interpreters really do hash strings differently ...
    assert first["python_hash"] != second["python_hash"]
    # ... and still route every user the same way, as this process does
    assert first["buckets"] == second["buckets"] == [stable_bucket(u, SALT) for u in USERS]
    independent = [
        int.from_bytes(hashlib.sha256(f"{SALT}:{u}".encode()).digest()[:8], "big") % 10_000
        for u in USERS
    ]
    assert first["buckets"] == independent
    router = Router(RoutingConfig.model_validate(CONFIG))
    here = json.loads(json.dumps([dataclasses.asdict(router.decide(u, "req")) for u in USERS]))
    assert {d["variant"] for d in here} == {"control", "treatment"}
    assert {d["shadow_version"] for d in here} == {None, "v14"}
    assert first["decisions"] == second["decisions"] == here
    a = [f"d{i}" for i in range(12)]
    b = list(reversed(a))
    interleaved_here = [
        json.loads(json.dumps(team_draft_interleave(a, b, rng_seed=f"r{i}"))) for i in range(20)
    ]
    assert first["interleave"] == second["interleave"] == interleaved_here


def test_the_serving_modules_import_without_heavy_libraries():
    code = (
        "import json, sys\n"
        "import serving.routing, serving.cache, serving.events, serving.errors,"
        " serving.redis_guard, serving.interleaving\n"
        "heavy = ('torch', 'feast', 'mlflow', 'lightgbm', 'great_expectations', 'airflow')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == []
