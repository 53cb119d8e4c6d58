"""The one exception type users of mammo_denoise see."""

from __future__ import annotations

from os import PathLike


class MammoDenoiseError(Exception):
    """A problem the user can act on: bad file, bad parameter, missing optional package.

    The message always says what went wrong in plain words and, where a file is
    involved, names it first (``"scan.dcm: no pixel data (a Structured Report?)"``).
    """

    def __init__(self, message: str, path: str | PathLike | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class Cancelled(MammoDenoiseError):
    """Raised inside long work (inference, training) when the caller's cancel() said stop."""
