"""The online loop end to end: simulated users -> rank service -> Redis Streams -> drain ->
Parquet -> click log -> online metrics, checked against figures computed independently.

The service runs under uvicorn with two real exported models (v1, v2: linear scorers with
known weights, request features). The simulated queries' graded labels follow v1's scores,
so v1 is the better ranker by construction and wins the interleaving.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from support.online import graded_by_v1
from support.serving import REDIS_URL, LiveServer, Store, make_settings

from ltr.online.clickmodel import ClickModel
from ltr.online.drain import Drainer, read_events
from ltr.online.metrics import click_log, interleaving_outcomes, online_metrics, per_user
from ltr.online.simulate import SimulationError, TrafficSimulator

pytestmark = pytest.mark.integration


@pytest.fixture
def events_redis():
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} does not answer: {exc}")
    prefix = f"test:{uuid.uuid4().hex[:12]}:events"
    yield client, prefix
    client.delete(f"{prefix}:impressions", f"{prefix}:clicks")
    client.close()


def test_simulated_traffic_reaches_parquet_and_its_metrics_match_an_independent_count(
    store: Store, tmp_path: Path, events_redis
):
    client, prefix = events_redis
    store.route(
        strategy="interleave", production="v1", interleave={"a": "v2", "b": "v1", "percent": 50}
    )
    settings = make_settings(
        store,
        events_enabled=True,
        events_redis_url=REDIS_URL,
        events_stream_prefix=prefix,
        cache_enabled=False,
    )
    data = graded_by_v1()
    with LiveServer(settings) as server:
        sim = TrafficSimulator(
            server.url,
            data,
            click_model=ClickModel("pbm", eta=1.0, max_grade=2),
            seed=11,
            n_users=120,
            send_features=True,
            concurrency=3,
        )
        report = sim.run(400, max_seconds=300)
    assert report.sent == 400 and report.answered == 400, report.errors
    assert report.errors == {}
    assert set(report.variants) == {"production", "interleave"}

    streams = {"impressions": f"{prefix}:impressions", "clicks": f"{prefix}:clicks"}
    drained = Drainer(client, tmp_path / "events", streams=streams).drain()
    assert drained.streams["impressions"].written == 400
    assert drained.streams["clicks"].written == report.feedback_sent

    imp = read_events(tmp_path / "events", "impressions").to_pandas()
    clk = read_events(tmp_path / "events", "clicks").to_pandas()
    # what analysis needs is on every impression
    assert imp["request_id"].is_unique and imp["error"].isna().all()
    assert imp["user_id"].str.startswith("sim-user-").all()
    assert (imp["positions"].map(list) == imp["doc_ids"].map(lambda d: list(range(len(d))))).all()
    inter = imp[imp["variant"] == "interleave"]
    assert (inter["model_version"] == "v2|v1").all() and len(inter) > 100
    assert inter["teams"].map(lambda t: set(t) <= {"a", "b"}).all()
    assert imp.loc[imp["variant"] == "production", "teams"].isna().all()
    # every click joins to its impression, on a document that impression showed
    shown = dict(zip(imp["request_id"], imp["doc_ids"].map(list), strict=True))
    assert set(clk["request_id"]) <= set(shown)
    for rid, docs, pos in zip(clk["request_id"], clk["doc_ids"], clk["positions"], strict=True):
        assert [shown[rid][p] for p in pos] == list(docs)
    assert sum(len(d) for d in clk["doc_ids"]) == report.clicks

    log = click_log(imp, clk)
    rows = {(r["model_version"], r["variant"]): r for r in online_metrics(log)}
    # independent count straight from the drained rows
    clicked_pos: dict[str, list[int]] = defaultdict(list)
    for rid, pos in zip(clk["request_id"], clk["positions"], strict=True):
        clicked_pos[rid].extend(int(p) for p in pos)
    for (version, variant), grp in imp.groupby(["model_version", "variant"]):
        firsts = [min(clicked_pos[r]) + 1 if clicked_pos[r] else None for r in grp["request_id"]]
        n = len(firsts)
        row = rows[(version, variant)]
        assert row["impressions"] == n
        assert row["abandonment"] == pytest.approx(sum(f is None for f in firsts) / n, abs=1e-6)
        assert row["ctr_at"]["1"] == pytest.approx(sum(f == 1 for f in firsts) / n, abs=1e-6)
        assert row["ctr_at"]["3"] == pytest.approx(
            sum(f is not None and f <= 3 for f in firsts) / n, abs=1e-6
        )
        assert row["mrr"] == pytest.approx(sum(1 / f for f in firsts if f) / n, abs=1e-6)
        clicks = sum(len(clicked_pos[r]) for r in grp["request_id"])
        assert row["clicks_per_query"] == pytest.approx(clicks / n, abs=1e-6)

    # interleaving credit recomputed by hand: v1 (team b) is better by construction
    outcomes = interleaving_outcomes(log)
    assert len(outcomes) == len(inter)
    teams = dict(zip(inter["request_id"], inter["teams"].map(list), strict=True))
    docs_of = dict(zip(inter["request_id"], inter["doc_ids"].map(list), strict=True))
    for rid, winner in zip(outcomes["impression_id"], outcomes["winner"], strict=True):
        credit = {"a": 0, "b": 0}
        for p in set(clicked_pos.get(rid, [])):
            credit[teams[rid][p]] += 1
        expected = "a" if credit["a"] > credit["b"] else "b" if credit["b"] > credit["a"] else "tie"
        assert winner == expected, (rid, docs_of[rid])
    counts = outcomes["winner"].value_counts()
    assert counts.get("b", 0) > counts.get("a", 0)
    # the simulator's ground truth agrees: v1's lists are better than the interleaved ones
    assert report.shown_ndcg_at_10["production"] > report.shown_ndcg_at_10["interleave"]

    users = per_user(log)
    assert set(users["variant"]) == {"production"}
    assert users["n"].sum() == len(imp) - len(inter)


def test_the_simulator_only_targets_loopback(tmp_path: Path):
    with pytest.raises(SimulationError, match="loopback"):
        TrafficSimulator("http://192.0.2.1:8000", graded_by_v1(2))
    with pytest.raises(SimulationError, match="http"):
        TrafficSimulator("ftp://127.0.0.1:21", graded_by_v1(2))


def test_the_simulator_is_bounded_in_count_and_time():
    sim = TrafficSimulator("http://127.0.0.1:9", graded_by_v1(2))
    with pytest.raises(SimulationError, match="n_queries"):
        sim.run(0)
    with pytest.raises(SimulationError, match="n_queries"):
        sim.run(10**6)
    with pytest.raises(SimulationError, match="max_seconds"):
        sim.run(10, max_seconds=10**5)


def test_a_dead_service_is_counted_not_fatal():
    sim = TrafficSimulator("http://127.0.0.1:9", graded_by_v1(2), concurrency=1, timeout_s=1)
    report = sim.run(5, max_seconds=60)
    assert report.sent == 5 and report.answered == 0
    assert sum(report.errors.values()) == 5


def test_the_same_seed_sends_the_same_queries_users_and_clicks():
    data = graded_by_v1(10)
    labels = np.array([2.0, 0.0, 1.0, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0, 0.0])

    def run(seed: int) -> list[tuple[int, str, list[int]]]:
        sim = TrafficSimulator("http://127.0.0.1:9", data, seed=seed)
        out = []
        for i in range(50):
            q, user, rng = sim.plan(i)
            out.append((q, user, sim.click_model.clicks(labels, rng).tolist()))
        return out

    first = run(5)
    assert first == run(5)
    assert first != run(6)
    assert len({q for q, _, _ in first}) > 5 and any(c for _, _, c in first)


def test_click_log_handles_no_events():
    empty_imp = pd.DataFrame(
        columns=[
            "request_id",
            "query_id",
            "model_version",
            "variant",
            "user_id",
            "ts",
            "doc_ids",
            "teams",
            "error",
        ]
    )
    log = click_log(empty_imp, pd.DataFrame(columns=["request_id", "doc_ids", "error"]))
    assert log.empty and online_metrics(log) == []


def test_an_ab_split_is_analysed_per_user_with_its_sample_ratio_check(
    store: Store, tmp_path: Path, events_redis, monkeypatch
):
    """v1 (better by construction) as production against v2 in a 50/50 A/B: the weekly
    collection finds v1 better per user; weights that do not match the traffic are an SRM."""
    from datetime import UTC, datetime

    from ltr.pipelines.online import collect, week_of
    from ltr.settings import Settings

    client, prefix = events_redis
    routing = {
        "strategy": "ab",
        "production": "v1",
        "variants": [
            {"name": "control", "version": "v1", "weight": 50},
            {"name": "treatment", "version": "v2", "weight": 50},
        ],
    }
    store.route(**routing)
    settings = make_settings(
        store,
        events_enabled=True,
        events_redis_url=REDIS_URL,
        events_stream_prefix=prefix,
        cache_enabled=False,
    )
    with LiveServer(settings) as server:
        report = TrafficSimulator(
            server.url, graded_by_v1(), seed=4, n_users=150, send_features=True, concurrency=3
        ).run(600, max_seconds=300)
    assert report.answered == 600
    ltr_settings = Settings(_env_file=None, home=tmp_path)  # its models/ is the store
    assert ltr_settings.models_dir == store.root
    streams = {"impressions": f"{prefix}:impressions", "clicks": f"{prefix}:clicks"}
    Drainer(client, ltr_settings.events_dir, streams=streams).drain()

    data = collect(week_of(datetime.now(UTC)), settings=ltr_settings)
    ab = data["ab"]
    assert (ab["control"], ab["treatment"]) == ("v1", "v2")
    assert ab["n_control"] + ab["n_treatment"] == len({u for u in per_user_ids(ltr_settings)})
    assert ab["mean_control"] > ab["mean_treatment"] and ab["p_value"] < 0.05
    assert ab["srm"]["mismatch"] is False
    assert data["decision"]["recommendation"] == "keep_a"
    assert data["decision"]["winner_version"] == "v1"
    assert data["interleaving"] is None

    # the same traffic judged against weights it was not split by: sample-ratio mismatch
    store.route(
        **{
            **routing,
            "variants": [
                {**routing["variants"][0], "weight": 90},
                {**routing["variants"][1], "weight": 10},
            ],
        }
    )
    skewed = collect(week_of(datetime.now(UTC)), settings=ltr_settings)
    assert skewed["ab"]["srm"]["mismatch"] is True
    assert skewed["decision"]["recommendation"] == "invalid_srm"


def per_user_ids(settings) -> set[str]:
    imp = read_events(settings.events_dir, "impressions").to_pandas()
    return set(imp["user_id"])
