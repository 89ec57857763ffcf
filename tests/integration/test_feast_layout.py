"""``serving.features.feast_layout`` pinned against Feast 0.67's own code and Redis writes.

Every expectation comes from Feast (its key encoder, its hash helper, the hash fields its Redis
store writes) or from protobuf (``Value.FromString``), never from the code under test.
"""

from __future__ import annotations

import os
import struct
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
import redis

from serving.features import FeatureDecodeError
from serving.features.feast_layout import (
    DEFAULT_KEY_VERSION,
    decode_float_list,
    decode_float_lists,
    entity_key_prefix,
    field_hash,
    float_list_header,
    murmur3_32,
    redis_key,
    serialize_entity_key,
    timestamp_field,
)

pytestmark = pytest.mark.integration

REDIS = os.environ.get("LTR_TEST_REDIS", "127.0.0.1:6379,db=6")

# Join-key sets: the platform's two, one and three keys, names out of order, unicode names.
JOIN_KEY_SETS = [
    ("doc_id",),
    ("query_id",),
    ("query_id", "doc_id"),
    ("doc_id", "query_id"),
    ("zeta", "alpha", "mid"),
    ("clé", "Key", "_k"),
]


def random_strings(rng: np.random.Generator, n: int) -> list[str]:
    """Strings that stress the encoder: empty, ASCII, accents, CJK, emoji, NUL, very long."""
    alphabets = [
        "abcdefghijklmnopqrstuvwxyz0123456789-_:/ ",
        "éèàüößçñØ",
        "中文検索한국어",
        "😀🚀𝄞",
        "\x00\t\n\x7f",
    ]
    fixed = ["", " ", "0", "\x00", "a" * 5000, "é" * 3000, "😀" * 700, "doc:1/ü"]
    out = list(fixed)
    while len(out) < n:
        chars = "".join(alphabets[: int(rng.integers(1, len(alphabets) + 1))])
        length = int(rng.choice([1, 2, 3, 7, 16, 64, 255, 256, 1000]))
        out.append("".join(chars[int(i)] for i in rng.integers(0, len(chars), size=length)))
    return out


@pytest.fixture(scope="module")
def feast_ref() -> SimpleNamespace:
    """Feast's own encoders and protos, imported once (``import feast`` takes seconds)."""
    from feast.infra import key_encoding_utils
    from feast.infra.online_stores import helpers
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import DoubleList, FloatList, Null, Value
    from feast.repo_config import RepoConfig

    return SimpleNamespace(
        serialize_entity_key=key_encoding_utils.serialize_entity_key,
        serialize_entity_key_prefix=key_encoding_utils.serialize_entity_key_prefix,
        redis_key=helpers._redis_key,
        mmh3=helpers._mmh3,
        EntityKey=EntityKey,
        Value=Value,
        FloatList=FloatList,
        DoubleList=DoubleList,
        Null=Null,
        default_version=RepoConfig.model_fields["entity_key_serialization_version"].default,
    )


def feast_entity_key(ref: SimpleNamespace, join_keys, values):
    return ref.EntityKey(
        join_keys=list(join_keys), entity_values=[ref.Value(string_val=v) for v in values]
    )


# --- keys --------------------------------------------------------------------------------------


def test_default_key_version_is_feasts_default(feast_ref):
    assert DEFAULT_KEY_VERSION == feast_ref.default_version == 3


@pytest.mark.parametrize("version", [3, 2])
@pytest.mark.parametrize("join_keys", JOIN_KEY_SETS, ids="-".join)
def test_serialize_entity_key_is_byte_identical_to_feast(feast_ref, join_keys, version):
    rng = np.random.default_rng(len(join_keys) * 10 + version)
    strings = random_strings(rng, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Feast warns that versions < 3 are deprecated
        for i in range(len(strings)):
            values = [strings[(i + j * 7) % len(strings)] for j in range(len(join_keys))]
            expected = feast_ref.serialize_entity_key(
                feast_entity_key(feast_ref, join_keys, values), version
            )
            assert serialize_entity_key(join_keys, values, version) == expected, values


@pytest.mark.parametrize("join_keys", JOIN_KEY_SETS, ids="-".join)
def test_redis_key_is_byte_identical_to_feasts_redis_key(feast_ref, join_keys):
    rng = np.random.default_rng(7)
    strings = random_strings(rng, 40)
    projects = ["ltr", "ltr_test_1", "Proj9"]
    for i, value in enumerate(strings):
        values = [value, *strings[i + 1 : i + len(join_keys)]]
        values += ["x"] * (len(join_keys) - len(values))
        project = projects[i % len(projects)]
        expected = feast_ref.redis_key(
            project,
            feast_entity_key(feast_ref, join_keys, values),
            entity_key_serialization_version=3,
        )
        assert redis_key(project, join_keys, values, 3) == expected


@pytest.mark.parametrize("join_keys", JOIN_KEY_SETS, ids="-".join)
def test_entity_key_prefix_equals_feasts_prefix_encoding(feast_ref, join_keys):
    assert entity_key_prefix(sorted(join_keys), 3) == feast_ref.serialize_entity_key_prefix(
        list(join_keys), 3
    )


def test_unknown_key_versions_and_mismatched_keys_are_refused():
    with pytest.raises(ValueError, match="entity_key_serialization_version"):
        serialize_entity_key(["doc_id"], ["d"], 4)
    with pytest.raises(ValueError, match="join keys"):
        serialize_entity_key(["doc_id", "query_id"], ["d"], 3)
    with pytest.raises(ValueError, match="duplicate"):
        serialize_entity_key(["doc_id", "doc_id"], ["a", "b"], 3)


# --- hash fields -------------------------------------------------------------------------------


def test_murmur3_equals_the_mmh3_package_on_random_inputs():
    import mmh3

    rng = np.random.default_rng(3)
    for text in random_strings(rng, 300):
        assert murmur3_32(text.encode()) == mmh3.hash(text, signed=False), text
    for length in range(0, 40):
        data = rng.integers(0, 256, size=length, dtype=np.uint8).tobytes()
        assert murmur3_32(data) == mmh3.hash(data, signed=False)
        assert murmur3_32(data, seed=12345) == mmh3.hash(data, seed=12345, signed=False)


def test_field_hash_equals_feasts_mmh3_helper(feast_ref):
    rng = np.random.default_rng(5)
    names = ["query_doc_features", "doc_features", "v", *random_strings(rng, 30)]
    for view in names:
        for feature in ["features", "f1", "é"]:
            assert field_hash(view, feature) == feast_ref.mmh3(f"{view}:{feature}")


@pytest.fixture(scope="module")
def redis_db6() -> redis.Redis:
    host_port, _, db = REDIS.partition(",db=")
    host, port = host_port.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port), db=int(db or 0), socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS}: {exc}")
    return client


def test_keys_and_fields_are_exactly_what_feasts_redis_store_writes(feast_ref, redis_db6, tmp_path):
    """Write through Feast's RedisOnlineStore, then find the data where our layout says."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.repo_config import RepoConfig
    from feast.types import Array, Float32

    project = f"ltrlayout_{uuid.uuid4().hex[:10]}"
    config = RepoConfig(
        project=project,
        registry=str(tmp_path / "registry.db"),
        provider="local",
        online_store={"type": "redis", "connection_string": REDIS},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
    )
    query = Entity(name="query", join_keys=["query_id"], value_type=ValueType.STRING)
    document = Entity(name="document", join_keys=["doc_id"], value_type=ValueType.STRING)
    views = {
        "query_doc_features": ((query, document), 40),
        "doc_features": ((document,), 6),
    }
    store = RedisOnlineStore()
    rng = np.random.default_rng(11)
    when = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    try:
        for name, (entities, dim) in views.items():
            view = FeatureView(
                name=name,
                entities=list(entities),
                schema=[Field(name="features", dtype=Array(Float32))],
                source=FileSource(path=str(tmp_path / "x.parquet"), timestamp_field="ts"),
                ttl=timedelta(0),
            )
            join_keys = [e.join_key for e in entities]
            rows = []
            for i in range(5):
                values = [f"q-{i}", f"dok-ü{i}"][-len(join_keys) :]
                vec = rng.standard_normal(dim).astype(np.float32)
                proto = feast_ref.Value(float_list_val=feast_ref.FloatList(val=vec.tolist()))
                rows.append((feast_entity_key(feast_ref, join_keys, values), {"features": proto}))
            store.online_write_batch(config, view, [(ek, v, when, None) for ek, v in rows], None)
            for ek, stored in rows:
                key = redis_key(
                    project, list(ek.join_keys), [v.string_val for v in ek.entity_values], 3
                )
                fields = set(redis_db6.hkeys(key))
                assert fields == {field_hash(name, "features"), timestamp_field(name)}
                raw = redis_db6.hget(key, field_hash(name, "features"))
                assert raw == stored["features"].SerializeToString()
                decoded = decode_float_list(raw)
                assert decoded is not None
                assert np.array_equal(
                    decoded, np.asarray(stored["features"].float_list_val.val, np.float32)
                )
    finally:
        keys = list(redis_db6.scan_iter(match=f"*{project}".encode(), count=1000))
        if keys:
            redis_db6.delete(*keys)


# --- values ------------------------------------------------------------------------------------


SPECIAL_FLOATS = np.array(
    [0.0, -0.0, 1e-45, -1e-40, 3.4e38, -3.4e38, np.inf, -np.inf, np.nan, 1.0, -1.5],
    dtype=np.float32,
)


def bits(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("dim", [1, 6, 31, 32, 40, 46, 136, 4095, 4096, 70000])
def test_decode_float_list_equals_protobuf_bit_for_bit(feast_ref, dim):
    rng = np.random.default_rng(dim)
    vec = rng.standard_normal(dim).astype(np.float32)
    vec[: min(dim, len(SPECIAL_FLOATS))] = SPECIAL_FLOATS[: min(dim, len(SPECIAL_FLOATS))]
    raw = feast_ref.Value(float_list_val=feast_ref.FloatList(val=vec.tolist())).SerializeToString()
    expected = np.asarray(feast_ref.Value.FromString(raw).float_list_val.val, dtype=np.float32)
    decoded = decode_float_list(raw)
    assert decoded is not None and decoded.dtype == np.float32
    assert np.array_equal(bits(decoded), bits(expected))
    assert raw.startswith(float_list_header(dim))
    assert len(raw) == len(float_list_header(dim)) + 4 * dim


def test_unset_and_null_values_decode_to_none_and_an_empty_list_to_an_empty_array(feast_ref):
    assert decode_float_list(feast_ref.Value().SerializeToString()) is None
    null = feast_ref.Value(null_val=feast_ref.Null.NULL).SerializeToString()
    assert decode_float_list(null) is None
    empty = feast_ref.Value(float_list_val=feast_ref.FloatList(val=[])).SerializeToString()
    decoded = decode_float_list(empty)
    assert decoded is not None and decoded.shape == (0,)


def test_non_canonical_encodings_decode_as_protobuf_parses_them(feast_ref):
    Value, FloatList = feast_ref.Value, feast_ref.FloatList
    a = Value(float_list_val=FloatList(val=[1.0, 2.0])).SerializeToString()
    b = Value(float_list_val=FloatList(val=[3.0])).SerializeToString()
    null = Value(null_val=feast_ref.Null.NULL).SerializeToString()
    text = Value(string_val="x").SerializeToString()
    # Unpacked repeated floats: FloatList{ 0d <f32> 0d <f32> }.
    unpacked_inner = b"".join(b"\x0d" + struct.pack("<f", x) for x in (4.0, 5.0, 6.0))
    unpacked = b"\x82\x01" + bytes([len(unpacked_inner)]) + unpacked_inner
    # An unknown field inside FloatList and one inside Value are skipped.
    unknown_inner = b"\x10\x05" + b"\x0a\x04" + struct.pack("<f", 7.0)
    with_unknown = b"\xf8\x07\x01" + b"\x82\x01" + bytes([len(unknown_inner)]) + unknown_inner
    for raw in [a + b, b + a, unpacked, with_unknown, text + a, null + a, a + null]:
        expected_proto = Value.FromString(raw)
        decoded = decode_float_list(raw)
        if expected_proto.WhichOneof("val") == "float_list_val":
            assert decoded is not None
            assert np.array_equal(
                decoded, np.asarray(expected_proto.float_list_val.val, np.float32)
            )
        else:
            assert decoded is None


def test_other_value_kinds_and_corrupt_bytes_raise_feature_decode_error(feast_ref):
    Value = feast_ref.Value
    doubles = Value(double_list_val=feast_ref.DoubleList(val=[1.0])).SerializeToString()
    good = Value(float_list_val=feast_ref.FloatList(val=[1.0, 2.0])).SerializeToString()
    for raw in [
        doubles,
        Value(string_val="1.0").SerializeToString(),
        Value(float_val=1.0).SerializeToString(),
        good + Value(int64_val=3).SerializeToString(),
    ]:
        with pytest.raises(FeatureDecodeError):
            decode_float_list(raw)
    for corrupt in [good[:-1], good[:3], b"\x82", b"\x82\x01\xff", b"\x87\x01"]:
        with pytest.raises(FeatureDecodeError):
            decode_float_list(corrupt)


def test_batch_decode_matches_one_by_one_decoding_and_counts_invalid_rows(feast_ref):
    Value, FloatList = feast_ref.Value, feast_ref.FloatList
    dim = 46
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((8, dim)).astype(np.float32)
    canon = [Value(float_list_val=FloatList(val=v.tolist())).SerializeToString() for v in vecs]
    half = Value(float_list_val=FloatList(val=vecs[5, :23].tolist())).SerializeToString()
    half2 = Value(float_list_val=FloatList(val=vecs[5, 23:].tolist())).SerializeToString()
    same_size_other_kind = b"\x8a\x01" + canon[0][2:]  # bool_list_val tag, same length
    values = [
        canon[0],
        None,  # entity absent
        Value().SerializeToString(),  # unset
        canon[1],
        Value(float_list_val=FloatList(val=vecs[2, :10].tolist())).SerializeToString(),  # short
        half + half2,  # merged: a full vector, non-canonical bytes
        same_size_other_kind,
        Value(string_val="x").SerializeToString(),
        canon[7],
    ]
    out = decode_float_lists(values, dim)
    assert out.vectors.shape == (len(values), dim) and out.vectors.dtype == np.float32
    assert out.found.tolist() == [True, False, False, True, False, True, False, False, True]
    assert out.invalid == 3  # the short list, the other kind and the string
    for row, vec in [(0, vecs[0]), (3, vecs[1]), (5, vecs[5]), (8, vecs[7])]:
        assert np.array_equal(out.vectors[row], vec)
    assert np.isnan(out.vectors[~out.found]).all()


def test_batch_decode_of_nothing_found_is_all_nan():
    out = decode_float_lists([None, None], 3)
    assert out.found.tolist() == [False, False] and np.isnan(out.vectors).all()
    assert decode_float_lists([], 3).vectors.shape == (0, 3)
