"""Named exceptions of the data layer, and the diagnosis of a malformed LETOR line."""

from __future__ import annotations

import math
from pathlib import Path


class LetorFormatError(ValueError):
    """A LETOR / SVMlight file (or its ``.query`` file) is malformed.

    The message is always ``"<file>:<line>: <what is wrong>"``. Line numbers are 1-based;
    line 0 means the file as a whole (for example group sizes that do not add up).
    """

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        self.path = str(path)
        self.line = int(line)
        self.reason = reason
        super().__init__(f"{self.path}:{self.line}: {reason}")

    def __reduce__(self) -> tuple[type[LetorFormatError], tuple[str, int, str]]:
        return (type(self), (self.path, self.line, self.reason))


def show_token(token: bytes) -> str:
    """A raw token quoted for an error message, cut at 40 characters."""
    text = token.decode("utf-8", "replace")
    return repr(text if len(text) <= 40 else text[:37] + "...")


def first_bad_line(
    lines: list[bytes], uses_qid: bool, missing_qid: str, n_features: int | None
) -> tuple[int, str] | None:
    """The first malformed line of a LETOR file as ``(line number, reason)``, or None.

    Pure Python and slow: it runs only when the fast parser refused the file (its message
    has no line number) or the raw-line pass saw a structural problem.
    uses_qid:    the first row has ``qid:``, so every row needs one and queries must be
                 contiguous; otherwise no row may have one.
    missing_qid: the reason given for a row without ``qid:`` ("" when rows without a qid
                 are fine because a query file gives the groups).
    """
    first_line: dict[bytes, int] = {}
    prev: bytes | None = None
    for lineno, raw in enumerate(lines, 1):
        tokens = raw.split(b"#", 1)[0].split()
        if not tokens:
            continue
        reason = _check_row(tokens, uses_qid, missing_qid, n_features)
        if reason is not None:
            return lineno, reason
        if uses_qid:
            qid = tokens[1][4:]
            if qid != prev:
                if qid in first_line:
                    return lineno, (
                        f"qid {show_token(qid)} already ended at an earlier line (first seen at "
                        f"line {first_line[qid]}); documents of a query must be contiguous"
                    )
                first_line[qid] = lineno
                prev = qid
    return None


def _check_row(
    tokens: list[bytes], uses_qid: bool, missing_qid: str, n_features: int | None
) -> str | None:
    label = tokens[0]
    try:
        value = float(label)
    except ValueError:
        return f"label {show_token(label)} is not a number"
    if not math.isfinite(value) or value < 0:
        return f"label {show_token(label)} must be a finite number >= 0"
    rest = tokens[1:]
    has_qid = bool(rest) and rest[0].startswith(b"qid:")
    if has_qid:
        if len(rest[0]) == 4:
            return "empty qid:"
        rest = rest[1:]
    if not has_qid and (uses_qid or missing_qid):
        return missing_qid
    if has_qid and not uses_qid:
        return "unexpected qid: (the first row has none; groups come from the query file)"
    prev = 0
    for tok in rest:
        idx_text, sep, val_text = tok.partition(b":")
        if idx_text == b"qid":
            return "qid: must come right after the label"
        if not sep or not idx_text or not val_text:
            return f"expected <index>:<value>, got {show_token(tok)}"
        try:
            idx = int(idx_text)
        except ValueError:
            return f"feature index {show_token(idx_text)} is not an integer"
        if idx <= 0:
            return f"feature index {idx} must be >= 1 (indices are 1-based)"
        if idx <= prev:
            return f"feature indices must increase: {idx} after {prev}"
        if n_features is not None and idx > n_features:
            return f"feature index {idx} is above n_features={n_features}"
        if val_text.upper() != b"NULL":
            try:
                float(val_text)
            except ValueError:
                return f"value {show_token(val_text)} of feature {idx} is not a number"
        prev = idx
    return None
