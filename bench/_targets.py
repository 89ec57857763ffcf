"""Targets of a benchmark: one PASS/FAIL line per target, exit status 1 when any is missed.

Every script in ``bench/`` states its targets the same way::

    targets = Targets()
    targets.at_least("feature read p50 speed-up vs Feast SDK", speedup, 10.0, "x", ".1f")
    targets.check("values identical to Feast's", "all 200 rows", "identical", same)
    return targets.report()  # prints the tally; 0 when every target was met, else 1

A verdict is computed from the measured number, never typed in: a NaN (nothing measured)
fails every bound. Imports nothing heavy, so a test can load it on its own.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import IO, Any

__all__ = ["Targets", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    """One target: what was measured, the bound it had to meet, and whether it did."""

    name: str
    measured: str
    target: str
    ok: bool

    def line(self) -> str:
        verdict = "PASS" if self.ok else "FAIL"
        return f"[{verdict}] {self.name}: {self.measured} (target {self.target})"


class Targets:
    """Collects the verdicts of one benchmark run and turns them into its exit status."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self._out = out
        self.verdicts: list[Verdict] = []

    def check(self, name: str, measured: str, target: str, ok: bool) -> bool:
        """Print and remember one verdict; returns ``ok``."""
        verdict = Verdict(name, measured, target, bool(ok))
        self.verdicts.append(verdict)
        print(verdict.line(), file=self._out or sys.stdout, flush=True)
        return verdict.ok

    def at_least(
        self, name: str, value: float, bound: float, unit: str = "", fmt: str = ".2f"
    ) -> bool:
        """``value >= bound`` (NaN fails)."""
        ok = not math.isnan(value) and value >= bound
        return self.check(name, _fmt(value, unit, fmt), f">= {_fmt(bound, unit, fmt)}", ok)

    def at_most(
        self, name: str, value: float, bound: float, unit: str = "", fmt: str = ".2f"
    ) -> bool:
        """``value <= bound`` (NaN fails)."""
        ok = not math.isnan(value) and value <= bound
        return self.check(name, _fmt(value, unit, fmt), f"<= {_fmt(bound, unit, fmt)}", ok)

    @property
    def missed(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.ok]

    @property
    def exit_code(self) -> int:
        """0 when every target checked so far was met, else 1."""
        return 1 if self.missed else 0

    def report(self) -> int:
        """Print the tally (naming the missed targets) and return :attr:`exit_code`."""
        met = len(self.verdicts) - len(self.missed)
        line = f"targets: {met} of {len(self.verdicts)} met"
        if self.missed:
            line += "; missed: " + "; ".join(v.name for v in self.missed)
        print(line, file=self._out or sys.stdout, flush=True)
        return self.exit_code

    def as_dicts(self) -> list[dict[str, Any]]:
        """The verdicts as plain dicts (for a JSON result file)."""
        return [asdict(v) for v in self.verdicts]


def _fmt(value: float, unit: str, fmt: str) -> str:
    text = format(value, fmt)
    if not unit:
        return text
    return f"{text}{unit}" if unit in ("x", "%") else f"{text} {unit}"
