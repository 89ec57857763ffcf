"""Task functions of the feature pipeline, without Airflow, Feast or Redis."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ltr.data.dataset import LetorDataset
from ltr.data.letor import write_letor
from ltr.features.ingest import IngestError, read_layout
from ltr.features.store import offline_dir
from ltr.pipelines import feature_pipeline as fp
from ltr.pipelines.config import PipelineConfig
from ltr.settings import Settings
from ltr.validation import DataValidationError

DAY1 = datetime(2026, 1, 1, tzinfo=UTC)
DAY2 = datetime(2026, 1, 2, tzinfo=UTC)
DAY3 = datetime(2026, 1, 3, tzinfo=UTC)


def dataset(
    labels: list[float] | None = None, n_features: int = 5, prefix: str = "q"
) -> LetorDataset:
    """Three queries of 2, 3 and 2 documents, features in [0, 1]."""
    qids = [f"{prefix}1"] * 2 + [f"{prefix}2"] * 3 + [f"{prefix}3"] * 2
    docs = [f"d{i}" for i in range(7)]
    feats = (np.arange(7 * n_features, dtype=np.float32).reshape(7, n_features) % 11) / 10
    return LetorDataset(
        features=feats,
        labels=np.array(labels if labels is not None else [0, 1, 2, 0, 1, 1, 0], np.float32),
        qids=np.array(qids, dtype=object),
        doc_ids=np.array(docs, dtype=object),
    )


def config(**extra: object) -> PipelineConfig:
    raw: dict[str, object] = {
        "validation": {"label_set": [0, 1, 2], "feature_min": 0.0, "feature_max": 1.0},
    }
    raw.update(extra)
    return PipelineConfig.model_validate(raw)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", redis_url=None)


def land(settings: Settings, day: datetime, name: str, ds: LetorDataset) -> Path:
    path = settings.home / "raw" / day.date().isoformat() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_letor(ds, path)
    return path


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------- discovery
def test_raw_files_lists_the_txt_files_of_each_day_of_the_interval_by_name(
    settings: Settings,
) -> None:
    b = land(settings, DAY1, "b.txt", dataset())
    a = land(settings, DAY1, "a.txt", dataset())
    c = land(settings, DAY2, "c.txt", dataset())
    land(settings, DAY3, "later.txt", dataset())
    (a.parent / ".partial.txt").write_text("0 qid:1 1:0\n")  # still being copied
    (a.parent / "notes.md").write_text("not data")

    assert fp.raw_files(DAY1, DAY2, config(), settings) == [a, b]
    assert fp.raw_files(DAY1, DAY3, config(), settings) == [a, b, c]


def test_raw_files_is_empty_when_nothing_landed_for_the_interval(settings: Settings) -> None:
    land(settings, DAY1, "s1.txt", dataset())
    assert fp.raw_files(DAY2, DAY3, config(), settings) == []


def test_an_interval_that_is_not_midnight_aligned_covers_every_day_it_touches() -> None:
    start = datetime(2026, 1, 1, 6, tzinfo=UTC)
    assert [
        d.isoformat() for d in fp.interval_days(start, datetime(2026, 1, 2, 6, tzinfo=UTC))
    ] == [
        "2026-01-01",
        "2026-01-02",
    ]
    assert [d.isoformat() for d in fp.interval_days(DAY1, DAY2)] == ["2026-01-01"]


def test_an_empty_data_interval_is_refused_with_a_reason(settings: Settings) -> None:
    with pytest.raises(ValueError, match="empty data interval"):
        fp.raw_files(DAY1, DAY1, config(), settings)


def test_raw_dir_comes_from_the_config_when_set(settings: Settings, tmp_path: Path) -> None:
    assert fp.raw_dir(config(), settings) == (settings.home / "raw").resolve()
    assert fp.raw_dir(config(raw_dir=str(tmp_path / "landing")), settings) == tmp_path / "landing"


def test_a_file_event_time_is_its_day_folder_at_midnight_utc() -> None:
    assert fp.file_event_time(Path("/x/2026-01-02/s1.txt")) == DAY2
    assert fp.file_event_time(Path("/x/landing/s1.txt"), DAY3) == DAY3
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        fp.file_event_time(Path("/x/landing/s1.txt"))


# ---------------------------------------------------------------------------- validation
def test_validation_failure_writes_the_report_raises_and_writes_nothing_else(
    settings: Settings,
) -> None:
    good = land(settings, DAY1, "a.txt", dataset())
    bad = land(settings, DAY1, "b.txt", dataset(labels=[0, 1, 7, 0, 1, 1, 0]))
    report_dir = fp.validation_report_dir(settings)

    with pytest.raises(DataValidationError) as err:
        fp.validate_raw([good, bad], config(), report_dir, settings=settings)

    assert "b.txt" in str(err.value) and "label" in str(err.value)
    assert "a.txt" not in str(err.value)
    day = report_dir / "2026-01-01"
    assert json.loads((day / "b.validation.json").read_text())["success"] is False
    assert json.loads((day / "a.validation.json").read_text())["success"] is True
    assert (day / "b.gx.json").is_file()
    assert not offline_dir(settings).exists()
    assert sorted(p.name for p in settings.home.iterdir()) == ["raw", "reports"]


def test_a_malformed_file_fails_validation_with_its_line_and_keeps_a_report(
    settings: Settings,
) -> None:
    path = settings.home / "raw" / "2026-01-01" / "broken.txt"
    path.parent.mkdir(parents=True)
    path.write_text("0 qid:1 1:0.5\n1 qid:1 1:zero\n")
    with pytest.raises(DataValidationError, match=r"broken\.txt:2"):
        fp.validate_raw([path], config(), fp.validation_report_dir(settings), settings=settings)
    report = fp.validation_report_dir(settings) / "2026-01-01" / "broken.validation.json"
    assert json.loads(report.read_text())["success"] is False


def test_validation_checks_the_feature_count_against_the_offline_store_layout(
    settings: Settings,
) -> None:
    first = land(settings, DAY1, "s1.txt", dataset(n_features=5))
    fp.write_offline([first], DAY1, config(), settings)
    assert (read_layout(offline_dir(settings)) or {}).get("n_features") == 5

    narrower = land(settings, DAY2, "s1.txt", dataset(n_features=4))
    with pytest.raises(DataValidationError, match="5 features"):
        fp.validate_raw([narrower], config(), fp.validation_report_dir(settings), settings=settings)


def test_a_config_that_disagrees_with_the_offline_store_layout_fails_validation(
    settings: Settings,
) -> None:
    first = land(settings, DAY1, "s1.txt", dataset(n_features=5))
    fp.write_offline([first], DAY1, config(), settings)
    second = land(settings, DAY2, "s1.txt", dataset(n_features=5))
    with pytest.raises(DataValidationError, match="doc_feature_indices"):
        fp.validate_raw(
            [second],
            config(doc_feature_indices=[4]),
            fp.validation_report_dir(settings),
            settings=settings,
        )


def test_files_of_one_interval_must_agree_on_their_feature_count(settings: Settings) -> None:
    a = land(settings, DAY1, "a.txt", dataset(n_features=5))
    b = land(settings, DAY1, "b.txt", dataset(n_features=4, prefix="p"))
    with pytest.raises(DataValidationError, match="different feature counts"):
        fp.validate_raw([a, b], config(), fp.validation_report_dir(settings), settings=settings)


def test_validation_passes_clean_files_and_summarises_them(settings: Settings) -> None:
    path = land(settings, DAY1, "s1.txt", dataset())
    summary = fp.validate_raw(
        [path], config(), fp.validation_report_dir(settings), settings=settings
    )
    assert summary["success"] is True
    assert summary["rows"] == 7 and summary["files"] == 1
    assert summary["results"][0]["labels"] == {"0": 3, "1": 3, "2": 1}


# ------------------------------------------------------------------------ offline store
def test_write_offline_twice_writes_byte_identical_files(settings: Settings) -> None:
    a = land(settings, DAY1, "a.txt", dataset())
    b = land(settings, DAY1, "b.txt", dataset(prefix="p"))
    first = fp.write_offline([a, b], DAY1, config(), settings)
    before = digests(offline_dir(settings))
    second = fp.write_offline([a, b], DAY1, config(), settings)

    assert digests(offline_dir(settings)) == before
    assert [f["replaced"] for f in first["files"]] == [False, False]
    assert [f["replaced"] for f in second["files"]] == [True, True]
    labels = [k for k in before if k.startswith(fp.LABELS_TABLE)]
    assert len(labels) == 2
    assert {Path(k).name for k in labels} == {f["partition"] for f in first["files"]}


def with_doc_value(ds: LetorDataset, doc: str, value: float) -> LetorDataset:
    ds.features[ds.doc_ids == doc, 4] = value  # column 4: the document-only feature
    return ds


def test_a_correction_spanning_two_files_of_a_day_is_reingested(settings: Settings) -> None:
    cfg = config(doc_feature_indices=[4])
    a = land(settings, DAY1, "a.txt", dataset())
    b = land(settings, DAY1, "b.txt", dataset(prefix="p"))  # the same documents d0..d6
    fp.write_offline([a, b], DAY1, cfg, settings)

    land(settings, DAY1, "a.txt", with_doc_value(dataset(), "d0", 0.99))
    land(settings, DAY1, "b.txt", with_doc_value(dataset(prefix="p"), "d0", 0.99))
    again = fp.write_offline([a, b], DAY1, cfg, settings)

    assert [f["changed_rows"] for f in again["files"]] == [
        {"query_doc_features": 0, "doc_features": 1}
    ] * 2
    docs = pd.read_parquet(offline_dir(settings) / "doc_features.parquet")
    d0 = docs.loc[docs["doc_id"] == "d0", "features"].map(lambda v: float(v[0])).tolist()
    assert d0 == pytest.approx([0.99, 0.99])


def test_files_of_a_day_that_disagree_on_a_document_are_refused_before_any_write(
    settings: Settings,
) -> None:
    cfg = config(doc_feature_indices=[4])
    a = land(settings, DAY1, "a.txt", dataset())
    b = land(settings, DAY1, "b.txt", with_doc_value(dataset(prefix="p"), "d0", 0.99))
    with pytest.raises(IngestError, match=r"document d0 .* same event time"):
        fp.write_offline([a, b], DAY1, cfg, settings)
    assert not offline_dir(settings).exists() or not any(offline_dir(settings).rglob("*.parquet"))


def test_labels_table_round_trips_the_judgments_with_their_day(settings: Settings) -> None:
    ds1, ds2 = dataset(), dataset(labels=[2, 2, 1, 0, 0, 1, 1], prefix="p")
    fp.write_offline([land(settings, DAY1, "s1.txt", ds1)], DAY1, config(), settings)
    fp.write_offline([land(settings, DAY2, "s1.txt", ds2)], DAY2, config(), settings)
    fp.write_offline([land(settings, DAY2, "s1.txt", ds2)], DAY2, config(), settings)  # re-run

    labels = fp.read_labels(settings)
    expected = pd.DataFrame(
        {
            "query_id": [*ds1.qids, *ds2.qids],
            "doc_id": [*ds1.doc_ids, *ds2.doc_ids],
            "label": np.concatenate([ds1.labels, ds2.labels]).astype(np.float32),
            "event_timestamp": pd.Series([DAY1] * 7 + [DAY2] * 7, dtype="datetime64[us, UTC]"),
        }
    )
    pd.testing.assert_frame_equal(labels, expected)
    until_day1 = fp.read_labels(settings, until=datetime(2026, 1, 1, 12))
    pd.testing.assert_frame_equal(until_day1, expected.iloc[:7])


def test_read_labels_is_an_empty_frame_before_the_first_write(settings: Settings) -> None:
    labels = fp.read_labels(settings)
    assert labels.empty
    assert list(labels.columns) == ["query_id", "doc_id", "label", "event_timestamp"]


def test_a_null_feature_fails_validation_naming_its_column(settings: Settings) -> None:
    path = land(settings, DAY1, "s1.txt", dataset())
    lines = path.read_text().splitlines()
    lines[1] = re.sub(r" 3:\S+", " 3:NULL", lines[1])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match="f3: expected no NULL/NaN/inf value"):
        fp.validate_raw([path], config(), fp.validation_report_dir(settings), settings=settings)
    assert not offline_dir(settings).exists()
