"""Read and write LETOR / SVMlight ranking files.

One document per line: ``<label> qid:<qid> <index>:<value> ... #<comment>``.

- Feature indices are 1-based and strictly increasing; absent indices are 0 (sparse rows).
- ``#docid = X`` (or ``#docid=X``, possibly followed by other ``key = value`` pairs, as in
  MQ2008's ``inc = 1 prob = 0.08``) gives the document id; without it the id is
  ``<qid>-<n>``, n being the 0-based position of the row within its query.
- Files without ``qid:`` tokens (LightGBM's layout) take their query groups from a
  ``.query`` file, one group size per line; their queries are named ``q0``, ``q1``, ...
- Literal ``NULL``, ``nan`` and ``inf`` values are rejected or imputed by policy and
  counted; a NaN never reaches the dataset silently.

Parsing is done by scikit-learn's C parser; one cheap pass over the raw lines collects
query ids, doc ids and line numbers. When the C parser refuses the input, a line-by-line
validator finds the first bad line so the error names ``file:line``.
"""

from __future__ import annotations

import errno
import io
import logging
import math
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np

from ltr.data.dataset import LetorDataset, MissingValueReport
from ltr.data.errors import LetorFormatError, first_bad_line, show_token
from ltr.utils.io import atomic_path

__all__ = [
    "LetorFormatError",
    "read_letor",
    "read_query_file",
    "write_letor",
    "write_query_file",
]

logger = logging.getLogger(__name__)

MissingPolicy = Literal["reject", "impute"]

# ``docid = X`` inside the comment: the value after the word ``docid``.
_DOCID_VALUE = re.compile(rb"\s*=\s*(\S+)")
# A NULL feature value (not a qid named NULL), followed by whitespace, '#' or the end.
_NULL = re.compile(rb"(?i)(?<!qid):null(?![^\s#])")
# The qid token right after the label (used to hide non-integer qids from sklearn).
_QID_TOKEN = re.compile(rb"(?m)^([ \t]*[^\s#]+[ \t]+)qid:[^\s#]*")
_BAD_ID = re.compile(r"[\s#]")
_F32_MAX = float(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------- reading
def read_letor(
    path: str | Path,
    *,
    n_features: int | None = None,
    missing: MissingPolicy = "reject",
    impute_value: float = 0.0,
    query_file: str | Path | None = None,
) -> LetorDataset:
    """Parse a LETOR / SVMlight ranking file into a :class:`LetorDataset`.

    n_features:   number of feature columns; an index above it is an error. ``None``: the
                  largest index seen.
    missing:      ``"reject"`` raises on NULL / NaN / inf feature values; ``"impute"``
                  replaces them with ``impute_value`` and counts them in ``missing_report``.
    query_file:   LightGBM-style group sizes for files without ``qid:``. ``None`` uses
                  ``<path>.query`` when the file has no ``qid:`` tokens and that file exists.
                  A query file given explicitly for a file with ``qid:`` must agree with it.

    Raises FileNotFoundError for a missing file and LetorFormatError (``file:line: reason``)
    for malformed content, including an empty file.
    """
    if missing not in ("reject", "impute"):
        raise ValueError(f"missing must be 'reject' or 'impute', got {missing!r}")
    if n_features is not None and n_features < 0:
        raise ValueError(f"n_features must be >= 0, got {n_features}")
    if not math.isfinite(impute_value):
        raise ValueError(f"impute_value must be finite, got {impute_value}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "LETOR file not found", str(path))
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte order mark
        data = data[3:]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    lines = data.split(b"\n")
    has_null = b"null" in data.lower() and _NULL.search(data) is not None

    # One pass over the raw lines: row -> line number, qid, doc id, NULL count.
    row_lines: list[int] = []
    qids: list[bytes | None] = []
    doc_ids: list[str | None] = []
    first_line: dict[bytes | None, int] = {}
    null_count = 0
    suspicious = False  # mixed qid / no-qid rows or a query that is not contiguous
    prev: bytes | None = b"\0"
    for lineno, raw in enumerate(lines, 1):
        cut = raw.find(b"#")
        body = raw if cut < 0 else raw[:cut]
        parts = body.split(None, 2)
        if not parts:
            continue
        row_lines.append(lineno)
        qid = parts[1][4:] if len(parts) > 1 and parts[1].startswith(b"qid:") else None
        qids.append(qid)
        if qid != prev:
            if qid in first_line:
                suspicious = True
            else:
                first_line[qid] = lineno
            prev = qid
        doc = None
        if cut >= 0:
            doc = _doc_id(raw, cut)
        doc_ids.append(doc)
        if has_null:
            null_count += len(_NULL.findall(body))

    n_rows = len(row_lines)
    if n_rows == 0:
        n_lines = len(lines) - 1 if data.endswith(b"\n") else len(lines)
        raise LetorFormatError(path, max(1, n_lines), "no data rows (the file is empty)")

    uses_qid = qids[0] is not None
    if uses_qid and None in first_line:
        suspicious = True
    if not uses_qid and len(first_line) > 1:
        suspicious = True
    auto_query = Path(f"{path}.query")
    if query_file is None and not uses_qid and auto_query.is_file():
        query_file = auto_query
    if uses_qid:
        missing_qid = "missing qid: (the first row has one, so every row needs one)"
    elif query_file is not None:
        missing_qid = ""
    else:
        missing_qid = (
            f"no qid: and no query file (pass query_file= or put group sizes in {auto_query.name})"
        )
        suspicious = True

    def first_error(limit: int | None = n_features) -> LetorFormatError | None:
        found = first_bad_line(lines, uses_qid, missing_qid, limit)
        return None if found is None else LetorFormatError(path, found[0], found[1])

    if suspicious:
        err = first_error()
        if err is not None:
            raise err

    # The C parser. NULL -> nan; integer-only qids, so hide other qid strings from it.
    feed = _NULL.sub(b":nan", data) if has_null else data
    if uses_qid and not all(q is not None and q.isdigit() for q in first_line):
        feed = _QID_TOKEN.sub(rb"\1", feed)
    from sklearn.datasets import load_svmlight_file

    try:
        matrix, labels, _ = load_svmlight_file(
            io.BytesIO(feed), query_id=True, zero_based=False, dtype=np.float64
        )
    except (ValueError, TypeError, OverflowError) as exc:
        err = first_error()
        if err is not None:
            raise err from exc
        raise LetorFormatError(path, 0, f"could not parse the file: {exc}") from exc
    if matrix.shape[0] != n_rows:  # the two passes disagree about what a row is
        raise LetorFormatError(path, 0, f"found {n_rows} rows but parsed {matrix.shape[0]}")

    # Labels: finite, non-negative.
    labels = np.asarray(labels, dtype=np.float64)
    bad = ~np.isfinite(labels) | (labels < 0)
    if bad.any():
        i = int(np.argmax(bad))
        token = lines[row_lines[i] - 1].split()[0]
        raise LetorFormatError(
            path, row_lines[i], f"label {show_token(token)} must be a finite number >= 0"
        )

    width = int(matrix.shape[1])
    if n_features is not None and width > n_features:
        err = first_error()
        raise err or LetorFormatError(path, 0, f"feature index {width} above n_features")
    n_cols = width if n_features is None else n_features

    # Missing values and float32 range: only explicit entries can be non-finite.
    values = matrix.data
    finite = np.isfinite(values)
    overflow = finite & (np.abs(values) > _F32_MAX)
    if overflow.any():
        row, feat = _entry_position(matrix, int(np.argmax(overflow)))
        raise LetorFormatError(
            path, row_lines[row], f"value of feature {feat} is out of float32 range"
        )
    report = MissingValueReport(
        policy=missing, impute_value=float(impute_value) if missing == "impute" else None
    )
    if not finite.all():
        entries = np.flatnonzero(~finite)
        entry_rows = np.searchsorted(matrix.indptr, entries, side="right") - 1
        n_nan = int(np.isnan(values).sum())
        report.null_values = null_count
        report.nan_values = n_nan - null_count
        report.inf_values = int(entries.size) - n_nan
        report.rows_affected = int(np.unique(entry_rows).size)
        if missing == "reject":
            row, feat = _entry_position(matrix, int(entries[0]))
            raw_value = _raw_value(lines[row_lines[row] - 1], feat)
            raise LetorFormatError(
                path,
                row_lines[row],
                f"feature {feat} is {raw_value} (missing='reject'; the file has "
                f"{report.total} NULL/NaN/inf values in {report.rows_affected} rows; "
                "use missing='impute' to replace them)",
            )
        values[~finite] = impute_value
        logger.info(
            "%s: imputed %d missing values in %d rows with %s",
            path,
            report.total,
            report.rows_affected,
            impute_value,
        )

    features = np.zeros((n_rows, n_cols), dtype=np.float32)
    if width:
        features[:, :width] = matrix.astype(np.float32).toarray()

    # Query ids: from the file, or synthesised from the group sizes.
    if uses_qid:
        names = {q: q.decode("utf-8", "replace") for q in first_line if q is not None}
        qid_arr: np.ndarray = np.empty(n_rows, dtype=object)
        qid_arr[:] = [names[q] for q in qids if q is not None]
        if query_file is not None:
            sizes = read_query_file(query_file)
            _check_group_sum(query_file, sizes, n_rows, path)
            runs = np.diff(_run_offsets(qid_arr))
            if not np.array_equal(runs, sizes):
                raise LetorFormatError(
                    query_file, 0, f"group sizes disagree with the qid: values in {path}"
                )
    else:
        if query_file is None:  # unreachable: the validator reported the first row
            raise LetorFormatError(path, row_lines[0], missing_qid)
        sizes = read_query_file(query_file)
        _check_group_sum(query_file, sizes, n_rows, path)
        qid_arr = np.repeat(np.array([f"q{i}" for i in range(len(sizes))], dtype=object), sizes)

    doc_arr = np.array(doc_ids, dtype=object)
    absent = [i for i, doc in enumerate(doc_ids) if doc is None]
    if absent:
        offsets = _run_offsets(qid_arr)
        starts = np.repeat(offsets[:-1], np.diff(offsets))
        for i in absent:
            doc_arr[i] = f"{qid_arr[i]}-{i - int(starts[i])}"

    return LetorDataset(
        features=features,
        labels=labels.astype(np.float32),
        qids=qid_arr,
        doc_ids=doc_arr,
        missing_report=report,
        source=str(path),
    )


def _doc_id(raw: bytes, start: int) -> str | None:
    """The ``docid = X`` value of a comment that starts at ``raw[start] == '#'``."""
    at = raw.find(b"docid", start)
    while at >= 0:
        if raw[at - 1 : at] in b" \t#" and (m := _DOCID_VALUE.match(raw, at + 5)):
            return m.group(1).decode("utf-8", "replace")
        at = raw.find(b"docid", at + 5)
    return None


def read_query_file(path: str | Path) -> np.ndarray:
    """Group sizes from a LightGBM ``.query`` file (one positive integer per line): int64."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "query file not found", str(path))
    sizes: list[int] = []
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        text = raw.strip()
        if not text:
            continue
        try:
            size = int(text)
        except ValueError:
            raise LetorFormatError(
                path, lineno, f"group size {show_token(text)} is not an integer"
            ) from None
        if size <= 0:
            raise LetorFormatError(path, lineno, f"group size {size} must be >= 1")
        sizes.append(size)
    if not sizes:
        raise LetorFormatError(path, 1, "no group sizes (the query file is empty)")
    return np.asarray(sizes, dtype=np.int64)


def _check_group_sum(query_file: str | Path, sizes: np.ndarray, n_rows: int, data: Path) -> None:
    total = int(sizes.sum())
    if total != n_rows:
        raise LetorFormatError(
            query_file,
            0,
            f"group sizes sum to {total} but {data} has {n_rows} rows",
        )


def _run_offsets(qids: np.ndarray) -> np.ndarray:
    change = np.flatnonzero(qids[1:] != qids[:-1]) + 1
    return np.concatenate([[0], change, [len(qids)]]).astype(np.int64)


def _entry_position(matrix: object, entry: int) -> tuple[int, int]:
    """(row, 1-based feature index) of a stored entry of a CSR matrix."""
    indptr = matrix.indptr  # type: ignore[attr-defined]
    row = int(np.searchsorted(indptr, entry, side="right") - 1)
    return row, int(matrix.indices[entry]) + 1  # type: ignore[attr-defined]


def _raw_value(raw_line: bytes, feature: int) -> str:
    prefix = f"{feature}:".encode()
    body = raw_line.split(b"#", 1)[0]
    for tok in body.split():
        if tok.startswith(prefix):
            return tok[len(prefix) :].decode("utf-8", "replace")
    return "missing"


# ---------------------------------------------------------------------------- writing
def write_letor(
    dataset: LetorDataset,
    path: str | Path,
    *,
    sparse: bool = False,
    query_file: bool = False,
    precision: int = 6,
) -> None:
    """Write ``dataset`` as a LETOR file, atomically (a reader never sees half a file).

    Rows are ``<label> qid:<qid> <i>:<v> ... #docid = <doc id>``.
    sparse:      omit zero values (the last feature is always written, so the width
                 survives a round trip).
    query_file:  write LightGBM's layout instead: no ``qid:`` tokens and no comments (its
                 parser accepts neither), group sizes in ``<path>.query``. Reading it back
                 gives query ids ``q0, q1, ...`` and doc ids ``<qid>-<n>``.
    precision:   significant digits tried first; a value that would not read back as the
                 same float32 is written with 9 digits, so the output is lossless.
    """
    if not 1 <= precision <= 9:
        raise ValueError(f"precision must be in 1..9, got {precision}")
    if dataset.n_docs == 0:
        raise ValueError("cannot write a dataset without rows (the reader rejects empty files)")
    features = dataset.features
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or inf; impute them before writing")
    labels = dataset.labels
    if not (np.isfinite(labels).all() and (labels >= 0).all()):
        raise ValueError("labels must be finite and >= 0")
    sizes = dataset.group_sizes  # also checks that queries are contiguous
    qids = [str(q) for q in dataset.qids.tolist()]
    if not query_file:
        _check_ids("query id", set(qids))
        doc_ids = [str(d) for d in dataset.doc_ids.tolist()]
        _check_ids("doc id", doc_ids)

    label_text = _format_values(labels, precision).tolist()
    n_cols = dataset.n_features
    if n_cols:
        prefixes = np.array([f"{j}:" for j in range(1, n_cols + 1)], dtype=object)
        tokens = prefixes[None, :] + _format_values(features, precision)
        if sparse:
            keep = features != 0
            keep[:, -1] = True
            bodies = [" ".join(row[mask]) for row, mask in zip(tokens, keep, strict=True)]
        else:
            bodies = [" ".join(row) for row in tokens.tolist()]
    else:
        bodies = [""] * dataset.n_docs

    if query_file:
        out = [f"{lab} {body}".rstrip() for lab, body in zip(label_text, bodies, strict=True)]
    else:
        out = [
            f"{lab} qid:{q} {body} #docid = {d}" if body else f"{lab} qid:{q} #docid = {d}"
            for lab, q, body, d in zip(label_text, qids, bodies, doc_ids, strict=True)
        ]
    payload = ("\n".join(out) + "\n").encode("utf-8")

    path = Path(path)
    if query_file:
        groups = ("\n".join(str(int(s)) for s in sizes) + "\n").encode()
        with atomic_path(f"{path}.query") as qtmp, atomic_path(path) as tmp:
            _write_bytes(tmp, payload)
            _write_bytes(qtmp, groups)
    else:
        with atomic_path(path) as tmp:
            _write_bytes(tmp, payload)


def write_query_file(group_sizes: np.ndarray | list[int], path: str | Path) -> None:
    """Write LightGBM group sizes, one per line, atomically."""
    sizes = [int(s) for s in np.asarray(group_sizes).tolist()]
    if not sizes or min(sizes) <= 0:
        raise ValueError("group sizes must be a non-empty list of positive integers")
    with atomic_path(path) as tmp:
        _write_bytes(tmp, ("\n".join(map(str, sizes)) + "\n").encode())


def _write_bytes(path: Path, payload: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def _check_ids(kind: str, ids: set[str] | list[str]) -> None:
    for value in ids:
        if not value or _BAD_ID.search(value):
            raise ValueError(
                f"{kind} {value!r} cannot be written: it must be non-empty, without spaces or '#'"
            )


def _format_values(values: np.ndarray, precision: int) -> np.ndarray:
    """Shortest text (``%.{precision}g``, else ``%.9g``) that reads back as the same float32."""
    exact = np.asarray(values, dtype=np.float32)
    if exact.size == 0:
        return np.empty(exact.shape, dtype=object)
    wide = exact.astype(np.float64)
    text = np.char.mod(f"%.{precision}g", wide)
    out = text.astype(object)
    if precision < 9:
        lossy = text.astype(np.float32) != exact
        if lossy.any():
            out[lossy] = np.char.mod("%.9g", wide[lossy]).astype(object)
    return out
