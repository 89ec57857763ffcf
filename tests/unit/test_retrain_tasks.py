"""The pure parts of the retrain pipeline: the stable hash split, labels as of a time,
run keys, and the gate decision."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from ltr.data.dataset import LetorDataset
from ltr.pipelines.config import Gates, HoldoutConfig
from ltr.pipelines.gates import GateDecision, judge_gates
from ltr.pipelines.holdout import SPLITS, latest_labels, split_of, split_queries
from ltr.pipelines.retrain import as_of_from, run_key

HOLDOUT = HoldoutConfig(valid_fraction=0.2, test_fraction=0.2, salt="unit")
GATES = Gates(metric="ndcg@10", min_margin=0.01, parity_tolerance=1e-5, latency_budget_ms=10.0)


def queries(n: int, docs: int = 3, prefix: str = "q") -> LetorDataset:
    qids = [f"{prefix}{i}" for i in range(n) for _ in range(docs)]
    return LetorDataset(
        features=np.arange(n * docs * 2, dtype=np.float32).reshape(n * docs, 2),
        labels=np.tile(np.arange(docs, dtype=np.float32), n),
        qids=np.array(qids, dtype=object),
        doc_ids=np.array([f"{q}-d{i % docs}" for i, q in enumerate(qids)], dtype=object),
    )


# ------------------------------------------------------------------------------ split
def test_split_of_a_query_is_a_salted_sha256_of_its_id_alone() -> None:
    def expected(query_id: str) -> str:  # independent: sha256 -> uniform in [0, 1)
        u = int(hashlib.sha256(f"unit\x1f{query_id}".encode()).hexdigest()[:16], 16) / 16**16
        return "test" if u < 0.2 else "valid" if u < 0.4 else "train"

    ids = [f"q{i}" for i in range(500)]
    first = [split_of(q, HOLDOUT) for q in ids]
    assert first == [expected(q) for q in ids]  # so no process or Python version changes it
    assert first == [split_of(q, HOLDOUT) for q in reversed(ids)][::-1]


def test_split_queries_puts_every_query_in_exactly_one_split_with_all_its_documents() -> None:
    ds = queries(300)
    parts = split_queries(ds, HOLDOUT)
    ids = {s: set(parts[s].query_ids) for s in SPLITS}
    assert ids["train"].isdisjoint(ids["valid"])
    assert ids["train"].isdisjoint(ids["test"])
    assert ids["valid"].isdisjoint(ids["test"])
    assert set().union(*ids.values()) == set(ds.query_ids)
    assert sum(parts[s].n_docs for s in SPLITS) == ds.n_docs
    for s in SPLITS:
        assert all(parts[s].group_sizes == 3)
        assert all(split_of(q, HOLDOUT) == s for q in parts[s].query_ids)


def test_split_fractions_are_close_to_the_configured_ones() -> None:
    names = [split_of(f"query-{i}", HOLDOUT) for i in range(20_000)]
    share = {s: names.count(s) / len(names) for s in SPLITS}
    assert share["test"] == pytest.approx(0.2, abs=0.015)
    assert share["valid"] == pytest.approx(0.2, abs=0.015)
    assert share["train"] == pytest.approx(0.6, abs=0.015)


def test_a_query_keeps_its_split_when_more_data_arrives() -> None:
    before = split_queries(queries(100), HOLDOUT)
    after = split_queries(LetorDataset.concat([queries(100), queries(400, prefix="new")]), HOLDOUT)
    for s in SPLITS:
        assert set(before[s].query_ids) <= set(after[s].query_ids)
        old = [q for q in after[s].query_ids if not q.startswith("new")]
        assert old == before[s].query_ids


def test_another_salt_gives_another_split() -> None:
    other = HoldoutConfig(valid_fraction=0.2, test_fraction=0.2, salt="other")
    ids = [f"q{i}" for i in range(200)]
    assert [split_of(q, HOLDOUT) for q in ids] != [split_of(q, other) for q in ids]


def test_split_rejects_fractions_that_leave_no_training_data() -> None:
    with pytest.raises(ValueError, match="below 1"):
        split_of("q1", HoldoutConfig(valid_fraction=0.5, test_fraction=0.5))


# ----------------------------------------------------------------------------- labels
def test_latest_labels_keeps_each_pairs_last_label_up_to_as_of_sorted() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    labels = pd.DataFrame(
        {
            "query_id": ["2", "1", "1", "1", "2"],
            "doc_id": ["a", "b", "a", "a", "a"],
            "label": [1.0, 0.0, 1.0, 2.0, 3.0],
            "event_timestamp": [t0, t0, t0, t0 + timedelta(days=1), t0 + timedelta(days=3)],
        }
    )
    got = latest_labels(labels, t0 + timedelta(days=1))
    assert got[["query_id", "doc_id", "label"]].values.tolist() == [
        ["1", "a", 2.0],  # relabelled on day 1: the later label wins
        ["1", "b", 0.0],
        ["2", "a", 1.0],  # the day-3 label is after as_of
    ]
    assert str(got["event_timestamp"].dt.tz) == "UTC"


def test_latest_labels_takes_naive_times_as_utc_and_names_missing_columns() -> None:
    labels = pd.DataFrame(
        {"query_id": [1], "doc_id": [7], "label": [1.0], "event_timestamp": [datetime(2026, 1, 2)]}
    )
    assert latest_labels(labels, datetime(2026, 1, 1, 23, tzinfo=UTC)).empty
    got = latest_labels(labels, datetime(2026, 1, 2))
    assert got["query_id"].tolist() == ["1"] and got["doc_id"].tolist() == ["7"]
    with pytest.raises(ValueError, match="label"):
        latest_labels(labels.drop(columns=["label"]), datetime(2026, 1, 2))


# ---------------------------------------------------------------------------- run key
def test_as_of_is_the_first_known_time_in_utc_and_names_the_run() -> None:
    end = datetime(2026, 1, 2, 3, 0, tzinfo=timezone(timedelta(hours=1)))
    after = datetime(2026, 1, 5, tzinfo=UTC)
    assert as_of_from(end, None, after) == datetime(2026, 1, 2, 2, 0, tzinfo=UTC)
    assert as_of_from(None, None, after) == after
    assert as_of_from(None, datetime(2026, 1, 2, 2, 0), after).tzinfo == UTC
    assert run_key(as_of_from(end)) == "20260102T020000Z"
    with pytest.raises(ValueError):
        as_of_from(None, None)


# ------------------------------------------------------------------------------ gates
def judge(**kw: float | None) -> GateDecision:
    values: dict[str, float | None] = {
        "challenger_value": 0.70,
        "champion_value": 0.65,
        "parity_max_abs_diff": 1e-7,
        "latency_p99_ms": 2.0,
    }
    values.update(kw)
    return judge_gates(GATES, **values)


def test_a_challenger_that_passes_every_gate_is_accepted() -> None:
    decision = judge()
    assert decision.accepted
    assert decision.reason.startswith("all gates passed")
    assert {c.gate: c.passed for c in decision.checks} == {
        "margin": True,
        "parity": True,
        "latency": True,
    }


def test_without_a_champion_the_margin_gate_passes() -> None:
    decision = judge(champion_value=None, challenger_value=0.1)
    assert decision.accepted
    assert "no champion" in decision.to_dict()["checks"]["margin"]["detail"]


@pytest.mark.parametrize(
    ("challenger", "champion", "accepted"),
    [(0.66, 0.65, True), (0.655, 0.65, False), (0.65, 0.65, False), (0.60, 0.65, False)],
)
def test_the_margin_over_the_champion_must_reach_min_margin(
    challenger: float, champion: float, accepted: bool
) -> None:
    decision = judge(challenger_value=challenger, champion_value=champion)
    assert decision.accepted is accepted
    if not accepted:
        assert decision.reason.startswith("margin gate failed")
        assert "parity" not in decision.reason and "latency" not in decision.reason


def test_a_zero_min_margin_accepts_a_tie_with_the_champion() -> None:
    gates = GATES.model_copy(update={"min_margin": 0.0})
    decision = judge_gates(
        gates,
        challenger_value=0.65,
        champion_value=0.65,
        parity_max_abs_diff=0.0,
        latency_p99_ms=1.0,
    )
    assert decision.accepted


def test_parity_over_the_tolerance_or_not_measured_rejects() -> None:
    over = judge(parity_max_abs_diff=2e-5)
    assert not over.accepted
    assert over.reason.startswith("parity gate failed") and "2.000e-05" in over.reason
    assert not judge(parity_max_abs_diff=None).accepted
    assert judge(parity_max_abs_diff=1e-5).accepted  # at the tolerance is within it


def test_latency_over_the_budget_or_not_measured_rejects() -> None:
    slow = judge(latency_p99_ms=10.5)
    assert not slow.accepted and slow.reason.startswith("latency gate failed")
    assert "10.500 ms" in slow.reason
    assert not judge(latency_p99_ms=None).accepted
    assert judge(latency_p99_ms=10.0).accepted


def test_every_failed_gate_is_named_in_the_reason() -> None:
    decision = judge(challenger_value=0.5, parity_max_abs_diff=1.0, latency_p99_ms=99.0)
    assert not decision.accepted
    for gate in ("margin", "parity", "latency"):
        assert f"{gate} gate failed" in decision.reason
    assert not any(c.passed for c in decision.checks)


def test_a_challenger_metric_that_is_not_a_number_is_rejected() -> None:
    decision = judge(challenger_value=math.nan, champion_value=None)
    assert not decision.accepted and "not a number" in decision.reason
