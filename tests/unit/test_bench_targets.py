"""bench/_targets.py: every benchmark's PASS/FAIL lines and the exit status they lead to."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HELPER = REPO_ROOT / "bench" / "_targets.py"


@pytest.fixture(scope="module")
def targets_module() -> ModuleType:
    """The helper loaded from its file (``bench`` is not an installed package)."""
    spec = importlib.util.spec_from_file_location("bench_targets_under_test", HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_met_targets_give_exit_code_zero(targets_module: ModuleType) -> None:
    out = io.StringIO()
    targets = targets_module.Targets(out)
    targets.at_least("speed-up", 12.0, 10.0, "x", ".1f")
    targets.at_most("p99", 4.0, 10.0, "ms")
    targets.check("values identical", "200 of 200", "all", True)
    assert targets.report() == 0
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "[PASS] speed-up: 12.0x (target >= 10.0x)",
        "[PASS] p99: 4.00 ms (target <= 10.00 ms)",
        "[PASS] values identical: 200 of 200 (target all)",
    ]
    assert lines[3] == "targets: 3 of 3 met"


def test_one_missed_target_makes_the_exit_code_non_zero(targets_module: ModuleType) -> None:
    out = io.StringIO()
    targets = targets_module.Targets(out)
    targets.at_least("rows/s vs Feast", 2.7, 3.0, "x", ".1f")
    targets.at_most("p50", 1.0, 3.0, "ms")
    assert targets.report() == 1
    assert "[FAIL] rows/s vs Feast: 2.7x (target >= 3.0x)" in out.getvalue()
    assert out.getvalue().splitlines()[-1] == "targets: 1 of 2 met; missed: rows/s vs Feast"
    assert [v.name for v in targets.missed] == ["rows/s vs Feast"]


def test_bounds_are_inclusive(targets_module: ModuleType) -> None:
    targets = targets_module.Targets(io.StringIO())
    assert targets.at_least("equal lower bound", 3.0, 3.0)
    assert targets.at_most("equal upper bound", 0, 0, fmt="d")
    assert targets.exit_code == 0


def test_nothing_measured_fails_either_bound(targets_module: ModuleType) -> None:
    targets = targets_module.Targets(io.StringIO())
    assert not targets.at_least("throughput", float("nan"), 500.0)
    assert not targets.at_most("latency", float("nan"), 10.0)
    assert targets.exit_code == 1


def test_a_missed_target_makes_the_process_exit_non_zero() -> None:
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); from _targets import Targets\n"
        "t = Targets(); t.at_least('ratio', float(sys.argv[2]), 3.0, 'x')\n"
        "raise SystemExit(t.report())\n"
    )
    folder = str(HELPER.parent)
    missed = subprocess.run([sys.executable, "-c", script, folder, "2.5"], capture_output=True)
    met = subprocess.run([sys.executable, "-c", script, folder, "3.5"], capture_output=True)
    assert missed.returncode == 1 and b"[FAIL] ratio" in missed.stdout
    assert met.returncode == 0 and b"[PASS] ratio" in met.stdout
