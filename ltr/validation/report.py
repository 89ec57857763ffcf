"""The validation report: one plain-JSON entry per expectation, and its one-line summary."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_EXAMPLES = 5


@dataclass
class ValidationReport:
    """Outcome of one validation: one entry per expectation in ``results``."""

    success: bool
    results: list[dict[str, Any]]
    statistics: dict[str, Any]
    report_path: Path | None = None
    gx_result_path: Path | None = None
    name: str = "raw"

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r["success"]]

    def summary(self) -> str:
        """One line per failed expectation, naming the column and what failed."""
        if self.success:
            n = len(self.results)
            return f"{self.name}: all {n} expectations passed"
        return "\n".join(describe(r) for r in self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "success": self.success,
            "report_path": str(self.report_path) if self.report_path else None,
            "gx_result_path": str(self.gx_result_path) if self.gx_result_path else None,
            "statistics": self.statistics,
            "results": self.results,
        }


def describe(entry: dict[str, Any]) -> str:
    """``<where>: expected <what>; <what was found>`` for one failed expectation."""
    where = entry.get("where") or entry.get("column") or entry["batch"]
    head = f"{where}: expected {entry.get('expected') or entry['expectation']}"
    if entry.get("exception"):
        return f"{head}; could not be checked ({entry['expectation']}: {entry['exception']})"
    if entry["batch"] == "source" and entry.get("examples"):
        return f"{head}; found {entry['examples'][0]}"
    if "unexpected_count" in entry:
        noun = "queries" if entry["batch"] == "queries" else "rows"
        text = f"{head}; {entry['unexpected_count']} of {entry['element_count']} {noun} unexpected"
        examples = [_example_text(x, entry.get("column")) for x in entry.get("examples", [])]
        shown = list(dict.fromkeys(examples))[:3]
        return text + (f" (e.g. {'; '.join(shown)})" if shown else "")
    observed = entry.get("observed_value")
    if isinstance(observed, list) and all(isinstance(c, str) for c in observed):
        observed = columns_text(observed)
    return f"{head}; found {observed}"


def _example_text(example: Any, column: str | None) -> str:
    if not isinstance(example, dict):
        return _value_text(example)
    where = " ".join(f"{k}={_value_text(v)}" for k, v in example.items() if k != column)
    if column is not None and column in example:
        return (
            f"{_value_text(example[column])} at {where}" if where else _value_text(example[column])
        )
    return where


def _value_text(value: Any) -> str:
    if value is None:
        return "missing"
    return num_text(value) if isinstance(value, float) else str(value)


def num_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"values in [{num_text(lo)}, {num_text(hi)}]"
    return f"values >= {num_text(lo)}" if lo is not None else f"values <= {num_text(hi or 0.0)}"


def columns_text(columns: list[str]) -> str:
    """``[qid, doc_id, label, f1..f46]``: feature columns f1..fN collapsed when consecutive."""
    feats = [c for c in columns if re.fullmatch(r"f\d+", c)]
    rest = [c for c in columns if c not in feats]
    if (
        feats
        and feats == [f"f{i + 1}" for i in range(len(feats))]
        and columns[-len(feats) :] == feats
    ):
        tail = [feats[0]] if len(feats) == 1 else [f"f1..f{len(feats)}"]
        return "[" + ", ".join(rest + tail) + "]"
    return "[" + ", ".join(columns) + "]"


def plain(value: Any) -> Any:
    """JSON-friendly copy: NumPy scalars as Python numbers, NaN / inf as None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
