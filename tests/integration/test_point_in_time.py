"""Training data through Feast's historical retrieval: exact values, point-in-time correct.

Real Feast (file offline store, SQLite registry); the expected numbers come from the data
that was ingested, and for MQ2008 also from an independent parse of the file's text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.datasets import mq2008_s1
from support.env import isolated_home

from ltr.data.dataset import LetorDataset
from ltr.data.letor import read_letor
from ltr.data.synth import generate_synthetic
from ltr.features.definitions import DOC_VIEW, QUERY_DOC_VIEW, output_column
from ltr.features.ingest import IngestError, ingest_letor
from ltr.settings import Settings, get_settings

T1 = datetime(2024, 3, 1, tzinfo=UTC)
T2 = T1 + timedelta(days=7)
DOC_COLS = [5, 6, 7]  # of 8 synthetic features, the last three depend on the document only


@pytest.fixture
def feast_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with isolated_home(
        tmp_path / "home", monkeypatch, unset=("LTR_FEAST_PROJECT", "LTR_REDIS_URL")
    ):
        yield get_settings()


def entities_at(ds: LetorDataset, when: datetime | list[datetime]) -> pd.DataFrame:
    times = when if isinstance(when, list) else [when] * ds.n_docs
    return pd.DataFrame(
        {
            "query_id": ds.qids.astype(str),
            "doc_id": ds.doc_ids.astype(str),
            "label": ds.labels,
            "event_timestamp": pd.to_datetime(times, utc=True),
        }
    )


def offline(settings: Settings) -> Path:
    return settings.home / "feast" / "data"


@pytest.fixture
def two_versions(feast_home: Settings) -> tuple[LetorDataset, LetorDataset]:
    """Version 1 ingested at T1; version 2 (other document and pair features) at T2."""
    from ltr.features.store import apply

    v1 = generate_synthetic(n_queries=25, n_features=8, n_doc_only=3, seed=11)
    v2 = LetorDataset(
        features=v1.features.copy(), labels=v1.labels, qids=v1.qids, doc_ids=v1.doc_ids
    )
    changed_docs = set(v1.doc_ids[::3].tolist())
    rows = np.isin(v1.doc_ids, list(changed_docs))
    v2.features[np.ix_(rows, DOC_COLS)] += 100.0  # consistent per document
    v2.features[::2, :5] -= 50.0  # query-document features of every other row
    new = generate_synthetic(n_queries=1, n_features=8, n_doc_only=3, seed=12, qid_prefix="new")
    new.doc_ids[:] = [f"new-{d}" for d in new.doc_ids]
    v2 = LetorDataset.concat([v2, new])  # a query and documents that exist from T2 on
    ingest_letor(v1, offline(feast_home), doc_feature_indices=DOC_COLS, event_timestamp=T1)
    ingest_letor(v2, offline(feast_home), doc_feature_indices=DOC_COLS, event_timestamp=T2)
    apply(feast_home)
    return v1, v2


def test_training_data_equals_the_version_current_at_each_rows_time(
    two_versions: tuple[LetorDataset, LetorDataset],
) -> None:
    from ltr.features.training_data import load_training_dataset

    v1, v2 = two_versions
    new_values = v2.features[: v1.n_docs]  # the rows v1 has, as v2 changed them
    for when, expected in (
        (T1, v1.features),  # an event at exactly T1 is visible at T1
        (T1 + timedelta(hours=1), v1.features),
        (T2 - timedelta(microseconds=1), v1.features),  # v2 is not visible before T2
        (T2, new_values),
        (T2 + timedelta(days=30), new_values),
    ):
        got = load_training_dataset(entities_at(v1, when))
        np.testing.assert_array_equal(got.features, expected, err_msg=str(when))
        np.testing.assert_array_equal(got.labels, v1.labels)
        assert got.qids.tolist() == v1.qids.tolist()
        assert got.doc_ids.tolist() == v1.doc_ids.tolist()
        assert got.feature_names == v1.feature_names


def test_each_entity_row_gets_the_features_of_its_own_time(
    two_versions: tuple[LetorDataset, LetorDataset],
) -> None:
    from ltr.features.training_data import load_training_dataset

    v1, v2 = two_versions
    early = np.arange(v1.n_docs) % 2 == 0
    times = [T1 + timedelta(days=1) if e else T2 + timedelta(days=1) for e in early]
    got = load_training_dataset(entities_at(v1, times))
    expected = np.where(early[:, None], v1.features, v2.features[: v1.n_docs])
    np.testing.assert_array_equal(got.features, expected)


def test_rows_older_than_any_ingestion_have_no_features(
    two_versions: tuple[LetorDataset, LetorDataset],
) -> None:
    from ltr.features.training_data import load_training_dataset, training_frame

    v1, _ = two_versions
    before = entities_at(v1, T1 - timedelta(seconds=1))
    frame = training_frame(before)
    assert frame[output_column(QUERY_DOC_VIEW)].isna().all()
    assert frame[output_column(DOC_VIEW)].isna().all()
    with pytest.raises(ValueError, match="no query_doc_features features for query"):
        load_training_dataset(before)


def test_a_pair_first_ingested_later_is_missing_before_and_present_after(
    two_versions: tuple[LetorDataset, LetorDataset],
) -> None:
    from ltr.features.training_data import load_training_dataset, training_frame

    v1, v2 = two_versions
    frame = training_frame(entities_at(v2, T1 + timedelta(days=1)))
    is_new = frame["query_id"].str.startswith("new").to_numpy()
    assert is_new.any() and not is_new.all()
    column = output_column(QUERY_DOC_VIEW)
    assert frame.loc[is_new, column].isna().all()
    assert frame.loc[~is_new, column].notna().all()
    np.testing.assert_array_equal(np.stack(frame.loc[~is_new, column].tolist()), v1.features[:, :5])
    with pytest.raises(ValueError, match="no query_doc_features features for query new0"):
        load_training_dataset(entities_at(v2, T1 + timedelta(days=1)))
    got = load_training_dataset(entities_at(v2, T2))
    np.testing.assert_array_equal(got.features, v2.features)


def test_training_frame_keeps_the_entity_row_order(
    two_versions: tuple[LetorDataset, LetorDataset],
) -> None:
    from ltr.features.training_data import training_frame

    v1, _ = two_versions
    shuffled = entities_at(v1, T1).sample(frac=1.0, random_state=0).reset_index(drop=True)
    frame = training_frame(shuffled)
    assert frame["doc_id"].tolist() == shuffled["doc_id"].tolist()
    assert frame["query_id"].tolist() == shuffled["query_id"].tolist()


# ----------------------------------------------------------------------------- MQ2008
def hand_parse(path: Path) -> dict[tuple[str, str], np.ndarray]:
    """(qid, docid) -> 46 float32 values, parsed from the text without the library."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            body, _, comment = line.partition("#")
            tokens = body.split()
            doc = re.search(r"docid\s*=\s*(\S+)", comment).group(1)
            values = np.zeros(46, dtype=np.float32)
            for token in tokens[2:]:
                index, value = token.split(":")
                values[int(index) - 1] = np.float32(float(value))
            out[(tokens[1][4:], doc)] = values
    return out


@pytest.mark.datasets
def test_mq2008_subset_comes_back_float32_exact_through_feast(feast_home: Settings) -> None:
    from ltr.features.store import apply
    from ltr.features.training_data import load_training_dataset

    path = mq2008_s1()
    first50 = read_letor(path).subset_queries(list(range(50)))

    # LETOR normalises features 41-46 per query, so a document seen by two queries disagrees.
    with pytest.raises(IngestError, match=r"document \S+ has different document-only features"):
        ingest_letor(
            first50,
            offline(feast_home),
            doc_feature_indices=list(range(40, 46)),
            event_timestamp=T1,
        )

    # The queries whose documents appear in no other kept query can use the document view.
    keep, seen = [], set()
    for i, (_, rows) in enumerate(first50.iter_queries()):
        docs = set(first50.doc_ids[rows].tolist())
        if not docs & seen:
            keep.append(i)
            seen |= docs
    subset = first50.subset_queries(keep)
    assert subset.n_queries >= 40
    ingest_letor(
        subset, offline(feast_home), doc_feature_indices=list(range(40, 46)), event_timestamp=T1
    )
    apply(feast_home)

    got = load_training_dataset(entities_at(subset, T1 + timedelta(days=1)))
    np.testing.assert_array_equal(got.features, subset.features)  # bit-exact float32
    np.testing.assert_array_equal(got.labels, subset.labels)
    assert got.qids.tolist() == subset.qids.tolist()
    assert got.doc_ids.tolist() == subset.doc_ids.tolist()
    assert got.feature_names == [f"f{i}" for i in range(1, 47)]
    text = hand_parse(path)
    expected = np.stack([text[(q, doc)] for q, doc in zip(got.qids, got.doc_ids, strict=True)])
    np.testing.assert_array_equal(got.features, expected)
