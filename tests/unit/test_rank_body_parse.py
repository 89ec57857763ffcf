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
        return "422", (exc.errors, exc.omitted)
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
