"""A validation logs its verdict, not Great Expectations' registration chatter.

Without ``quiet_gx`` a feature-pipeline ``validate`` task logged 209 of its 232 lines from
GX (``great_expectations._docs_decorators``: "Skipping registering function ...", plus
"Multiple declarations of metric ..." and "_get_default_value called with key ...").
"""

from __future__ import annotations

import logging

import pytest

from ltr.data.synth import generate_synthetic
from ltr.validation import ValidationPolicy, validate_dataset
from ltr.validation.runner import GX_LOGGER

POLICY = ValidationPolicy(label_set=(0, 1, 2, 3), n_features=6, min_docs_per_query=1)


def _dataset():
    return generate_synthetic(
        n_queries=6, n_features=6, n_doc_only=2, mean_docs=5, max_label=3, seed=3
    )


def _by_logger(records: list[logging.LogRecord], prefix: str) -> list[logging.LogRecord]:
    return [r for r in records if r.name == prefix or r.name.startswith(prefix + ".")]


def test_validation_logs_the_verdict_and_almost_nothing_from_gx(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # what an Airflow task logs
    report = validate_dataset(_dataset(), POLICY, name="day")

    assert report.success
    gx_lines = _by_logger(caplog.records, GX_LOGGER)
    assert len(gx_lines) < 5, [r.getMessage()[:80] for r in gx_lines[:10]]
    ours = [r.getMessage() for r in _by_logger(caplog.records, "ltr.validation")]
    assert any(m.startswith("validation day: 0 of ") for m in ours), ours
    # the level is put back: GX's loggers are not silenced for the rest of the process
    assert logging.getLogger(GX_LOGGER).level == logging.NOTSET


def test_a_gx_logger_configured_on_purpose_keeps_its_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gx_logger = logging.getLogger(GX_LOGGER)
    gx_logger.setLevel(logging.DEBUG)
    try:
        caplog.set_level(logging.INFO)
        validate_dataset(_dataset(), POLICY, name="debugging")
        assert gx_logger.level == logging.DEBUG
    finally:
        gx_logger.setLevel(logging.NOTSET)
