"""One error type for everything a user can fix: it prints as one line."""
from __future__ import annotations

from pathlib import Path


class MeshcliError(Exception):
    """A problem with an input, a weights file or an option, told as `file: cause; fix`.

    The CLI prints ``str(err)`` on one line and exits non-zero; batch runs
    collect these per input and keep going.
    """

    def __init__(self, path: str | Path | None, cause: str, fix: str = ""):
        self.path = None if path is None else str(path)
        self.cause = cause
        self.fix = fix
        super().__init__(self.line())

    def __reduce__(self):  # rebuilt from its parts when it crosses processes (Ray workers)
        return type(self), (self.path, self.cause, self.fix)

    def line(self) -> str:
        text = f"{self.path}: {self.cause}" if self.path else self.cause
        if self.fix:
            text += f" — {self.fix}"
        return " ".join(text.split())  # always one line


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line causes."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
