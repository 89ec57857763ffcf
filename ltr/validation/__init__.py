"""Raw-data validation with Great Expectations: the gate before the feature pipeline.

A :class:`ValidationPolicy` becomes GX 1.x expectations (``expectations.py``) that run,
through one ephemeral GX context per call (``runner.py``), on pandas batches built from a
:class:`LetorDataset` (``frames.py``):

- ``documents`` (:func:`letor_frame`: ``qid, doc_id, label, f1..fN``): column names and
  count, at least one row, non-null ids and labels, labels in the allowed set, feature
  values in range, no missing feature value, unique (qid, doc_id) pairs;
- ``queries`` (:func:`query_frame`: one row per run of equal qids, ``qid, n_docs,
  n_missing``): documents per query in range, queries contiguous, missing-cell budget;
- ``source`` (one row), only for a dataset read with ``missing="impute"``: the count of
  values imputed at read time against the same budget.

Missing values (NULL / NaN / inf features) are one category, as in ``read_letor``: the
frame shows every non-finite feature cell as NaN (GX's null), and the policy allows at most
``max_missing_fraction`` of all feature cells. With a fraction of 0 every feature column is
checked for nulls, so the report names the column and rows; above 0 the total count is
checked against ``floor(max_missing_fraction * cells)``. ``read_letor`` never keeps a NaN
(it rejects or imputes), so :func:`validate_file` reads raw files with :func:`read_raw`,
which restores the imputed cells as NaN: the missing values are found where they are.

The report (:class:`ValidationReport`, ``report.py``) has one plain-JSON entry per
expectation and a one-line-per-failure ``summary()``; with ``report_dir`` it is written as
``<name>.validation.json`` beside GX's own result, ``<name>.gx.json`` (both atomically).
``great_expectations`` takes seconds to import, so it is imported inside functions only.
"""

from ltr.validation.frames import letor_frame, query_frame, read_raw
from ltr.validation.policy import DataValidationError, ValidationPolicy
from ltr.validation.report import ValidationReport
from ltr.validation.runner import (
    check,
    check_file,
    report_name,
    validate_dataset,
    validate_file,
)

__all__ = [
    "DataValidationError",
    "ValidationPolicy",
    "ValidationReport",
    "check",
    "check_file",
    "letor_frame",
    "query_frame",
    "read_raw",
    "report_name",
    "validate_dataset",
    "validate_file",
]
