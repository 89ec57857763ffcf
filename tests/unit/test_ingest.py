"""Offline-store ingestion and the feature-store contract helpers; no Feast, no services."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ltr.cli.main import app
from ltr.data.dataset import LetorDataset
from ltr.features.definitions import (
    DOC_VIEW,
    QUERY_DOC_VIEW,
    feature_schema,
    redis_key,
    split_feature_columns,
)
from ltr.features.ingest import IngestError, ingest_letor, parse_feature_numbers
from ltr.features.store import redis_connection_string

T1 = datetime(2024, 1, 1, tzinfo=UTC)


def tiny(doc_values: dict[str, list[float]] | None = None) -> LetorDataset:
    """Two queries, five rows, 4 features; the last two depend on the document only."""
    docs = doc_values or {"a": [10.0, 11.0], "b": [20.0, 21.0], "c": [30.0, 31.0]}
    rows = [
        ("q1", "a", 1.0),
        ("q1", "b", 2.0),
        ("q1", "c", 3.0),
        ("q2", "a", 4.0),
        ("q2", "c", 5.0),
    ]
    feats = [[x, -x, *docs[d]] for _, d, x in rows]
    return LetorDataset(
        features=np.array(feats, dtype=np.float32),
        labels=np.array([1, 0, 2, 0, 1], dtype=np.float32),
        qids=np.array([q for q, _, _ in rows], dtype=object),
        doc_ids=np.array([d for _, d, _ in rows], dtype=object),
        source="tiny",
    )


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------ contract helpers
def test_feature_numbers_are_one_based_ranges_and_lists() -> None:
    assert parse_feature_numbers("41-46") == [40, 41, 42, 43, 44, 45]
    assert parse_feature_numbers("1, 3,5-6") == [0, 2, 4, 5]
    assert parse_feature_numbers("") == [] and parse_feature_numbers("none") == []
    for bad in ("0", "6-4", "a-b", "1;2"):
        with pytest.raises(ValueError):
            parse_feature_numbers(bad)


def test_split_feature_columns_keeps_ascending_order_in_each_view() -> None:
    assert split_feature_columns(6, [5, 1]) == ([0, 2, 3, 4], [1, 5])
    assert split_feature_columns(3, []) == ([0, 1, 2], [])
    with pytest.raises(ValueError, match="out of range"):
        split_feature_columns(3, [3])
    with pytest.raises(ValueError, match="twice"):
        split_feature_columns(3, [1, 1])


def test_feature_schema_of_mq2008_reads_41_to_46_from_the_document_view() -> None:
    names = [f"f{i}" for i in range(1, 47)]
    schema = feature_schema(names, range(40, 46))
    assert len(schema) == 46
    assert schema[0] == {"name": "f1", "source": QUERY_DOC_VIEW, "index": 0, "default": 0.0}
    assert schema[39] == {"name": "f40", "source": QUERY_DOC_VIEW, "index": 39, "default": 0.0}
    assert schema[40] == {"name": "f41", "source": DOC_VIEW, "index": 0, "default": 0.0}
    assert schema[45] == {"name": "f46", "source": DOC_VIEW, "index": 5, "default": 0.0}


def test_feature_schema_indexes_interleaved_columns_within_their_view() -> None:
    schema = feature_schema(["a", "b", "c", "d"], [1, 3], default=-1.0)
    assert [(e["source"], e["index"]) for e in schema] == [
        (QUERY_DOC_VIEW, 0),
        (DOC_VIEW, 0),
        (QUERY_DOC_VIEW, 1),
        (DOC_VIEW, 1),
    ]
    assert all(e["default"] == -1.0 for e in schema)


def test_redis_url_becomes_feasts_connection_string() -> None:
    assert redis_connection_string("redis://127.0.0.1:6379/5") == "127.0.0.1:6379,db=5"
    assert redis_connection_string("redis://cache") == "cache:6379,db=0"
    assert (
        redis_connection_string("rediss://u:p%40ss@h:6380/2")
        == "h:6380,db=2,username=u,password=p@ss,ssl=true"
    )
    assert redis_connection_string("h:1,db=3") == "h:1,db=3"
    with pytest.raises(ValueError):
        redis_connection_string("http://h:1/0")


def test_redis_key_follows_feast_serialization_v3_byte_by_byte() -> None:
    # Written out by hand from Feast's serialize_entity_key (v3): count, sorted names, values.
    expected = (
        struct.pack("<I", 2)
        + struct.pack("<II", 2, 6)
        + b"doc_id"
        + struct.pack("<II", 2, 8)
        + b"query_id"
        + struct.pack("<II", 2, 2)
        + b"d7"
        + struct.pack("<II", 2, 3)
        + b"q10"
        + b"ltr"
    )
    assert redis_key("ltr", {"query_id": "q10", "doc_id": "d7"}) == expected


# ------------------------------------------------------------------------- ingestion
def test_ingest_writes_both_tables_with_feast_columns(tmp_path: Path) -> None:
    ds = tiny()
    result = ingest_letor(ds, tmp_path, doc_feature_indices=[2, 3], event_timestamp=T1)
    qd = pq.read_table(result["paths"][QUERY_DOC_VIEW])
    doc = pq.read_table(result["paths"][DOC_VIEW])
    assert qd.column_names == [
        "query_id",
        "doc_id",
        "features",
        "event_timestamp",
        "created_timestamp",
    ]
    assert qd.schema.field("features").type == pa.list_(pa.float32())
    assert qd.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    np.testing.assert_array_equal(np.array(qd.column("features").to_pylist()), ds.features[:, :2])
    assert doc.column("doc_id").to_pylist() == ["a", "b", "c"]  # one row per document
    assert doc.column("features").to_pylist() == [[10.0, 11.0], [20.0, 21.0], [30.0, 31.0]]
    assert set(qd.column("event_timestamp").to_pylist()) == {T1}
    assert (result["query_doc_rows"], result["doc_rows"], result["replaced"]) == (5, 3, False)
    layout = json.loads((tmp_path / "layout.json").read_text())
    assert layout[QUERY_DOC_VIEW] == [0, 1] and layout[DOC_VIEW] == [2, 3]


def test_reingesting_the_same_data_for_the_same_time_leaves_identical_tables(
    tmp_path: Path,
) -> None:
    ingest_letor(tiny(), tmp_path, doc_feature_indices=[2, 3], event_timestamp=T1)
    first = folder_digest(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = ingest_letor(tiny(), tmp_path, doc_feature_indices=[2, 3], event_timestamp=T1)
    assert again["replaced"] is True and again["unchanged"] is True
    assert again["changed_rows"] == {QUERY_DOC_VIEW: 0, DOC_VIEW: 0}
    assert folder_digest(tmp_path) == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes
    assert len(first) == 3  # layout.json + one file per table


def created_by_key(path: str) -> dict[tuple[str, ...], datetime]:
    table = pq.read_table(path)
    keys = [c for c in ("query_id", "doc_id") if c in table.column_names]
    return {tuple(row[k] for k in keys): row["created_timestamp"] for row in table.to_pylist()}


def test_a_corrected_row_gets_a_later_created_time_and_unchanged_rows_keep_theirs(
    tmp_path: Path,
) -> None:
    ingested = T1 + timedelta(days=3, microseconds=250_000)
    first = ingest_letor(
        tiny(), tmp_path, doc_feature_indices=[2, 3], event_timestamp=T1, created_timestamp=ingested
    )
    stamp = T1 + timedelta(days=3)  # whole seconds: what Feast's SQLite online store keeps
    assert first["created_timestamp"] == stamp.isoformat()
    assert first["changed_rows"] == {QUERY_DOC_VIEW: 5, DOC_VIEW: 3}

    corrected = tiny({"a": [10.0, 99.0], "b": [20.0, 21.0], "c": [30.0, 31.0]})
    corrected.features[1, 0] = 7.0  # the pair (q1, b)
    # even when asked for the same ingestion time, a correction is at least a second later
    second = ingest_letor(
        corrected,
        tmp_path,
        doc_feature_indices=[2, 3],
        event_timestamp=T1,
        created_timestamp=ingested,
    )
    later = stamp + timedelta(seconds=1)
    assert second["created_timestamp"] == later.isoformat()
    assert second["changed_rows"] == {QUERY_DOC_VIEW: 1, DOC_VIEW: 1}
    assert second["unchanged"] is False
    assert created_by_key(second["paths"][DOC_VIEW]) == {
        ("a",): later,
        ("b",): stamp,
        ("c",): stamp,
    }
    assert created_by_key(second["paths"][QUERY_DOC_VIEW]) == {
        ("q1", "a"): stamp,
        ("q1", "b"): later,
        ("q1", "c"): stamp,
        ("q2", "a"): stamp,
        ("q2", "c"): stamp,
    }
    event = pq.read_table(second["paths"][QUERY_DOC_VIEW]).column("event_timestamp")
    assert set(event.to_pylist()) == {T1}  # point-in-time joins still see the day


def test_a_later_timestamp_adds_a_partition_and_keeps_the_earlier_one(tmp_path: Path) -> None:
    ingest_letor(tiny(), tmp_path, doc_feature_indices=[2, 3], event_timestamp=T1)
    ingest_letor(
        tiny(), tmp_path, doc_feature_indices=[2, 3], event_timestamp=T1 + timedelta(days=1)
    )
    table = pq.read_table(tmp_path / "query_doc_features.parquet")
    assert table.num_rows == 10
    assert len(set(table.column("event_timestamp").to_pylist())) == 2


def test_a_naive_timestamp_is_taken_as_utc(tmp_path: Path) -> None:
    result = ingest_letor(
        tiny(), tmp_path, doc_feature_indices=[], event_timestamp=datetime(2024, 1, 1)
    )
    assert result["event_timestamp"] == "2024-01-01T00:00:00+00:00"


def test_document_features_that_differ_between_queries_are_rejected_by_name(
    tmp_path: Path,
) -> None:
    ds = tiny()
    ds.features[3, 2] = 99.0  # doc "a" in q2 disagrees with doc "a" in q1
    with pytest.raises(IngestError) as err:
        ingest_letor(ds, tmp_path, doc_feature_indices=[2, 3], event_timestamp=T1)
    message = str(err.value)
    assert "document a" in message and "rows 1 (query q1) and 4 (query q2)" in message
    assert "feature 3" in message
    assert not any(tmp_path.rglob("*.parquet"))  # nothing half-written


def test_a_document_listed_twice_in_a_query_is_rejected(tmp_path: Path) -> None:
    ds = tiny()
    ds.doc_ids[1] = "a"
    with pytest.raises(
        IngestError, match=r"query q1 lists document a more than once \(rows 1 and 2\)"
    ):
        ingest_letor(ds, tmp_path, doc_feature_indices=[], event_timestamp=T1)


def test_non_finite_features_are_rejected(tmp_path: Path) -> None:
    ds = tiny()
    ds.features[4, 1] = np.nan
    with pytest.raises(IngestError, match=r"row 5 .* feature 2"):
        ingest_letor(ds, tmp_path, doc_feature_indices=[], event_timestamp=T1)


def test_a_different_layout_is_refused_once_the_store_has_one(tmp_path: Path) -> None:
    ingest_letor(tiny(), tmp_path, doc_feature_indices=[2, 3], event_timestamp=T1)
    with pytest.raises(IngestError, match="layout"):
        ingest_letor(tiny(), tmp_path, doc_feature_indices=[3], event_timestamp=T1)


def test_two_sources_at_the_same_time_must_agree_on_shared_documents(tmp_path: Path) -> None:
    ingest_letor(tiny(), tmp_path, doc_feature_indices=[2, 3], event_timestamp=T1, name="one")
    other = tiny({"a": [10.0, 11.0], "b": [20.0, 21.0], "c": [30.0, 32.0]})
    with pytest.raises(IngestError, match=r"document c .* same event time"):
        ingest_letor(other, tmp_path, doc_feature_indices=[2, 3], event_timestamp=T1, name="two")
    agreeing = ingest_letor(
        tiny(), tmp_path, doc_feature_indices=[2, 3], event_timestamp=T1, name="two"
    )
    assert agreeing["replaced"] is False


# ------------------------------------------------------------------------------- CLI
def test_cli_ingest_writes_under_ltr_home_and_prints_json(tmp_path: Path, ltr_home: Path) -> None:
    from ltr.data.letor import write_letor

    src = tmp_path / "tiny.txt"
    write_letor(tiny(), src)
    args = ["data", "ingest", str(src), "--doc-features", "3-4", "--timestamp", "2024-01-01T00:00"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["doc_feature_numbers"] == [3, 4] and out["event_timestamp"].startswith("2024-01-01")
    assert Path(out["paths"][DOC_VIEW]).is_relative_to(ltr_home / "feast" / "data")


def test_cli_ingest_exits_2_with_a_one_line_reason(tmp_path: Path, ltr_home: Path) -> None:
    from ltr.data.letor import write_letor

    src = tmp_path / "tiny.txt"
    write_letor(tiny(), src)
    for extra in (["--doc-features", "9"], ["--doc-features", "x"], ["--timestamp", "soon"]):
        result = CliRunner().invoke(app, ["data", "ingest", str(src), *extra])
        assert result.exit_code == 2
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_feature_modules_do_not_import_feast() -> None:
    code = (
        "import sys, ltr.features.definitions, ltr.features.ingest, ltr.features.store, "
        "ltr.features.training_data, ltr.features.offline_store, ltr.cli.features; "
        "print('feast' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
