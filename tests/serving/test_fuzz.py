"""Property-based fuzzing of the rank service: no input, valid or hostile, gets a 5xx.

Two sources of requests, both sent in-process through the app (``TestClient``, lifespan on):

- schemathesis draws requests from the app's own OpenAPI spec, in positive (valid) and
  negative (schema-violating) modes, for every operation;
- a hand-written Hypothesis strategy sends raw JSON text that the spec cannot describe:
  NaN / Infinity tokens, integers beyond float range, lone surrogates, huge strings, deep
  nesting, negative or gigantic ``top_k``, wrong types.

The number of examples is bounded so the file runs in seconds.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FEATURES, Store, make_settings, serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

schemathesis = pytest.importorskip("schemathesis")

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.testclient import TestClient

API_KEY = "k" * 24
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory, artifact_templates: Path) -> Iterator[Any]:
    """The app with A/B routing, a shadow model that needs online features (none are
    configured, so its scoring fails in the background) and an admin key."""
    s = Store(tmp_path_factory.mktemp("fuzz") / "models", artifact_templates)
    s.install("v1", "v2", "vfv")
    s.route(
        strategy="ab",
        production="v1",
        variants=[
            {"name": "control", "version": "v1", "weight": 50.0},
            {"name": "treatment", "version": "v2", "weight": 50.0},
        ],
        shadow={"version": "vfv", "sample_percent": 50.0},
    )
    settings_ = make_settings(s, environment="development", api_key=SecretStr(API_KEY))
    with serve(settings_) as client:
        yield client


def _send(client: TestClient, kwargs: dict[str, Any]) -> Any:
    """Send a schemathesis-serialised request through the TestClient (NaN kept as text)."""
    body: bytes | str | None = None
    if "json" in kwargs:
        body = json.dumps(kwargs["json"], allow_nan=True)
    elif kwargs.get("data") is not None:
        body = kwargs["data"]
    return client.request(
        kwargs["method"],
        kwargs["url"],
        headers={k: str(v) for k, v in (kwargs.get("headers") or {}).items()},
        params=kwargs.get("params"),
        content=body,
    )


def _spec_strategy(client: TestClient) -> st.SearchStrategy[Any]:
    spec = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    strategies = []
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            strategies.append(op.as_strategy(generation_mode=mode))
    return st.one_of(strategies)


def test_requests_generated_from_the_openapi_spec_never_get_a_server_error(fuzz_client):
    strategy = _spec_strategy(fuzz_client)
    seen: set[str] = set()

    @FUZZ
    @given(case=strategy)
    def check(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url="http://testserver")
        response = _send(fuzz_client, kwargs)
        seen.add(f"{case.method} {case.path}")
        assert response.status_code < 500, (
            f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}\n"
            f"request: {str(kwargs)[:500]}"
        )

    check()
    # every operation was exercised, not only the easy ones
    assert {"POST /api/v1/rank", "POST /api/v1/batch_rank", "POST /api/v1/feedback"} <= seen


# ----------------------------------------------------------------- hostile raw JSON
class Raw:
    """A JSON fragment written verbatim (NaN, 1e999, a lone surrogate escape ...)."""

    def __init__(self, text: str) -> None:
        self.text = text


def encode(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return json.dumps(value, allow_nan=True)


HOSTILE_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "3.5e38",
    "1" + "0" * 400,  # an integer beyond float range
    '"\\ud800"',  # a lone surrogate
    '"\\u0000"',
    "null",
    "true",
    "[]",
    "{}",
    "[" * 3000 + "]" * 3000,  # deep nesting
    '"' + "x" * 20_000 + '"',  # a huge string
]

scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=40),
    st.sampled_from(HOSTILE_TOKENS).map(Raw),
    st.booleans(),
    st.none(),
)
ids = st.one_of(
    st.text(min_size=0, max_size=300),
    st.sampled_from(["q1", "ünïcødé-☃", "\u202e", "a" * 257]),
    scalars,
)
feature_names = st.one_of(st.sampled_from([*FEATURES, "unknown", ""]), st.text(max_size=30))
features = st.one_of(
    st.dictionaries(feature_names, scalars, max_size=12),
    st.dictionaries(feature_names, st.floats(width=32, allow_nan=False), max_size=6),
    scalars,
)
candidate = st.one_of(
    st.fixed_dictionaries({"doc_id": ids}, optional={"features": features}),
    st.fixed_dictionaries({"doc_id": ids, "extra": scalars}),
    scalars,
)
rank_request = st.fixed_dictionaries(
    {"query_id": ids, "candidates": st.one_of(st.lists(candidate, max_size=60), scalars)},
    optional={
        "user_id": ids,
        "top_k": st.one_of(st.integers(min_value=-5, max_value=10**6), scalars),
    },
)
bodies = st.one_of(
    st.tuples(st.just("/api/v1/rank"), st.one_of(rank_request, scalars)),
    st.tuples(
        st.just("/api/v1/batch_rank"),
        st.one_of(
            st.fixed_dictionaries({"requests": st.lists(rank_request, max_size=5)}), scalars
        ),
    ),
    st.tuples(
        st.just("/api/v1/feedback"),
        st.fixed_dictionaries(
            {
                "request_id": ids,
                "clicks": st.one_of(
                    st.lists(
                        st.fixed_dictionaries(
                            {"doc_id": ids, "position": st.one_of(st.integers(), scalars)}
                        ),
                        max_size=5,
                    ),
                    scalars,
                ),
            },
            optional={"user_id": ids},
        ),
    ),
)


def test_hostile_json_bodies_never_get_a_server_error(fuzz_client):
    @FUZZ
    @given(item=bodies)
    def check(item: tuple[str, Any]) -> None:
        path, body = item
        text = encode(body)
        response = fuzz_client.post(
            path, content=text.encode("utf-8", "surrogatepass"), headers=_JSON
        )
        assert response.status_code < 500, f"{path} -> {response.status_code}: {text[:300]}"

    check()


_JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("token", [t for t in HOSTILE_TOKENS if t != "true"])
def test_each_hostile_token_as_a_feature_value_is_answered_with_a_4xx(fuzz_client, token):
    text = '{"query_id":"q","candidates":[{"doc_id":"a","features":{"f0":' + token + "}}]}"
    response = fuzz_client.post("/api/v1/rank", content=text, headers=_JSON)
    assert 400 <= response.status_code < 500, response.text[:300]
