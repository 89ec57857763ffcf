"""Parquet storage of a dataset: lossless round trip, documented schema, atomic write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ltr.data import parquet
from ltr.data.dataset import LetorDataset, MissingValueReport
from ltr.data.parquet import from_parquet, to_parquet
from ltr.data.synth import generate_synthetic


def sample() -> LetorDataset:
    ds = generate_synthetic(n_queries=12, n_features=7, n_doc_only=2, seed=2)
    ds.feature_names = [f"feat_{i}" for i in range(7)]
    ds.missing_report = MissingValueReport(
        policy="impute", impute_value=-1.0, null_values=3, nan_values=1, rows_affected=2
    )
    ds.features[0, 0] = np.float32(1e-30)
    ds.features[1, 1] = -0.0
    return ds


def test_round_trip_is_exact(tmp_path: Path) -> None:
    ds = sample()
    path = tmp_path / "d.parquet"
    to_parquet(ds, path)
    back = from_parquet(path)
    assert back.features.dtype == np.float32
    np.testing.assert_array_equal(back.features, ds.features)
    np.testing.assert_array_equal(back.labels, ds.labels)
    assert back.qids.tolist() == ds.qids.tolist()
    assert back.doc_ids.tolist() == ds.doc_ids.tolist()
    assert back.feature_names == ds.feature_names
    assert back.missing_report == ds.missing_report
    assert back.source == ds.source
    assert back.fingerprint() == ds.fingerprint()


def test_file_has_the_documented_columns_and_metadata(tmp_path: Path) -> None:
    ds = sample()
    path = tmp_path / "d.parquet"
    to_parquet(ds, path)
    table = pq.read_table(path)
    schema = table.schema
    assert schema.names == ["qid", "doc_id", "label", "features"]
    assert schema.field("qid").type == pa.string()
    assert schema.field("doc_id").type == pa.string()
    assert schema.field("label").type == pa.float32()
    assert schema.field("features").type == pa.list_(pa.float32())
    assert table.column("features")[4].as_py() == pytest.approx(ds.features[4].tolist())
    assert b"ltr.feature_names" in schema.metadata
    assert b"ltr.missing_report" in schema.metadata


def test_empty_and_zero_feature_datasets_round_trip(tmp_path: Path) -> None:
    empty = LetorDataset(features=np.zeros((0, 3)), labels=[], qids=[], doc_ids=[])
    to_parquet(empty, tmp_path / "e.parquet")
    back = from_parquet(tmp_path / "e.parquet")
    assert back.features.shape == (0, 3)
    narrow = LetorDataset(
        features=np.zeros((2, 0)), labels=[1, 0], qids=["a", "a"], doc_ids=["x", "y"]
    )
    to_parquet(narrow, tmp_path / "n.parquet")
    assert from_parquet(tmp_path / "n.parquet").features.shape == (2, 0)


def test_failed_write_leaves_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "d.parquet"
    to_parquet(sample(), path)
    before = path.read_bytes()

    def broken(table, where, **kw):  # type: ignore[no-untyped-def]
        Path(where).write_bytes(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        to_parquet(generate_synthetic(n_queries=3, seed=9), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.parquet"]


def test_a_file_without_the_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), path)
    with pytest.raises(ValueError, match="missing column"):
        from_parquet(path)


def test_rows_of_unequal_width_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ragged.parquet"
    table = pa.table(
        {
            "qid": ["a", "a"],
            "doc_id": ["x", "y"],
            "label": pa.array([1, 0], type=pa.float32()),
            "features": pa.array([[1.0, 2.0], [3.0]], type=pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, path)
    with pytest.raises(ValueError, match="row 1 has 1 features"):
        from_parquet(path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        from_parquet(tmp_path / "nope.parquet")
    assert parquet.FORMAT
