"""Property-based fuzzing of the rank service: no input, valid or hostile, gets a 5xx.

Two sources of requests, both sent in-process through the app (``TestClient``, lifespan on):

- schemathesis draws requests from the app's own OpenAPI spec, in positive (valid) and
  negative (schema-violating) modes, for every operation;
- a hand-written Hypothesis strategy sends raw JSON text that the spec cannot describe:
  NaN / Infinity tokens, integers beyond float range, lone surrogates, huge strings, deep
  nesting, negative or gigantic ``top_k``, wrong types.

Each runs twice: without Redis, and with the result cache on and Redis up (database 8 of
the shared Redis, emptied before and after; skipped when it does not answer), so that every
input also goes through the cache key, the cache and the event streams.

The number of examples is bounded so the file runs in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from support.serving import FEATURES, REDIS_URL, Store, TestClient, make_settings, serve

schemathesis = pytest.importorskip("schemathesis")

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

API_KEY = "k" * 24
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is reproducible
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def redis_up() -> Iterator[str]:
    """The shared Redis's database 8, emptied before and after (FLUSHDB on db 8 only)."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} does not answer: {exc}")
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(False, id="no-redis"),
        pytest.param(True, id="cache-on-redis-up", marks=pytest.mark.integration),
    ],
)
def fuzz_client(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    artifact_templates: Path,
) -> Iterator[TestClient]:
    """The app with A/B routing, a shadow model that needs online features (none are
    configured without Redis, so its scoring fails in the background) and an admin key;
    with Redis, also the result cache and the event streams."""
    redis_url = request.getfixturevalue("redis_up") if request.param else None
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
    settings_ = make_settings(
        s,
        environment="development",
        api_key=SecretStr(API_KEY),
        redis_url=redis_url,
        cache_enabled=True,
    )
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
    '"' + "a" * 257 + '"',  # one character over the id limit
    '"\u202e\u2603\u00fc"',  # right-to-left override, snowman, umlaut
    '"\\udfff\\ud800"',  # two lone surrogates, the wrong way round
    '"\\ud83d\\ude00"',  # a valid surrogate pair (an emoji)
    '"a\\u0000b"',  # NUL inside
    '"\\u001b[31m"',  # an escape sequence
    '"\\u007f"',  # DEL
]

scalars = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=40),
    st.sampled_from(HOSTILE_TOKENS).map(Raw),
    st.booleans(),
    st.none(),
    st.just([]),
    st.just({}),
)
#: Control characters and lone surrogates (json.dumps writes a surrogate as an escape).
hostile_text = st.text(st.characters(categories=["Cc", "Cs", "Ll", "Nd"]), min_size=1, max_size=24)
text_ids = st.one_of(st.text(min_size=1, max_size=24), hostile_text)
feature_names = st.one_of(
    st.sampled_from([*FEATURES, "unknown", ""]), st.text(max_size=30), hostile_text
)
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
candidates = st.lists(
    st.fixed_dictionaries(
        {"doc_id": text_ids},
        optional={"features": st.dictionaries(feature_names, finite32, max_size=10)},
    ),
    min_size=1,
    max_size=60,  # the app allows 50: some requests are over the limit
    unique_by=lambda c: c["doc_id"],
)
rank_request = st.fixed_dictionaries(
    {"query_id": text_ids, "candidates": candidates},
    optional={"user_id": text_ids, "top_k": st.integers(min_value=1, max_value=100)},
)
#: Where a hostile value goes into an otherwise valid request ("" leaves it valid, and is
#: listed several times so that about a third of the requests reach the model).
PLACES = ["", "", "", "", "query_id", "user_id", "top_k", "candidates", "doc_id", "features"]
PLACES += ["value", "extra"]


def mutate(request: dict[str, Any], place: str, value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(request))
    first = body["candidates"][0]
    if place in ("query_id", "user_id", "top_k", "candidates"):
        body[place] = value
    elif place == "doc_id":
        first["doc_id"] = value
    elif place == "features":
        first["features"] = value
    elif place == "value":
        first["features"] = {**(first.get("features") or {}), "f0": value}
    elif place == "extra":
        body["unexpected"] = value
    return body


hostile_rank = st.builds(mutate, rank_request, st.sampled_from(PLACES), scalars)
clicks = st.lists(
    st.fixed_dictionaries({"doc_id": text_ids, "position": st.integers(-3, 200_000)}),
    max_size=5,
)
bodies = st.one_of(
    st.tuples(st.just("/api/v1/rank"), st.one_of(hostile_rank, scalars)),
    st.tuples(
        st.just("/api/v1/batch_rank"),
        st.one_of(
            st.fixed_dictionaries({"requests": st.lists(hostile_rank, min_size=1, max_size=5)}),
            scalars,
        ),
    ),
    st.tuples(
        st.just("/api/v1/feedback"),
        st.fixed_dictionaries(
            {"request_id": st.one_of(text_ids, scalars), "clicks": st.one_of(clicks, scalars)},
            optional={"user_id": st.one_of(text_ids, scalars)},
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
