"""The real benchmark datasets load with the sizes their README gives.

They live beside the project (``../shared/datasets``, or ``$LTR_DATASETS_DIR``) and are
never copied into it; each test skips with a reason when its folder is absent.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from support.datasets import need

from ltr.data.dataset import LetorDataset
from ltr.data.folds import MQ2008_ROTATION, load_fold
from ltr.data.letor import LetorFormatError, read_letor

pytestmark = pytest.mark.datasets


def hand_parse(path: Path, n_lines: int, n_features: int) -> list[tuple]:
    """Independent minimal parse of the first rows: (label, qid, dense features, doc id)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        for raw in fh:
            line = raw.rstrip("\r\n")
            body, _, comment = line.partition("#")
            tokens = body.split()
            if not tokens:
                continue
            qid = tokens[1][4:] if len(tokens) > 1 and tokens[1].startswith("qid:") else None
            dense = [0.0] * n_features
            for tok in tokens[2 if qid is not None else 1 :]:
                idx, value = tok.split(":")
                dense[int(idx) - 1] = float(value)
            words = comment.replace("=", " = ").split()
            doc = words[words.index("docid") + 2] if "docid" in words else None
            rows.append((float(tokens[0]), qid, dense, doc))
            if len(rows) == n_lines:
                break
    return rows


def assert_matches_hand_parse(ds: LetorDataset, path: Path, n_lines: int = 25) -> None:
    for i, (label, qid, dense, doc) in enumerate(hand_parse(path, n_lines, ds.n_features)):
        assert ds.labels[i] == label
        if qid is not None:
            assert ds.qids[i] == qid
        if doc is not None:
            assert ds.doc_ids[i] == doc
        np.testing.assert_array_equal(ds.features[i], np.asarray(dense, dtype=np.float32))


def queries_without_relevant(ds: LetorDataset) -> int:
    return sum(int(ds.labels[rows].max() < 1) for _, rows in ds.iter_queries())


# ------------------------------------------------------------------------------ MQ2008
@pytest.fixture(scope="module")
def mq2008() -> list[LetorDataset]:
    root = need("mq2008")
    return [read_letor(root / f"S{i}.txt") for i in range(1, 6)]


def test_mq2008_has_784_queries_15211_docs_46_features(mq2008: list[LetorDataset]) -> None:
    assert [d.n_queries for d in mq2008] == [157, 157, 157, 157, 156]
    everything = LetorDataset.concat(mq2008)  # also: no query id in two subsets
    assert (everything.n_queries, everything.n_docs, everything.n_features) == (784, 15211, 46)
    assert np.unique(everything.labels).tolist() == [0, 1, 2]
    assert queries_without_relevant(everything) == 220
    assert everything.missing_report.total == 0


def test_mq2008_doc_ids_come_from_the_comments(mq2008: list[LetorDataset]) -> None:
    s1 = mq2008[0]
    assert s1.doc_ids[0] == "GX008-86-4444840"
    assert all(d.startswith("GX") for d in s1.doc_ids.tolist())


def test_mq2008_rows_match_an_independent_parse(mq2008: list[LetorDataset]) -> None:
    assert_matches_hand_parse(mq2008[0], need("mq2008") / "S1.txt", 60)
    assert_matches_hand_parse(mq2008[4], need("mq2008") / "S5.txt", 10)


def test_mq2008_folds_follow_the_readme_rotation() -> None:
    root = need("mq2008")
    readme = (root / "readme.txt").read_text().split("\n")
    for fold in range(1, 6):
        row = next(r for r in readme if r.startswith(f"Fold{fold}"))
        cells = [c.strip() for c in row.split("\t")[1:] if c.strip()]
        train = tuple(int(s.strip()[1:]) for s in cells[0].split(","))
        assert MQ2008_ROTATION[fold] == {
            "train": train,
            "vali": (int(cells[1][1:]),),
            "test": (int(cells[2][1:]),),
        }
    train, vali, test = load_fold(root, 1)
    assert train.n_docs + vali.n_docs + test.n_docs == 15211
    assert not set(train.query_ids) & set(test.query_ids)


# ------------------------------------------------------------------------------- MSLR
@pytest.mark.parametrize("name", ["msn1.fold1.train.5k.txt", "msn1.fold1.test.5k.txt"])
def test_mslr_sample_is_wide_crlf_and_has_43_queries(name: str) -> None:
    path = need("mslr-web-sample") / name
    assert b"\r\n" in path.read_bytes()[:5000]
    ds = read_letor(path)
    assert (ds.n_docs, ds.n_queries, ds.n_features) == (5000, 43, 136)
    assert np.unique(ds.labels).tolist() == [0, 1, 2, 3, 4]
    assert ds.doc_ids[0] == f"{ds.qids[0]}-0"  # no doc ids in the file: synthesised
    assert_matches_hand_parse(ds, path, 30)


# ---------------------------------------------------------------------------- LightGBM
@pytest.mark.parametrize(
    ("name", "queries", "docs"), [("rank.train", 201, 3005), ("rank.test", 50, 768)]
)
def test_lightgbm_example_loads_groups_from_query_files(name: str, queries: int, docs: int) -> None:
    path = need("lightgbm-lambdarank") / name
    ds = read_letor(path)  # <name>.query is picked up automatically
    assert (ds.n_queries, ds.n_docs, ds.n_features) == (queries, docs, 300)
    sizes = [int(s) for s in Path(f"{path}.query").read_text().split()]
    assert ds.group_sizes.tolist() == sizes
    assert ds.query_ids[:2] == ["q0", "q1"]
    assert (ds.features == 0).mean() > 0.5  # sparse
    assert_matches_hand_parse(ds, path, 20)
    explicit = read_letor(path, query_file=f"{path}.query", n_features=300)
    np.testing.assert_array_equal(explicit.features, ds.features)


# ----------------------------------------------------------------------------- OHSUMED
def test_ohsumed_fold1_has_106_queries_and_16140_docs() -> None:
    root = need("ohsumed/QueryLevelNorm/Fold1")
    parts = [read_letor(root / f"{s}.txt") for s in ("train", "vali", "test")]
    everything = LetorDataset.concat(parts)
    assert (everything.n_queries, everything.n_docs, everything.n_features) == (106, 16140, 45)
    assert np.unique(everything.labels).tolist() == [0, 1, 2]
    assert parts[2].doc_ids[0] == "57950"
    assert_matches_hand_parse(parts[2], root / "test.txt", 30)


def test_ohsumed_feature_null_is_rejected_with_a_line_number() -> None:
    path = need("ohsumed/Feature-null/Fold1/testset.txt")
    with pytest.raises(LetorFormatError) as info:
        read_letor(path)
    err = info.value
    first_null_line = next(
        n for n, line in enumerate(path.read_text().splitlines(), 1) if ":NULL" in line
    )
    assert err.line == first_null_line
    assert str(err).startswith(f"{path}:{first_null_line}: feature ")
    assert "NULL" in str(err)


def test_ohsumed_feature_null_imputes_and_counts_every_null() -> None:
    path = need("ohsumed/Feature-null/Fold1/testset.txt")
    lines = [line.split("#")[0] for line in path.read_text().splitlines()]
    nulls = sum(line.count(":NULL") for line in lines)
    rows_with_null = sum(":NULL" in line for line in lines)
    ds = read_letor(path, missing="impute", impute_value=0.0)
    rep = ds.missing_report
    assert rep.null_values == nulls > 0
    assert rep.rows_affected == rows_with_null
    assert (rep.nan_values, rep.inf_values) == (0, 0)
    assert np.isfinite(ds.features).all()
    assert (ds.n_queries, ds.n_features) == (22, 45)
    assert not math.isnan(float(ds.features.sum()))
