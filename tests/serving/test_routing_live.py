"""Traffic routing through the running app (DESIGN.md, "Traffic routing"): A/B and canary
splits by a stable hash of user_id, blue-green switches, shadow scoring and team-draft
interleaving, all configured in routing.json and changed without a restart."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pytest
from support.serving import (
    REDIS_URL,
    expected_order,
    feature_matrix,
    linear_scores,
    make_candidates,
    make_settings,
    metric_value,
    rank_body,
    serve,
    wait_until,
)

from serving.routing import team_draft_interleave

USERS = [f"user-{i}" for i in range(2000)]
BATCH = 40


def ab(control: float, treatment: float, strategy: str = "ab") -> dict[str, Any]:
    return {
        "strategy": strategy,
        "production": "v1",
        "variants": [
            {"name": "control", "version": "v1", "weight": control},
            {"name": "treatment", "version": "v2", "weight": treatment},
        ],
        "salt": "exp-live",
    }


def rank_users(client, users: list[str], n: int = 3) -> list[dict[str, Any]]:
    """One small ranking per user, sent in batches; returns the results in user order."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(users), BATCH):
        requests = [rank_body(n, seed=0, user_id=u) for u in users[i : i + BATCH]]
        r = client.post("/api/v1/batch_rank", json={"requests": requests})
        assert r.status_code == 200, r.text
        for item in r.json()["results"]:
            assert item["ok"], item
            out.append(item["result"])
    return out


def check_scores(result: dict[str, Any], candidates: list[dict[str, Any]]) -> None:
    """The ranking is the one of the model version the response names."""
    version = result["model_version"]
    shown = [d["doc_id"] for d in result["ranked"]]
    assert shown == expected_order(version, candidates)[: len(shown)]
    scores = linear_scores(version, feature_matrix(candidates))
    want = dict(zip([c["doc_id"] for c in candidates], scores.tolist(), strict=True))
    for d in result["ranked"]:
        assert d["score"] == pytest.approx(want[d["doc_id"]], abs=1e-5)


# ----------------------------------------------------------------- A/B and canary
def test_the_variant_of_a_user_is_the_same_on_every_request_and_after_a_restart(store):
    store.route(**ab(50.0, 50.0))
    users = USERS[:25]
    with serve(make_settings(store)) as client:
        first = [
            client.post("/api/v1/rank", json=rank_body(3, user_id=u)).json()["variant"]
            for u in users
        ]
        for _ in range(2):
            again = [
                client.post("/api/v1/rank", json=rank_body(3, user_id=u)).json()["variant"]
                for u in users
            ]
            assert again == first
    with serve(make_settings(store)) as client:  # another process would hash the same way
        after_restart = [r["variant"] for r in rank_users(client, users)]
    assert after_restart == first
    assert set(first) == {"control", "treatment"}


def test_an_ab_split_of_50_50_over_2000_users_is_within_tolerance(store):
    store.route(**ab(50.0, 50.0))
    with serve(make_settings(store)) as client:
        results = rank_users(client, USERS)
    variants = Counter(r["variant"] for r in results)
    assert set(variants) == {"control", "treatment"}
    # binomial sd is 1.1 %: 4 % is about 3.5 sd
    assert abs(variants["treatment"] / len(USERS) - 0.5) < 0.04, variants
    candidates = rank_body(3, seed=0)["candidates"]
    for r in results:
        assert r["model_version"] == {"control": "v1", "treatment": "v2"}[r["variant"]]
        check_scores(r, candidates)


def test_a_canary_of_10_percent_gets_about_10_percent_of_the_users(store):
    store.route(**ab(90.0, 10.0, strategy="canary"))
    with serve(make_settings(store)) as client:
        results = rank_users(client, USERS)
        models = {v["version"]: v for v in client.get("/api/v1/models").json()["versions"]}
    share = sum(r["model_version"] == "v2" for r in results) / len(USERS)
    assert abs(share - 0.10) < 0.025, share  # binomial sd is 0.67 %
    assert models["v2"]["requests"] == sum(r["model_version"] == "v2" for r in results)


def test_growing_the_canary_keeps_its_users_and_adds_new_ones(store):
    store.route(**ab(90.0, 10.0, strategy="canary"))
    users = USERS[:600]
    with serve(make_settings(store)) as client:
        before = {u: r["variant"] for u, r in zip(users, rank_users(client, users), strict=True)}
        store.route(**ab(70.0, 30.0, strategy="canary"))
        assert wait_until(
            lambda: client.get("/api/v1/models").json()["weights"] == {"v1": 70.0, "v2": 30.0}
        )
        after = {u: r["variant"] for u, r in zip(users, rank_users(client, users), strict=True)}
    moved_out = [u for u in users if before[u] == "treatment" and after[u] != "treatment"]
    assert moved_out == []
    assert sum(v == "treatment" for v in after.values()) > sum(
        v == "treatment" for v in before.values()
    )


# ----------------------------------------------------------------- blue-green
def test_a_blue_green_switch_moves_every_user_to_the_new_colour_after_the_reload(store):
    def blue_green(live: str) -> dict[str, Any]:
        return {
            "strategy": "blue_green",
            "production": "v1" if live == "blue" else "v2",
            "blue_green": {"blue": "v1", "green": "v2", "live": live},
        }

    store.route(**blue_green("blue"))
    users = USERS[:200]
    with serve(make_settings(store)) as client:
        results = rank_users(client, users)
        assert {(r["variant"], r["model_version"]) for r in results} == {("blue", "v1")}
        store.route(**blue_green("green"))
        assert wait_until(
            lambda: client.post("/api/v1/rank", json=rank_body(3)).json()["model_version"] == "v2"
        )
        results = rank_users(client, users)
        assert {(r["variant"], r["model_version"]) for r in results} == {("green", "v2")}
        for r in results:
            check_scores(r, rank_body(3, seed=0)["candidates"])


# ----------------------------------------------------------------- shadow
def _impressions(redis_db) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in redis_db.xrange("ltr:events:impressions")
    ]


@pytest.mark.integration
def test_shadow_the_champion_answers_and_the_impression_carries_the_shadow_ranking(store, redis_db):
    store.route(strategy="single", production="v1", shadow={"version": "v2"})
    body = rank_body(8, seed=13, user_id="u-1", top_k=5)
    with serve(make_settings(store, redis_url=REDIS_URL, cache_enabled=False)) as client:
        r = client.post("/api/v1/rank", json=body)
        assert r.status_code == 200
        out = r.json()
        text = client.get("/metrics").text
    assert out["model_version"] == "v1"
    served = [d["doc_id"] for d in out["ranked"]]
    assert served == expected_order("v1", body["candidates"])[:5]
    v2_order = expected_order("v2", body["candidates"])[:5]
    assert served != v2_order  # the two models disagree on this list
    (imp,) = _impressions(redis_db)
    assert imp["request_id"] == out["request_id"]
    assert imp["model_version"] == "v1"
    assert json.loads(imp["doc_ids"]) == served
    assert json.loads(imp["shadow"]) == {"version": "v2", "doc_ids": v2_order}
    assert metric_value(text, "ltr_shadow_scores_total", {"version": "v2", "result": "ok"}) == 1


def test_a_failing_shadow_model_never_affects_the_champion(store):
    # vfv needs online features and none are configured: its scoring fails
    store.route(strategy="single", production="v1", shadow={"version": "vfv"})
    with serve(make_settings(store)) as client:
        for seed in range(3):
            body = rank_body(5, seed=seed)
            r = client.post("/api/v1/rank", json=body)
            assert r.status_code == 200
            assert r.json()["model_version"] == "v1"
            check_scores(r.json(), body["candidates"])
        text = client.get("/metrics").text
    assert metric_value(text, "ltr_shadow_scores_total", {"version": "vfv", "result": "error"}) == 3


# ----------------------------------------------------------------- interleaving
def test_interleaving_answers_a_permutation_of_the_candidates_from_both_models(store):
    store.route(
        strategy="interleave", production="v1", interleave={"a": "v1", "b": "v2", "percent": 100.0}
    )
    body = rank_body(9, seed=17, user_id="u-9")
    with serve(make_settings(store)) as client:
        out = client.post("/api/v1/rank", json=body).json()
    assert out["variant"] == "interleave"
    assert out["model_version"] == "v1|v2"
    shown = [d["doc_id"] for d in out["ranked"]]
    assert sorted(shown) == sorted(c["doc_id"] for c in body["candidates"])
    assert [d["rank"] for d in out["ranked"]] == list(range(1, 10))
    # recomputable from the request id: team-draft of the two models' rankings
    a, b = expected_order("v1", body["candidates"]), expected_order("v2", body["candidates"])
    merged, teams = team_draft_interleave(a, b, rng_seed=out["request_id"])
    assert shown == merged
    x = feature_matrix(body["candidates"])
    ids = [c["doc_id"] for c in body["candidates"]]
    score = {
        "a": dict(zip(ids, linear_scores("v1", x).tolist(), strict=True)),
        "b": dict(zip(ids, linear_scores("v2", x).tolist(), strict=True)),
    }
    for d in out["ranked"]:
        assert d["score"] == pytest.approx(score[teams[d["doc_id"]]][d["doc_id"]], abs=1e-5)


@pytest.mark.integration
def test_interleaving_logs_the_team_of_every_shown_document(store, redis_db):
    store.route(
        strategy="interleave", production="v1", interleave={"a": "v1", "b": "v2", "percent": 100.0}
    )
    body = rank_body(7, seed=19, user_id="u-3", top_k=4)
    with serve(make_settings(store, redis_url=REDIS_URL)) as client:
        out = client.post("/api/v1/rank", json=body).json()
    shown = [d["doc_id"] for d in out["ranked"]]
    assert len(shown) == 4
    (imp,) = _impressions(redis_db)
    assert imp["variant"] == "interleave"
    assert imp["model_version"] == "v1|v2"
    assert json.loads(imp["doc_ids"]) == shown
    logged = json.loads(imp["interleave"])
    assert logged["a"] == "v1" and logged["b"] == "v2"
    assert list(logged["teams"]) == shown
    _, teams = team_draft_interleave(
        expected_order("v1", body["candidates"]),
        expected_order("v2", body["candidates"]),
        rng_seed=out["request_id"],
        k=4,
    )
    assert logged["teams"] == {d: teams[d] for d in shown}
    counts = Counter(logged["teams"].values())
    assert abs(counts["a"] - counts["b"]) <= 1


def test_interleaving_only_its_share_of_users(store):
    store.route(
        strategy="interleave", production="v1", interleave={"a": "v1", "b": "v2", "percent": 25.0}
    )
    with serve(make_settings(store)) as client:
        results = rank_users(client, USERS[:800])
    share = sum(r["variant"] == "interleave" for r in results) / 800
    assert abs(share - 0.25) < 0.05
    for r in results:
        if r["variant"] != "interleave":
            assert r["model_version"] == "v1"


def test_the_candidates_of_the_helpers_are_scored_differently_by_the_two_models():
    """Guards the fixtures: v1 and v2 disagree, so routing is visible in the answers."""
    candidates = make_candidates(8, seed=13)
    assert expected_order("v1", candidates) != expected_order("v2", candidates)
    x = feature_matrix(candidates)
    assert not np.allclose(linear_scores("v1", x), linear_scores("v2", x))
