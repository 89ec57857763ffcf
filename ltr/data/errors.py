"""Named exceptions of the data layer."""

from __future__ import annotations

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
