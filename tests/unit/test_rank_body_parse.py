"""A small rank body is validated in one pydantic call when it is valid; the answer (model
or 413/422) must be the one the item-by-item walk gives, for valid and invalid bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.schemas import (
    ONE_CALL_BODY_BYTES,
    BodyLimits,
    BodyRejected,
    InvalidBody,
    _Errors,
    _finish,
    _rank_request,
    load_json,
    parse_rank_request,
)

LIMITS = BodyLimits(max_candidates=50, max_features_per_candidate=4, max_batch=8, max_clicks=8)

ids = st.one_of(
    st.text(min_size=0, max_size=6),
    st.sampled_from(["d1", "d2", "d\x00", "x" * 300]),
    st.integers(),
    st.none(),
)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-5, 5),
    st.text(max_size=3),
    st.just(1e39),
)
candidate = st.one_of(
    st.fixed_dictionaries({"doc_id": ids}),
    st.fixed_dictionaries(
        {"doc_id": ids, "features": st.dictionaries(st.text(max_size=4), values, max_size=3)}
    ),
    st.fixed_dictionaries({"doc_id": ids, "extra": st.integers()}),
    st.integers(),
)
wild = st.fixed_dictionaries(
    {"query_id": ids, "candidates": st.lists(candidate, max_size=8)},
    optional={"user_id": ids, "top_k": st.integers(-1, 10), "other": st.integers()},
)
# mostly valid: plain ids, finite values, now and then one flaw (a duplicate, a long name)
plain = st.text(alphabet="abcdef0123", min_size=1, max_size=5)
plain_candidate = st.fixed_dictionaries(
    {"doc_id": plain},
    optional={
        "features": st.dictionaries(
            st.sampled_from(["f0", "f1", "f2", "f" * 300]),
            st.floats(-1e6, 1e6) | st.integers(-3, 3) | st.just(float("inf")),
            max_size=3,
        )
    },
)
nearly_valid = st.fixed_dictionaries(
    {"query_id": plain, "candidates": st.lists(plain_candidate, min_size=1, max_size=12)},
    optional={"user_id": plain, "top_k": st.integers(0, 20)},
)
body = st.one_of(wild, nearly_valid)


def walked(raw: bytes) -> Any:
    """The item-by-item path alone (what large bodies take)."""
    errors = _Errors()
    return _finish(_rank_request(load_json(raw), errors, ("body",)), errors)


def outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", parse(raw).model_dump()
    except InvalidBody as exc:
        return "422", (exc.errors, exc.omitted, exc.complete)
    except BodyRejected as exc:
        return "413", str(exc)


@settings(max_examples=400, deadline=None)
@given(body)
def test_one_call_and_the_item_walk_agree_on_every_small_body(data: dict[str, Any]):
    raw = json.dumps(data).encode()
    assert len(raw) <= ONE_CALL_BODY_BYTES
    fast = outcome(lambda r: parse_rank_request(r, LIMITS), raw)
    if fast[0] == "413":  # limits are checked before either path
        return
    assert fast == outcome(walked, raw)


@pytest.mark.parametrize(
    "data",
    [
        {"query_id": "q", "candidates": [{"doc_id": "a"}, {"doc_id": "b", "features": {"f": 1}}]},
        {"query_id": "q", "user_id": "u", "top_k": 1, "candidates": [{"doc_id": "a"}]},
    ],
)
def test_valid_small_bodies_give_the_same_model(data):
    raw = json.dumps(data).encode()
    assert parse_rank_request(raw, LIMITS) == walked(raw)


def walked_to_the_end(raw: bytes) -> InvalidBody | None:
    """The item walk with its early stop disabled: every item validated, every error
    counted (the reference of the early stop)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_Errors, "full", property(lambda self: False))
        try:
            walked(raw)
        except InvalidBody as exc:
            return exc
    return None


@settings(max_examples=400, deadline=None)
@given(body)
def test_stopping_at_the_tenth_error_reports_the_errors_a_full_walk_reports_first(data):
    raw = json.dumps(data).encode()
    try:
        walked(raw)
        early = None
    except InvalidBody as exc:
        early = exc
    full = walked_to_the_end(raw)
    assert (early is None) == (full is None)
    if early is None or full is None:
        return
    assert early.errors == full.errors  # the same first ten, in the same order
    assert full.complete
    assert len(early.errors) + early.omitted <= len(full.errors) + full.omitted
    if early.complete:
        assert early.omitted == full.omitted


def test_a_body_of_a_thousand_bad_candidates_is_walked_only_to_the_tenth_error():
    bad = {"doc_id": "d", "features": {f"f{j}": "x" for j in range(4)}}
    data = {"query_id": "q", "candidates": [{**bad, "doc_id": f"d{i}"} for i in range(1000)]}
    limits = BodyLimits(
        max_candidates=1000, max_features_per_candidate=4, max_batch=8, max_clicks=8
    )
    with pytest.raises(InvalidBody) as info:
        parse_rank_request(json.dumps(data).encode(), limits)
    # candidates 0-2 hold errors 1-12: the walk stops after the third of 1000
    assert (len(info.value.errors), info.value.omitted, info.value.complete) == (10, 2, False)
    assert [e["loc"][2] for e in info.value.errors] == [0] * 4 + [1] * 4 + [2] * 2
    full = walked_to_the_end(json.dumps(data).encode())
    assert full is not None and (full.omitted, full.complete) == (4000 - 10, True)


def test_a_walk_whose_last_item_fills_the_list_is_complete():
    bad = {"doc_id": "d", "features": {f"f{j}": "x" for j in range(4)}}
    data = {"query_id": "q", "candidates": [{**bad, "doc_id": f"d{i}"} for i in range(3)]}
    with pytest.raises(InvalidBody) as info:
        walked(json.dumps(data).encode())
    assert (info.value.omitted, info.value.complete) == (2, True)
