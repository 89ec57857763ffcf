"""Feast's Redis online-store layout, re-implemented without Feast or protobuf.

Feast 0.67 (``feast.infra.online_stores.redis``, ``feast.infra.key_encoding_utils``) stores
one Redis hash per entity key and project:

- key: ``serialize_entity_key(EntityKey, version) + project.encode("utf-8")``. With the
  default ``entity_key_serialization_version: 3`` and string join keys that is
  ``<u32 n_keys>`` then, per join key sorted by name, ``<u32 2><u32 len><utf-8 name>``, then,
  per value in the same order, ``<u32 2><u32 len><utf-8 value>`` (little-endian; 2 is
  ``ValueType.STRING``). Versions 1 and 2 omit ``n_keys`` and the name lengths.
- one field per feature: the 4 little-endian bytes of the unsigned 32-bit MurmurHash3 (seed 0)
  of ``"<feature view>:<feature>"``; its value is a serialised ``feast.types.Value``.
- one field ``"_ts:<feature view>"``: the serialised event ``Timestamp``.

With online feature-view versioning enabled in the registry config, Feast uses
``"<view>_v<N>"`` as the view name in both field names; pass that name here.

An ``Array(Float32)`` feature is ``Value{float_list_val: FloatList{val: [...]}}``: field 16
(tag bytes ``82 01``), a length, then the packed ``FloatList.val`` (tag ``0a``, a length,
``4 * dim`` little-endian float32). For a fixed ``dim`` the header is fixed, so a whole batch
decodes with one ``np.frombuffer`` (:func:`decode_float_lists`).

Tests pin every function here against Feast's own code and against values Feast wrote.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from serving.features import FeatureDecodeError

__all__ = [
    "DEFAULT_KEY_VERSION",
    "DecodedFloatLists",
    "decode_float_list",
    "decode_float_lists",
    "entity_key_prefix",
    "field_hash",
    "float_list_header",
    "murmur3_32",
    "redis_key",
    "serialize_entity_key",
    "string_value_segment",
    "timestamp_field",
]

DEFAULT_KEY_VERSION = 3
"""Feast 0.67's default (and only non-deprecated) ``entity_key_serialization_version``."""

SUPPORTED_KEY_VERSIONS = (1, 2, 3)
STRING_VALUE_TYPE = 2  # feast.types.ValueType.STRING

_U32 = struct.Struct("<I")
_TWO_U32 = struct.Struct("<II")
_MASK32 = 0xFFFFFFFF

# feast.types.Value: float_list_val = 16, null_val = 19, the other members of the ``val``
# oneof are listed so that parsing one of them is reported instead of silently skipped.
_FLOAT_LIST_FIELD = 16
_NULL_FIELD = 19
_VALUE_ONEOF_FIELDS = frozenset([*range(1, 9), *range(11, 30), *range(32, 49)])
_FLOAT_LIST_TAG = b"\x82\x01"  # (16 << 3) | 2 as a varint
_PACKED_VAL_TAG = b"\x0a"  # FloatList.val = 1, length-delimited (packed)

F32 = np.dtype("<f4")


def _check_version(version: int) -> None:
    if version not in SUPPORTED_KEY_VERSIONS:
        raise ValueError(
            f"unsupported entity_key_serialization_version {version}; "
            f"supported: {', '.join(map(str, SUPPORTED_KEY_VERSIONS))}"
        )


def entity_key_prefix(sorted_join_keys: Sequence[str], version: int) -> bytes:
    """The bytes of a serialised entity key that come before its values.

    ``sorted_join_keys`` must already be in Feast's order (sorted by name when there are
    several); equals ``feast.infra.key_encoding_utils.serialize_entity_key_prefix``.
    """
    _check_version(version)
    parts: list[bytes] = []
    if version > 2:
        parts.append(_U32.pack(len(sorted_join_keys)))
    for name in sorted_join_keys:
        encoded = name.encode("utf-8")
        if version > 2:
            parts.append(_TWO_U32.pack(STRING_VALUE_TYPE, len(encoded)))
        else:
            parts.append(_U32.pack(STRING_VALUE_TYPE))
        parts.append(encoded)
    return b"".join(parts)


def string_value_segment(value: str | bytes) -> bytes:
    """One string entity value as Feast serialises it: ``<u32 2><u32 len><utf-8 bytes>``.

    ``value`` may be given already UTF-8 encoded. The segment is the same in versions 1-3.
    """
    encoded = value.encode("utf-8") if isinstance(value, str) else value
    return _TWO_U32.pack(STRING_VALUE_TYPE, len(encoded)) + encoded


def sort_entity(join_keys: Sequence[str], values: Sequence[str]) -> tuple[list[str], list[str]]:
    """Join keys and values in Feast's order: as given for one key, else sorted by key name."""
    if len(join_keys) != len(values):
        raise ValueError(f"{len(join_keys)} join keys but {len(values)} values")
    if len(set(join_keys)) != len(join_keys):
        raise ValueError(f"duplicate join keys: {list(join_keys)}")
    pairs = sorted(zip(join_keys, values, strict=True), key=lambda kv: kv[0])
    return [k for k, _ in pairs], [v for _, v in pairs]


def serialize_entity_key(join_keys: Sequence[str], values: Sequence[str], version: int) -> bytes:
    """Byte-identical to Feast's ``serialize_entity_key(EntityKeyProto(...), version)``.

    For string-valued entities only (``ValueType.STRING``), which is all this platform uses.
    """
    keys, vals = sort_entity(join_keys, values)
    return entity_key_prefix(keys, version) + b"".join(string_value_segment(v) for v in vals)


def redis_key(project: str, join_keys: Sequence[str], values: Sequence[str], version: int) -> bytes:
    """The Redis key Feast's Redis online store uses for one entity of ``project``."""
    return serialize_entity_key(join_keys, values, version) + project.encode("utf-8")


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, unsigned (what ``mmh3.hash(data, signed=False)`` returns)."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & _MASK32
    n_blocks = len(data) // 4
    for (k,) in struct.iter_unpack("<I", data[: n_blocks * 4]):
        k = (k * c1) & _MASK32
        k = ((k << 15) | (k >> 17)) & _MASK32
        k = (k * c2) & _MASK32
        h ^= k
        h = ((h << 13) | (h >> 19)) & _MASK32
        h = (h * 5 + 0xE6546B64) & _MASK32
    tail = data[n_blocks * 4 :]
    k = 0
    if len(tail) >= 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if tail:
        k ^= tail[0]
        k = (k * c1) & _MASK32
        k = ((k << 15) | (k >> 17)) & _MASK32
        k = (k * c2) & _MASK32
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    h ^= h >> 16
    return h


def field_hash(feature_view: str, feature_name: str) -> bytes:
    """The hash field Feast stores a feature under: LE u32 murmur3 of ``"view:feature"``."""
    return _U32.pack(murmur3_32(f"{feature_view}:{feature_name}".encode()))


def timestamp_field(feature_view: str) -> bytes:
    """The hash field holding the serialised event timestamp of ``feature_view``'s row."""
    return f"_ts:{feature_view}".encode()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def float_list_header(dim: int) -> bytes:
    """The bytes before the floats in ``Value{float_list_val}`` of ``dim`` (>= 1) floats."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    payload = 4 * dim
    inner = _PACKED_VAL_TAG + _varint(payload)
    return _FLOAT_LIST_TAG + _varint(len(inner) + payload) + inner


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while pos < len(buf) and shift < 64:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise FeatureDecodeError("truncated or overlong varint")


def _fields(buf: bytes) -> list[tuple[int, int, bytes]]:
    """(field number, wire type, payload) of every field of a protobuf message."""
    out: list[tuple[int, int, bytes]] = []
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        start = pos
        if wire == 0:
            _, pos = _read_varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, start = _read_varint(buf, pos)
            pos = start + length
        elif wire == 5:
            pos += 4
        else:
            raise FeatureDecodeError(f"unsupported protobuf wire type {wire}")
        if pos > end or number == 0:
            raise FeatureDecodeError("truncated protobuf message")
        out.append((number, wire, buf[start:pos]))
    return out


def _float_list_chunks(float_list: bytes) -> list[bytes]:
    chunks: list[bytes] = []
    for number, wire, payload in _fields(float_list):
        if number != 1:
            continue  # unknown field: protobuf skips it
        if wire == 2:
            if len(payload) % 4:
                raise FeatureDecodeError("packed float list length is not a multiple of 4")
            chunks.append(payload)
        elif wire == 5:
            chunks.append(payload)
        else:
            raise FeatureDecodeError(f"FloatList.val with wire type {wire}")
    return chunks


def decode_float_list(value: bytes) -> npt.NDArray[np.float32] | None:
    """Decode a serialised ``feast.types.Value`` holding ``float_list_val``, without protobuf.

    Returns a float32 array equal to ``Value.FromString(value).float_list_val.val``, or
    ``None`` when the value is unset (``b""``) or ``null_val``. An explicitly empty list
    decodes to an empty array. Any other value kind raises :class:`FeatureDecodeError`.
    """
    if not value:
        return None
    if value.startswith(_FLOAT_LIST_TAG):
        # Fast path: exactly one canonical float_list_val field.
        try:
            inner_len, pos = _read_varint(value, 2)
            if pos + inner_len == len(value):
                if inner_len == 0:
                    return np.empty(0, dtype=np.float32)
                if value[pos : pos + 1] == _PACKED_VAL_TAG:
                    n_bytes, start = _read_varint(value, pos + 1)
                    if start + n_bytes == len(value) and n_bytes % 4 == 0:
                        return np.frombuffer(value, dtype=F32, offset=start).astype(np.float32)
        except FeatureDecodeError:
            pass
    # General path: follow protobuf's rules (oneof: last member wins; repeats of a message
    # field merge, so their float lists concatenate; unknown fields are skipped).
    kind: int | None = None
    chunks: list[bytes] = []
    for number, wire, payload in _fields(value):
        if number == _FLOAT_LIST_FIELD:
            if wire != 2:
                raise FeatureDecodeError(f"float_list_val with wire type {wire}")
            if kind != _FLOAT_LIST_FIELD:
                chunks = []
            kind = _FLOAT_LIST_FIELD
            chunks.extend(_float_list_chunks(payload))
        elif number in _VALUE_ONEOF_FIELDS:
            kind = number
            chunks = []
    if kind is None or kind == _NULL_FIELD:
        return None
    if kind != _FLOAT_LIST_FIELD:
        raise FeatureDecodeError(f"value holds Value field {kind}, expected float_list_val (16)")
    return np.frombuffer(b"".join(chunks), dtype=F32).astype(np.float32)


@dataclass(frozen=True)
class DecodedFloatLists:
    """A batch of decoded vectors.

    vectors: float32 [n, dim], NaN rows where ``found`` is False.
    found: bool [n], True where a ``dim``-long float list was stored.
    invalid: rows that held something other than a ``dim``-long float list (also not found).
    """

    vectors: npt.NDArray[np.float32]
    found: npt.NDArray[np.bool_]
    invalid: int


def decode_float_lists(values: Sequence[bytes | None], dim: int) -> DecodedFloatLists:
    """Decode many ``Value{float_list_val}`` of ``dim`` floats at once.

    ``None`` (absent field) and unset/null values are missing rows. Values whose length and
    header match the canonical encoding (all that Feast writes) are decoded together with one
    ``np.frombuffer``; any other value goes through :func:`decode_float_list`.
    """
    header = float_list_header(dim)
    h_len = len(header)
    size = h_len + 4 * dim
    n = len(values)
    vectors = np.full((n, dim), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=np.bool_)
    fast_rows: list[int] = []
    fast_values: list[bytes] = []
    slow_rows: list[int] = []
    for i, value in enumerate(values):
        if value is None:
            continue
        if len(value) == size:
            fast_rows.append(i)
            fast_values.append(value)
        else:
            slow_rows.append(i)
    if fast_rows:
        joined = b"".join(fast_values)
        k = len(fast_rows)
        raw = np.frombuffer(joined, dtype=np.uint8).reshape(k, size)
        ok = (raw[:, :h_len] == np.frombuffer(header, dtype=np.uint8)).all(axis=1)
        floats = np.ndarray((k, dim), dtype=F32, buffer=joined, offset=h_len, strides=(size, 4))
        rows = np.asarray(fast_rows, dtype=np.intp)
        if ok.all():
            vectors[rows] = floats
            found[rows] = True
        else:
            vectors[rows[ok]] = floats[ok]
            found[rows[ok]] = True
            slow_rows.extend(rows[~ok].tolist())
    invalid = 0
    for i in slow_rows:
        raw_value = values[i]
        if raw_value is None:
            continue
        try:
            decoded = decode_float_list(raw_value)
        except FeatureDecodeError:
            invalid += 1
            continue
        if decoded is None:
            continue
        if decoded.shape[0] != dim:
            invalid += 1
            continue
        vectors[i] = decoded
        found[i] = True
    return DecodedFloatLists(vectors=vectors, found=found, invalid=invalid)
