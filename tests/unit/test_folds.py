"""Fold rotation over subsets S1..S5, on tiny generated subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ltr.data.folds import MQ2008_ROTATION, fold_files, load_fold, rotation, write_folds
from ltr.data.letor import LetorFormatError, read_letor


def make_subsets(root: Path, n: int = 5, *, with_null: bool = False) -> None:
    """S<i>.txt with two queries each: qids 10*i and 10*i + 1, feature 1 = subset number."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        value = "NULL" if with_null and i == 2 else "0.5"
        rows = [
            f"1 qid:{10 * i} 1:{i} 2:{value} #docid = s{i}a",
            f"0 qid:{10 * i} 1:{i} 2:0.25 #docid = s{i}b",
            f"2 qid:{10 * i + 1} 1:{i} 2:1 #docid = s{i}c",
        ]
        (root / f"S{i}.txt").write_text("\n".join(rows) + "\n")


def test_mq2008_rotation_matches_the_readme() -> None:
    assert MQ2008_ROTATION[1] == {"train": (1, 2, 3), "vali": (4,), "test": (5,)}
    assert MQ2008_ROTATION[2] == {"train": (2, 3, 4), "vali": (5,), "test": (1,)}
    assert MQ2008_ROTATION[5] == {"train": (5, 1, 2), "vali": (3,), "test": (4,)}
    for fold in range(1, 6):
        assert rotation(fold) == MQ2008_ROTATION[fold]


def test_every_subset_is_tested_once_and_validated_once() -> None:
    tests = sorted(MQ2008_ROTATION[f]["test"][0] for f in range(1, 6))
    valis = sorted(MQ2008_ROTATION[f]["vali"][0] for f in range(1, 6))
    assert tests == valis == [1, 2, 3, 4, 5]


def test_fold_files_lists_paths_in_rotation_order(tmp_path: Path) -> None:
    make_subsets(tmp_path)
    files = fold_files(tmp_path, 4)
    assert [p.name for p in files["train"]] == ["S4.txt", "S5.txt", "S1.txt"]
    assert [p.name for p in files["vali"]] == ["S2.txt"]
    assert [p.name for p in files["test"]] == ["S3.txt"]


def test_missing_subset_files_are_named(tmp_path: Path) -> None:
    make_subsets(tmp_path)
    (tmp_path / "S3.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"S3\.txt"):
        fold_files(tmp_path, 1)


@pytest.mark.parametrize(("fold", "n"), [(0, 5), (6, 5), (1, 2)])
def test_fold_number_out_of_range_is_refused(fold: int, n: int) -> None:
    with pytest.raises(ValueError):
        rotation(fold, n)


def test_load_fold_concatenates_train_subsets_in_order(tmp_path: Path) -> None:
    make_subsets(tmp_path)
    train, vali, test = load_fold(tmp_path, 2)
    assert train.query_ids == ["20", "21", "30", "31", "40", "41"]
    assert np.unique(train.features[:, 0]).tolist() == [2, 3, 4]
    assert vali.query_ids == ["50", "51"]
    assert test.query_ids == ["10", "11"]
    assert train.doc_ids.tolist()[:3] == ["s2a", "s2b", "s2c"]


def test_load_fold_parses_each_subset_once(tmp_path: Path, monkeypatch) -> None:
    import ltr.data.letor as letor

    make_subsets(tmp_path, 3)
    calls: list[Path] = []
    real = letor.read_letor

    def counting(path, **kw):  # type: ignore[no-untyped-def]
        calls.append(Path(path))
        return real(path, **kw)

    monkeypatch.setattr(letor, "read_letor", counting)
    load_fold(tmp_path, 1, n_subsets=3)
    assert sorted(p.name for p in calls) == ["S1.txt", "S2.txt", "S3.txt"]


def test_load_fold_passes_the_missing_policy_and_sums_the_reports(tmp_path: Path) -> None:
    make_subsets(tmp_path, with_null=True)
    with pytest.raises(LetorFormatError, match=r"S2.txt:1: feature 2 is NULL"):
        load_fold(tmp_path, 1)
    train, _, _ = load_fold(tmp_path, 1, missing="impute", impute_value=-1.0)
    assert train.missing_report.null_values == 1
    assert train.missing_report.policy == "impute"
    assert (train.features == -1).sum() == 1


def test_write_folds_writes_byte_concatenations_of_the_subsets(tmp_path: Path) -> None:
    root = tmp_path / "in"
    make_subsets(root)
    written = write_folds(root, tmp_path / "out")
    assert sorted(written) == [1, 2, 3, 4, 5]
    fold3 = tmp_path / "out" / "Fold3"
    expected = b"".join((root / f"S{i}.txt").read_bytes() for i in (3, 4, 5))
    assert (fold3 / "train.txt").read_bytes() == expected
    assert (fold3 / "vali.txt").read_bytes() == (root / "S1.txt").read_bytes()
    assert (fold3 / "test.txt").read_bytes() == (root / "S2.txt").read_bytes()
    assert read_letor(fold3 / "train.txt").n_queries == 6
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_write_folds_refuses_bad_subsets_before_writing(tmp_path: Path) -> None:
    root = tmp_path / "in"
    make_subsets(root)
    (root / "S4.txt").write_text("1 qid:1 1:x\n")
    with pytest.raises(LetorFormatError, match=r"S4.txt:1: "):
        write_folds(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_write_folds_refuses_a_query_shared_by_two_subsets(tmp_path: Path) -> None:
    root = tmp_path / "in"
    make_subsets(root)
    (root / "S5.txt").write_text("1 qid:10 1:1\n")
    with pytest.raises(ValueError, match="more than one subset"):
        write_folds(root, tmp_path / "out")
