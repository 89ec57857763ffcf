"""Traffic routing: buckets, splits, blue-green, shadow, routing.json, watcher, interleaving."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pydantic
import pytest

from serving.errors import RoutingConfigError
from serving.routing import (
    Decision,
    Router,
    RoutingConfig,
    RoutingWatcher,
    interleave_credit,
    stable_bucket,
    team_draft_interleave,
)

USERS = [f"user-{i}" for i in range(100_000)]


def ab_config(treatment: float, *, salt: str = "exp-1", **extra: object) -> dict:
    return {
        "version": 1,
        "strategy": "ab",
        "production": "v12",
        "variants": [
            {"name": "control", "version": "v12", "weight": 100 - treatment},
            {"name": "treatment", "version": "v13", "weight": treatment},
        ],
        "salt": salt,
        **extra,
    }


def router(data: dict) -> Router:
    return Router(RoutingConfig.model_validate_json(json.dumps(data)))


def write_json(path: Path, data: object) -> Path:
    """Atomic write, as the promotion code does it: temp file + os.replace."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(data if isinstance(data, str) else json.dumps(data))
    os.replace(tmp, path)
    return path


# -- stable_bucket ---------------------------------------------------------------------


def test_stable_bucket_is_the_first_8_bytes_of_sha256_big_endian_modulo_buckets():
    for user in ["alice", "bob", "", "ü-ñ", "user-123456"]:
        digest = hashlib.sha256(f"exp-2026-11:{user}".encode()).digest()
        expected = int.from_bytes(digest[:8], "big") % 10_000
        assert stable_bucket(user, "exp-2026-11") == expected
    assert stable_bucket("alice", "s", buckets=7) == (
        int.from_bytes(hashlib.sha256(b"s:alice").digest()[:8], "big") % 7
    )


def test_changing_the_salt_reshuffles_users():
    same = sum(stable_bucket(u, "a") == stable_bucket(u, "b") for u in USERS[:10_000])
    assert same < 20  # about 1 in 10,000 by chance


def test_buckets_are_spread_uniformly():
    counts = [0] * 10
    for user in USERS:
        counts[stable_bucket(user, "x") // 1000] += 1
    assert all(abs(c - 10_000) < 500 for c in counts), counts  # 5 standard deviations


# -- strategies ------------------------------------------------------------------------


def test_ab_split_matches_the_weights_over_100k_users():
    r = router(ab_config(10))
    treated = sum(r.decide(u, "req").variant == "treatment" for u in USERS)
    assert abs(treated / len(USERS) - 0.10) < 0.005  # sd is 0.00095


def test_a_user_gets_the_same_variant_from_every_router_built_from_the_same_config():
    first, second = router(ab_config(50)), router(ab_config(50))
    for user in USERS[:2000]:
        d = first.decide(user, "request-1")
        assert d == second.decide(user, "request-2") == first.decide(user, "request-3")


def test_variant_and_version_come_from_the_bucket_ranges_in_file_order():
    r = router(ab_config(10, salt="s"))
    for user in USERS[:2000]:
        d = r.decide(user, "req")
        in_treatment = stable_bucket(user, "s") >= 9000
        assert (d.variant, d.version) == (
            ("treatment", "v13") if in_treatment else ("control", "v12")
        )


def test_raising_treatment_from_10_to_20_percent_only_moves_users_from_control_to_treatment():
    at_10, at_20 = router(ab_config(10)), router(ab_config(20))
    treated_10 = {u for u in USERS if at_10.decide(u, "r").variant == "treatment"}
    treated_20 = {u for u in USERS if at_20.decide(u, "r").variant == "treatment"}
    assert treated_10 < treated_20  # nobody leaves treatment
    assert abs(len(treated_20) / len(USERS) - 0.20) < 0.006
    moved = treated_20 - treated_10
    assert all(at_10.decide(u, "r").variant == "control" for u in moved)


def test_canary_with_three_variants_splits_by_cumulative_weight():
    data = {
        "version": 1,
        "strategy": "canary",
        "production": "v1",
        "variants": [
            {"name": "stable", "version": "v1", "weight": 70},
            {"name": "canary", "version": "v2", "weight": 25.5},
            {"name": "new", "version": "v3", "weight": 4.5},
        ],
        "salt": "c",
    }
    r = router(data)
    counts: dict[str, int] = {}
    for user in USERS:
        v = r.decide(user, "r").variant
        counts[v] = counts.get(v, 0) + 1
    assert abs(counts["stable"] / 1e5 - 0.70) < 0.007
    assert abs(counts["canary"] / 1e5 - 0.255) < 0.007
    assert abs(counts["new"] / 1e5 - 0.045) < 0.004


def test_anonymous_users_are_bucketed_by_request_id_spread_but_not_sticky():
    r = router(ab_config(50))
    decisions = [r.decide(None, f"req-{i}") for i in range(10_000)]
    treated = sum(d.variant == "treatment" for d in decisions)
    assert abs(treated / 10_000 - 0.5) < 0.03
    # the same request id routes the same way; an empty user id counts as anonymous
    assert r.decide(None, "req-7") == decisions[7] == r.decide("", "req-7")
    # a known user ignores the request id
    assert len({r.decide("alice", f"req-{i}") for i in range(50)}) == 1


def test_single_strategy_serves_production_to_everyone():
    r = router({"version": 1, "strategy": "single", "production": "v12"})
    assert {r.decide(u, "r") for u in USERS[:1000]} == {Decision("production", "v12", None, None)}


def test_blue_green_serves_the_live_colour_and_a_switch_moves_everyone():
    def bg(live: str) -> dict:
        return {
            "version": 1,
            "strategy": "blue_green",
            "production": {"blue": "v12", "green": "v13"}[live],
            "blue_green": {"blue": "v12", "green": "v13", "live": live},
        }

    blue, green = router(bg("blue")), router(bg("green"))
    assert {blue.decide(u, "r") for u in USERS[:1000]} == {Decision("blue", "v12", None, None)}
    assert {green.decide(u, "r") for u in USERS[:1000]} == {Decision("green", "v13", None, None)}


def test_shadow_is_sampled_at_its_rate_independently_of_the_variant():
    r = router(ab_config(50, shadow={"version": "v14", "sample_percent": 25}))
    decisions = [r.decide(u, "r") for u in USERS]
    shadowed = [d.shadow_version == "v14" for d in decisions]
    assert all(d.shadow_version in (None, "v14") for d in decisions)
    assert abs(sum(shadowed) / len(USERS) - 0.25) < 0.006
    in_treatment = [s for s, d in zip(shadowed, decisions, strict=True) if d.variant == "treatment"]
    assert abs(sum(in_treatment) / len(in_treatment) - 0.25) < 0.01  # independent bucket


def test_shadow_at_zero_percent_never_scores_and_never_doubles_the_served_version():
    none = router({**ab_config(10), "shadow": {"version": "v14", "sample_percent": 0}})
    assert all(none.decide(u, "r").shadow_version is None for u in USERS[:2000])
    same = router(
        {"version": 1, "strategy": "single", "production": "v12", "shadow": {"version": "v12"}}
    )
    assert all(same.decide(u, "r").shadow_version is None for u in USERS[:2000])


def test_interleave_strategy_interleaves_its_share_of_users_and_serves_production_to_the_rest():
    r = router(
        {
            "version": 1,
            "strategy": "interleave",
            "production": "v12",
            "interleave": {"a": "v12", "b": "v13", "percent": 30},
        }
    )
    decisions = [r.decide(u, "r") for u in USERS]
    inter = [d for d in decisions if d.interleave is not None]
    assert abs(len(inter) / len(USERS) - 0.30) < 0.007
    assert {d for d in inter} == {Decision("interleave", "v12", None, ("v12", "v13"))}
    assert {d for d in decisions if d.interleave is None} == {
        Decision("production", "v12", None, None)
    }


def test_referenced_versions_lists_every_version_the_config_can_serve_or_score():
    cfg = RoutingConfig.model_validate_json(
        json.dumps(ab_config(10, shadow={"version": "v14", "sample_percent": 5}))
    )
    assert cfg.referenced_versions() == {"v12", "v13", "v14"}


def test_the_config_is_immutable():
    cfg = RoutingConfig.model_validate_json(json.dumps(ab_config(10)))
    with pytest.raises(pydantic.ValidationError):
        cfg.production = "v99"  # type: ignore[misc]


# -- loading routing.json --------------------------------------------------------------


def test_the_example_from_the_design_loads(tmp_path):
    path = write_json(tmp_path / "routing.json", {**ab_config(10), "salt": "exp-2026-11"})
    cfg = RoutingConfig.load(path)
    assert (cfg.version, cfg.strategy, cfg.production, cfg.salt) == (1, "ab", "v12", "exp-2026-11")
    assert [(v.name, v.weight) for v in cfg.variants] == [("control", 90), ("treatment", 10)]


INVALID = {
    "weights_sum_to_90": (
        {
            **ab_config(10),
            "variants": [
                {"name": "control", "version": "v12", "weight": 80},
                {"name": "treatment", "version": "v13", "weight": 10},
            ],
        },
        ["variants", "sum to 90"],
    ),
    "unknown_strategy": ({**ab_config(10), "strategy": "bandit"}, ["strategy", "'ab'"]),
    "bad_json": ('{"version": 3, "strategy": ', ["invalid JSON", "line 1"]),
    "empty_version": ({**ab_config(10), "production": ""}, ["production", "non-empty"]),
    "path_in_version": ({**ab_config(10), "production": "../v1"}, ["production"]),
    "unknown_field": ({**ab_config(10), "weights": [1]}, ["weights", "Extra inputs"]),
    "string_as_version_number": ({**ab_config(10), "version": "3"}, ["version"]),
    "negative_weight": (ab_config(-10), ["variants.1.weight", "greater than or equal to 0"]),
    "weight_finer_than_0.01": (ab_config(10.005), ["variants", "multiple of 0.01"]),
    "variants_under_single": (
        {**ab_config(10), "strategy": "single"},
        ["variants", "only used by strategy"],
    ),
    "blue_green_without_section": (
        {"version": 1, "strategy": "blue_green", "production": "v1"},
        ["blue_green", "required"],
    ),
    "blue_green_production_not_live": (
        {
            "version": 1,
            "strategy": "blue_green",
            "production": "v1",
            "blue_green": {"blue": "v1", "green": "v2", "live": "green"},
        },
        ["production", "live colour"],
    ),
    "not_an_object": ([1, 2], ["Input should be an object"]),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_an_invalid_routing_file_is_rejected_naming_the_file_and_the_field(tmp_path, name):
    content, fragments = INVALID[name]
    path = write_json(tmp_path / "routing.json", content)
    with pytest.raises(RoutingConfigError) as err:
        RoutingConfig.load(path)
    message = str(err.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_a_missing_routing_file_is_a_routing_config_error(tmp_path):
    with pytest.raises(RoutingConfigError, match="cannot read"):
        RoutingConfig.load(tmp_path / "nope.json")


# -- RoutingWatcher --------------------------------------------------------------------


def test_the_watcher_picks_up_an_atomic_replace(tmp_path):
    path = write_json(tmp_path / "routing.json", ab_config(10))
    watcher = RoutingWatcher(path)
    assert watcher.poll() is False  # nothing changed
    write_json(path, {**ab_config(20), "version": 2})
    assert watcher.poll() is True
    cfg, r = watcher.current()
    assert cfg.version == 2 and cfg.variants[1].weight == 20
    assert r.config is cfg
    assert watcher.poll() is False
    assert watcher.reloads == 1


@pytest.mark.parametrize("name", ["weights_sum_to_90", "unknown_strategy", "bad_json"])
def test_the_watcher_refuses_an_invalid_file_and_keeps_the_old_config(tmp_path, name, caplog):
    path = write_json(tmp_path / "routing.json", ab_config(10))
    watcher = RoutingWatcher(path)
    before = watcher.current()
    write_json(path, INVALID[name][0])
    assert watcher.poll() is False
    assert watcher.current() is before
    assert watcher.rejected == 1
    assert watcher.last_error is not None and str(path) in watcher.last_error
    assert any("keeping routing config version 1" in r.getMessage() for r in caplog.records)
    assert watcher.poll() is False and watcher.rejected == 1  # counted once per change
    write_json(path, {**ab_config(30), "version": 2})  # a later valid file is taken
    assert watcher.poll() is True
    assert watcher.current()[0].version == 2 and watcher.last_error is None


def test_the_watcher_keeps_the_config_when_the_file_disappears(tmp_path):
    path = write_json(tmp_path / "routing.json", ab_config(10))
    watcher = RoutingWatcher(path)
    before = watcher.current()
    path.unlink()
    assert watcher.poll() is False
    assert watcher.current() is before and watcher.rejected == 1


def test_the_watcher_ignores_a_rewrite_with_identical_content(tmp_path):
    path = write_json(tmp_path / "routing.json", ab_config(10))
    watcher = RoutingWatcher(path)
    write_json(path, json.dumps(ab_config(10), indent=2))
    assert watcher.poll() is False and watcher.rejected == 0


def test_the_watcher_refuses_a_config_its_accept_hook_rejects(tmp_path):
    known = {"v12", "v13"}

    def accept(cfg: RoutingConfig) -> None:
        missing = cfg.referenced_versions() - known
        if missing:
            raise LookupError(f"not in the model store: {sorted(missing)}")

    path = write_json(tmp_path / "routing.json", ab_config(10))
    watcher = RoutingWatcher(path, accept=accept)
    write_json(path, {**ab_config(10), "version": 2, "shadow": {"version": "v99"}})
    assert watcher.poll() is False
    assert watcher.current()[0].version == 1
    assert "v99" in (watcher.last_error or "")


def test_the_watcher_fails_at_start_without_a_valid_file(tmp_path):
    with pytest.raises(RoutingConfigError):
        RoutingWatcher(tmp_path / "routing.json")


# -- team-draft interleaving -----------------------------------------------------------

SEEDS = [f"request-{i}" for i in range(200)]


def test_interleaving_identical_rankings_gives_that_ranking_with_a_and_b_alternating_per_round():
    ranking = ["d1", "d2", "d3", "d4", "d5", "d6"]
    for seed in SEEDS[:50]:
        shown, team = team_draft_interleave(ranking, list(ranking), rng_seed=seed)
        assert shown == ranking
        for i in range(0, 6, 2):  # each round: one pick per team
            assert {team[ranking[i]], team[ranking[i + 1]]} == {"a", "b"}


def test_interleaving_opposite_rankings_gives_one_of_the_hand_enumerated_results():
    a, b = ["d1", "d2", "d3", "d4"], ["d4", "d3", "d2", "d1"]
    # round 1: A picks d1, B picks d4 (order by coin); round 2: A picks d2, B picks d3
    expected = {
        ("d1", "d4", "d2", "d3"),
        ("d1", "d4", "d3", "d2"),
        ("d4", "d1", "d2", "d3"),
        ("d4", "d1", "d3", "d2"),
    }
    seen = set()
    for seed in SEEDS:
        shown, team = team_draft_interleave(a, b, rng_seed=seed)
        assert tuple(shown) in expected
        assert team == {"d1": "a", "d2": "a", "d4": "b", "d3": "b"}
        seen.add(tuple(shown))
    assert seen == expected  # the coin really decides who picks first


def test_interleaving_rankings_of_different_documents_leaves_the_overflow_without_a_team():
    a, b = ["x", "y", "z"], ["x", "p", "q"]
    # Drafting stops as soon as either ranking has nothing new (checked before every pick);
    # what is left is appended in ranking order (a, then b) without a team.
    expected = {
        # coins A, A: x(a) p(b) | y(a) q(b) | b exhausted, z trails
        ("x", "p", "y", "q", "z"): {"x": "a", "p": "b", "y": "a", "q": "b"},
        # coins A, B: x(a) p(b) | q(b) | b exhausted before a's second pick: y, z trail
        ("x", "p", "q", "y", "z"): {"x": "a", "p": "b", "q": "b"},
        # coins B, A: x(b) y(a) | z(a) | a exhausted before b's second pick: p, q trail
        ("x", "y", "z", "p", "q"): {"x": "b", "y": "a", "z": "a"},
        # coins B, B: x(b) y(a) | p(b) z(a) | a exhausted, q trails
        ("x", "y", "p", "z", "q"): {"x": "b", "y": "a", "p": "b", "z": "a"},
    }
    seen = set()
    for seed in SEEDS:
        shown, team = team_draft_interleave(a, b, rng_seed=seed)
        assert expected[tuple(shown)] == team
        seen.add(tuple(shown))
    assert seen == set(expected)


def test_interleaving_shows_each_document_once_and_team_sizes_differ_by_at_most_one():
    rng = random.Random(7)
    docs = [f"d{i}" for i in range(20)]
    for seed in SEEDS:
        a, b = rng.sample(docs, 20), rng.sample(docs, 20)
        shown, team = team_draft_interleave(a, b, rng_seed=seed)
        assert sorted(shown) == sorted(docs)
        assert set(team) == set(docs)
        n_a = n_b = 0
        for doc in shown:
            n_a += team[doc] == "a"
            n_b += team[doc] == "b"
            assert abs(n_a - n_b) <= 1


def test_interleaving_is_deterministic_given_the_seed_and_varies_between_seeds():
    a, b = [f"d{i}" for i in range(10)], [f"d{i}" for i in reversed(range(10))]
    assert team_draft_interleave(a, b, rng_seed="r1") == team_draft_interleave(a, b, rng_seed="r1")
    results = {tuple(team_draft_interleave(a, b, rng_seed=s)[0]) for s in SEEDS[:30]}
    assert len(results) > 5


def test_interleaving_stops_after_k_documents():
    shown, team = team_draft_interleave(["d1", "d2", "d3"], ["d3", "d2", "d1"], rng_seed="s", k=2)
    assert sorted(shown) == ["d1", "d3"] and team == {"d1": "a", "d3": "b"}
    assert team_draft_interleave(["d1"], ["d1"], rng_seed="s", k=0) == ([], {})


def test_interleaving_empty_rankings_gives_nothing():
    assert team_draft_interleave([], [], rng_seed="s") == ([], {})


# -- interleave_credit -----------------------------------------------------------------


def test_credit_counts_clicks_per_team_and_names_the_winner():
    team = {"d1": "a", "d2": "b", "d3": "a", "d4": "b"}
    assert interleave_credit(team, ["d1", "d3"]) == {"a": 2, "b": 0, "winner": "a"}
    assert interleave_credit(team, ["d2", "d3", "d4"]) == {"a": 1, "b": 2, "winner": "b"}
    assert interleave_credit(team, ["d1", "d2"]) == {"a": 1, "b": 1, "winner": "tie"}
    assert interleave_credit(team, []) == {"a": 0, "b": 0, "winner": "tie"}


def test_credit_counts_a_document_once_and_ignores_unattributed_clicks():
    team = {"d1": "a", "d2": "b"}
    assert interleave_credit(team, ["d1", "d1", "d1", "zz"]) == {"a": 1, "b": 0, "winner": "a"}


def test_a_rollout_block_names_its_deadline_and_a_bad_one_is_refused() -> None:
    body = {
        "version": 4,
        "strategy": "canary",
        "production": "v1",
        "variants": [
            {"name": "champion", "version": "v1", "weight": 90},
            {"name": "challenger", "version": "v2", "weight": 10},
        ],
        "rollout": {"promotion_id": "p1", "version": "v2", "started_at": 1000.0, "window_s": 60},
    }
    cfg = RoutingConfig.model_validate(body)
    assert cfg.rollout is not None and cfg.rollout.deadline == 1060.0
    with pytest.raises(pydantic.ValidationError, match="window_s"):
        RoutingConfig.model_validate({**body, "rollout": {**body["rollout"], "window_s": -1}})
