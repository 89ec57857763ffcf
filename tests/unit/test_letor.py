"""LETOR / SVMlight reading and writing, on tiny hand-written files."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from ltr.data import letor
from ltr.data.dataset import LetorDataset
from ltr.data.letor import LetorFormatError, read_letor, read_query_file, write_letor

TINY = """\
2 qid:10 1:0.5 2:1.25 3:0 #docid = A inc = 1 prob = 0.08
0 qid:10 1:0.1 2:0 3:3 #docid=B
1 qid:7 1:0 2:0.75 3:-1 #docid = C
"""
TINY_FEATURES = np.array([[0.5, 1.25, 0], [0.1, 0, 3], [0, 0.75, -1]], dtype=np.float32)


def put(tmp_path: Path, text: str | bytes, name: str = "data.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def error_of(path: Path, **kwargs: object) -> LetorFormatError:
    with pytest.raises(LetorFormatError) as info:
        read_letor(path, **kwargs)  # type: ignore[arg-type]
    return info.value


def assert_same(a: LetorDataset, b: LetorDataset) -> None:
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.qids.tolist() == b.qids.tolist()
    assert a.doc_ids.tolist() == b.doc_ids.tolist()
    assert a.feature_names == b.feature_names


# ------------------------------------------------------------------------------ reading
def test_reader_matches_hand_parsed_values(tmp_path: Path) -> None:
    ds = read_letor(put(tmp_path, TINY))
    np.testing.assert_array_equal(ds.features, TINY_FEATURES)
    assert ds.features.dtype == np.float32
    assert ds.labels.tolist() == [2.0, 0.0, 1.0]
    assert ds.qids.tolist() == ["10", "10", "7"]
    assert ds.group_sizes.tolist() == [2, 1]
    assert ds.feature_names == ["f1", "f2", "f3"]
    assert ds.source == str(tmp_path / "data.txt")
    assert ds.missing_report.total == 0


def test_doc_ids_come_from_docid_comments_with_or_without_spaces(tmp_path: Path) -> None:
    ds = read_letor(put(tmp_path, TINY))
    assert ds.doc_ids.tolist() == ["A", "B", "C"]


def test_doc_ids_are_synthesised_as_qid_and_position_when_absent(tmp_path: Path) -> None:
    text = "1 qid:5 1:1\n0 qid:5 1:2 # no id here\n0 qid:9 1:3 #docid = X\n0 qid:9 1:4\n"
    ds = read_letor(put(tmp_path, text))
    assert ds.doc_ids.tolist() == ["5-0", "5-1", "X", "9-1"]


def test_sparse_rows_equal_the_same_dense_rows(tmp_path: Path) -> None:
    dense = "1 qid:1 1:0 2:0.5 3:0 4:2\n0 qid:1 1:1 2:0 3:0 4:0\n"
    sparse = "1 qid:1 2:0.5 4:2\n0 qid:1 1:1 4:0\n"
    a = read_letor(put(tmp_path, dense, "dense.txt"))
    b = read_letor(put(tmp_path, sparse, "sparse.txt"))
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_crlf_file_reads_the_same_as_lf(tmp_path: Path) -> None:
    a = read_letor(put(tmp_path, TINY, "lf.txt"))
    b = read_letor(put(tmp_path, TINY.replace("\n", "\r\n"), "crlf.txt"))
    assert_same(a, b)


def test_utf8_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    a = read_letor(put(tmp_path, TINY, "plain.txt"))
    assert_same(read_letor(put(tmp_path, b"\xef\xbb\xbf" + TINY.encode(), "bom.txt")), a)


def test_blank_and_comment_only_lines_are_skipped(tmp_path: Path) -> None:
    text = "# header comment\n\n" + TINY.replace("\n", "\n   \n", 1) + "\n\n"
    assert_same(read_letor(put(tmp_path, text, "b.txt")), read_letor(put(tmp_path, TINY)))


def test_non_integer_query_ids_are_kept_as_strings(tmp_path: Path) -> None:
    text = "1 qid:q0 1:1\n0 qid:q0 1:2\n1 qid:007 1:3\n"
    ds = read_letor(put(tmp_path, text))
    assert ds.qids.tolist() == ["q0", "q0", "007"]
    assert ds.features[:, 0].tolist() == [1, 2, 3]


def test_n_features_pads_narrow_files_and_rejects_wider_ones(tmp_path: Path) -> None:
    path = put(tmp_path, TINY)
    assert read_letor(path, n_features=5).features.shape == (3, 5)
    err = error_of(path, n_features=2)
    assert str(err).startswith(f"{path}:1: ")
    assert "feature index 3" in str(err)


def test_fractional_labels_are_kept(tmp_path: Path) -> None:
    ds = read_letor(put(tmp_path, "0.5 qid:1 1:1\n"))
    assert ds.labels.tolist() == [0.5]


# ------------------------------------------------------------------- missing values
NULLS = """\
0 qid:1 1:1 2:NULL 3:2
1 qid:1 1:NULL 2:NULL 3:1
0 qid:2 1:3 2:4 3:5
"""


def test_null_values_are_rejected_naming_file_line_feature_and_count(tmp_path: Path) -> None:
    path = put(tmp_path, NULLS)
    err = error_of(path)
    assert str(err).startswith(f"{path}:1: ")
    assert (err.path, err.line) == (str(path), 1)
    assert "feature 2 is NULL" in str(err)
    assert "3 NULL/NaN/inf values in 2 rows" in str(err)


def test_null_values_are_imputed_and_counted(tmp_path: Path) -> None:
    ds = read_letor(put(tmp_path, NULLS), missing="impute", impute_value=-1.0)
    expected = np.array([[1, -1, 2], [-1, -1, 1], [3, 4, 5]], dtype=np.float32)
    np.testing.assert_array_equal(ds.features, expected)
    rep = ds.missing_report
    assert (rep.policy, rep.impute_value) == ("impute", -1.0)
    assert (rep.null_values, rep.nan_values, rep.inf_values) == (3, 0, 0)
    assert rep.rows_affected == 2
    assert not np.isnan(ds.features).any()


def test_nan_and_inf_values_are_counted_separately(tmp_path: Path) -> None:
    text = "0 qid:1 1:nan 2:1\n0 qid:1 1:2 2:inf\n0 qid:1 1:-inf 2:NaN 3:NULL\n0 qid:1 1:1\n"
    path = put(tmp_path, text)
    err = error_of(path)
    assert str(err).startswith(f"{path}:1: feature 1 is nan")
    ds = read_letor(path, missing="impute")
    rep = ds.missing_report
    assert (rep.null_values, rep.nan_values, rep.inf_values) == (1, 2, 2)
    assert (rep.rows_affected, rep.total) == (3, 5)
    assert np.isfinite(ds.features).all()


def test_values_beyond_float32_range_are_an_error(tmp_path: Path) -> None:
    path = put(tmp_path, "0 qid:1 1:1\n0 qid:1 1:1e39\n")
    err = error_of(path)
    assert str(err).startswith(f"{path}:2: ") and "feature 1" in str(err)


def test_unknown_missing_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing must be"):
        read_letor(put(tmp_path, TINY), missing="drop")  # type: ignore[arg-type]


# ------------------------------------------------------------------ malformed lines
@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("abc qid:1 1:1", "label 'abc' is not a number"),
        ("-1 qid:1 1:1", "label '-1' must be a finite number >= 0"),
        ("nan qid:1 1:1", "label 'nan' must be a finite number >= 0"),
        ("1 qid:1 1:1 2", "expected <index>:<value>, got '2'"),
        ("1 qid:1 1:1 2:abc", "value 'abc' of feature 2 is not a number"),
        ("1 qid:1 x:1", "feature index 'x' is not an integer"),
        ("1 qid:1 0:1", "feature index 0 must be >= 1"),
        ("1 qid:1 -3:1", "feature index -3 must be >= 1"),
        ("1 qid:1 2:1 1:1", "feature indices must increase: 1 after 2"),
        ("1 qid:1 1:1 1:2", "feature indices must increase: 1 after 1"),
        ("1 1:1", "missing qid:"),
        ("1 qid:1 1:1 qid:2", "qid: must come right after the label"),
        ("1 qid: 1:1", "empty qid:"),
    ],
)
def test_malformed_line_is_reported_with_file_and_line(
    tmp_path: Path, bad_line: str, reason: str
) -> None:
    text = f"0 qid:1 1:0.5\n\n{bad_line} #docid = X\n0 qid:1 1:0.25\n"
    path = put(tmp_path, text)
    err = error_of(path)
    assert str(err).startswith(f"{path}:3: "), str(err)
    assert reason in str(err)
    assert err.line == 3


def test_first_bad_line_is_reported_when_several_are_bad(tmp_path: Path) -> None:
    text = "0 qid:1 1:1\n0 qid:1 1:x\n0 qid:1 0:1\n"
    assert error_of(put(tmp_path, text)).line == 2


def test_query_reappearing_after_another_is_an_error(tmp_path: Path) -> None:
    text = "0 qid:1 1:1\n0 qid:2 1:1\n0 qid:2 1:1\n0 qid:1 1:1\n"
    path = put(tmp_path, text)
    err = error_of(path)
    assert str(err).startswith(f"{path}:4: ")
    assert "contiguous" in str(err) and "line 1" in str(err)


def test_file_without_qid_needs_a_query_file(tmp_path: Path) -> None:
    path = put(tmp_path, "1 1:1\n0 1:2\n")
    err = error_of(path)
    assert str(err).startswith(f"{path}:1: ")
    assert "no qid:" in str(err) and "data.txt.query" in str(err)


def test_qid_after_rows_without_qid_is_an_error(tmp_path: Path) -> None:
    path = put(tmp_path, "1 1:1\n0 qid:3 1:2\n")
    put(tmp_path, "2\n", "data.txt.query")
    err = error_of(path)
    assert str(err).startswith(f"{path}:2: ") and "unexpected qid:" in str(err)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        read_letor(tmp_path / "nope.txt")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_file_without_rows_is_an_error(tmp_path: Path, text: str) -> None:
    err = error_of(put(tmp_path, text))
    assert "no data rows" in str(err)
    assert re.match(rf"{re.escape(str(tmp_path / 'data.txt'))}:\d+: ", str(err))


def test_format_error_is_a_value_error_that_pickles() -> None:
    err = LetorFormatError("a.txt", 7, "bad label")
    assert isinstance(err, ValueError)
    assert str(err) == "a.txt:7: bad label"
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.line, back.reason, str(back)) == ("a.txt", 7, "bad label", str(err))


# ----------------------------------------------------------------------- query files
NO_QID = "2 1:0.5 2:1\n0 1:0.1\n1 2:3\n0 1:1 2:1\n0 1:2\n"


def test_query_file_gives_groups_and_synthesised_query_ids(tmp_path: Path) -> None:
    path = put(tmp_path, NO_QID)
    groups = put(tmp_path, "2\n\n3\n", "groups.txt")
    ds = read_letor(path, query_file=groups)
    assert ds.group_sizes.tolist() == [2, 3]
    assert ds.qids.tolist() == ["q0", "q0", "q1", "q1", "q1"]
    assert ds.doc_ids.tolist() == ["q0-0", "q0-1", "q1-0", "q1-1", "q1-2"]
    assert ds.labels.tolist() == [2, 0, 1, 0, 0]


def test_dot_query_file_beside_the_data_is_used_automatically(tmp_path: Path) -> None:
    path = put(tmp_path, NO_QID)
    put(tmp_path, "1\n4\n", "data.txt.query")
    assert read_letor(path).group_sizes.tolist() == [1, 4]


def test_group_sizes_that_do_not_sum_to_the_row_count_are_an_error(tmp_path: Path) -> None:
    path = put(tmp_path, NO_QID)
    groups = put(tmp_path, "2\n2\n", "groups.txt")
    err = error_of(path, query_file=groups)
    assert str(err).startswith(f"{groups}:0: ")
    assert "sum to 4" in str(err) and "5 rows" in str(err)


@pytest.mark.parametrize(("content", "line"), [("2\nx\n", 2), ("0\n5\n", 1), ("", 1)])
def test_malformed_query_file_names_its_line(tmp_path: Path, content: str, line: int) -> None:
    groups = put(tmp_path, content, "groups.txt")
    with pytest.raises(LetorFormatError) as info:
        read_query_file(groups)
    assert info.value.line == line
    assert str(info.value).startswith(f"{groups}:{line}: ")


def test_explicit_query_file_must_agree_with_qids_in_the_file(tmp_path: Path) -> None:
    path = put(tmp_path, TINY)
    assert read_letor(path, query_file=put(tmp_path, "2\n1\n", "ok.q")).n_queries == 2
    err = error_of(path, query_file=put(tmp_path, "1\n2\n", "bad.q"))
    assert "disagree" in str(err)


# ------------------------------------------------------------------------------ writing
def random_dataset(seed: int = 0, n_queries: int = 6, n_features: int = 5) -> LetorDataset:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 8, size=n_queries)
    n = int(sizes.sum())
    features = rng.normal(size=(n, n_features)).astype(np.float32)
    features[rng.random((n, n_features)) < 0.4] = 0.0  # sparse-ish
    features[:, -1] = 0.0  # an all-zero last column must survive the sparse layout
    features[0, 0] = np.float32(1e-7)  # needs more than 6 significant digits
    features[1, 1] = np.float32(123456.789)
    return LetorDataset(
        features=features,
        labels=rng.integers(0, 5, size=n).astype(np.float32),
        qids=np.repeat([f"q{i}" for i in range(n_queries)], sizes),
        doc_ids=[f"doc-{i}" for i in range(n)],
    )


@pytest.mark.parametrize("sparse", [False, True])
def test_write_then_read_returns_the_same_dataset(tmp_path: Path, sparse: bool) -> None:
    ds = random_dataset()
    path = tmp_path / "out.txt"
    write_letor(ds, path, sparse=sparse)
    assert_same(read_letor(path), ds)
    assert not (tmp_path / "out.txt.query").exists()


@pytest.mark.parametrize("sparse", [False, True])
def test_write_with_query_file_round_trips_features_labels_and_groups(
    tmp_path: Path, sparse: bool
) -> None:
    ds = random_dataset(seed=3)
    path = tmp_path / "out.txt"
    write_letor(ds, path, sparse=sparse, query_file=True)
    text = path.read_text()
    assert "qid:" not in text and "#" not in text  # LightGBM's parser accepts neither
    sizes = read_query_file(f"{path}.query")
    assert sizes.tolist() == ds.group_sizes.tolist()
    back = read_letor(path)
    np.testing.assert_array_equal(back.features, ds.features)
    np.testing.assert_array_equal(back.labels, ds.labels)
    assert back.qids.tolist() == ds.qids.tolist()  # q0, q1, ... as generated here


def test_written_rows_have_the_documented_layout(tmp_path: Path) -> None:
    ds = read_letor(put(tmp_path, TINY))
    write_letor(ds, tmp_path / "dense.txt")
    write_letor(ds, tmp_path / "sparse.txt", sparse=True)
    assert (tmp_path / "dense.txt").read_text().splitlines()[0] == (
        "2 qid:10 1:0.5 2:1.25 3:0 #docid = A"
    )
    assert (tmp_path / "sparse.txt").read_text().splitlines()[1] == (
        "0 qid:10 1:0.1 3:3 #docid = B"
    )


def test_writer_is_lossless_for_any_float32(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    values = (rng.normal(size=(50, 4)) * 10.0 ** rng.integers(-8, 8, size=(50, 4))).astype(
        np.float32
    )
    ds = LetorDataset(features=values, labels=np.zeros(50), qids=["a"] * 50, doc_ids=range(50))
    path = tmp_path / "out.txt"
    write_letor(ds, path, precision=3)
    np.testing.assert_array_equal(read_letor(path).features, values)


def test_lightgbm_reads_the_query_file_layout(tmp_path: Path) -> None:
    lgb = pytest.importorskip("lightgbm")
    ds = random_dataset(seed=5, n_queries=8, n_features=4)
    path = tmp_path / "rank.train"
    write_letor(ds, path, query_file=True)
    data = lgb.Dataset(str(path), params={"verbose": -1, "min_data_in_bin": 1}).construct()
    assert data.num_data() == ds.n_docs
    assert np.asarray(data.get_group()).tolist() == ds.group_sizes.tolist()
    np.testing.assert_array_equal(data.get_label(), ds.labels)


def test_writer_refuses_nan_features_and_ids_with_spaces(tmp_path: Path) -> None:
    ds = random_dataset()
    ds.features[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_letor(ds, tmp_path / "x.txt")
    ds = random_dataset()
    ds.doc_ids[0] = "has space"
    with pytest.raises(ValueError, match="doc id"):
        write_letor(ds, tmp_path / "x.txt")
    assert not (tmp_path / "x.txt").exists()


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    def half_then_fail(path: Path, payload: bytes) -> None:
        path.write_bytes(payload[: len(payload) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(letor, "_write_bytes", half_then_fail)
    ds = random_dataset()
    with pytest.raises(OSError, match="disk full"):
        write_letor(ds, tmp_path / "new.txt")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    target = put(tmp_path, TINY, "old.txt")
    put(tmp_path, "3\n", "old.txt.query")

    def half_then_fail(path: Path, payload: bytes) -> None:
        path.write_bytes(payload[:10])
        raise OSError("disk full")

    monkeypatch.setattr(letor, "_write_bytes", half_then_fail)
    with pytest.raises(OSError):
        write_letor(random_dataset(), target, query_file=True)
    assert target.read_text() == TINY
    assert (tmp_path / "old.txt.query").read_text() == "3\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt", "old.txt.query"]
