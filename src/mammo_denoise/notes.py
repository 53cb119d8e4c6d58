"""Warnings as plain notes: one line per file in the CLI, a notification per layer in napari.

The core says "this result is approximate" with ``warnings.warn`` (e.g. a processed image, a noise
fit without an unexposed region). Python would print that with a source path and a line of code,
and only the first time per place in the code: of three processed files in a folder, one would be
named. The CLI commands and the napari workers run each file's work inside ``collected_notes()``
and say what it collected themselves, naming the file.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager

# catch_warnings swaps process-wide state and restores it on exit, so two overlapping captures
# (two napari workers) could restore each other's and leave warnings swallowed for good. One
# capture is shared instead: the first block in installs it, the last one out removes it.
_lock = threading.Lock()
_shared: dict = {"users": 0, "capture": None, "records": None}


@contextmanager
def collected_notes():
    """Collect the texts of the ``UserWarning``s issued while the block runs, each once and in
    order, instead of Python printing them. The list is filled when the block ends, also when it
    raises. Other warning categories (deprecations, numerical internals) are dropped: they are
    not for the user. A block overlapping another (another thread) may also get its notes."""
    notes: list[str] = []
    with _lock:
        if not _shared["users"]:
            _shared["capture"] = warnings.catch_warnings(record=True)
            _shared["records"] = _shared["capture"].__enter__()
            warnings.simplefilter("always")  # every file's note, not only the first per process
        _shared["users"] += 1
        records, start = _shared["records"], len(_shared["records"])
    try:
        yield notes
    finally:
        with _lock:
            for record in records[start:]:
                text = str(record.message)
                if issubclass(record.category, UserWarning) and text not in notes:
                    notes.append(text)
            _shared["users"] -= 1
            if not _shared["users"]:
                _shared["capture"].__exit__(None, None, None)
                _shared["capture"] = _shared["records"] = None
