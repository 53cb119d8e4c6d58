"""Run a core call that reports through a ``progress`` callback as a generator of messages.

napari's ``thread_worker`` generators can only yield from their own frame, while the core
(``denoise``, ``train``) reports through callbacks. ``iterate_progress`` runs the call on a helper
thread and yields each message it reports; the call's return value is the generator's return
value (``worker.returned``), its exception is re-raised (``worker.errored``).

This is the worker-thread side; ``_widgets._common.BackgroundTask`` is the main-thread side
(starting the worker, buttons, notifications) that every widget uses.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

_DONE = object()


@dataclass(frozen=True)
class Progress:
    """A typed progress message: ``done`` of ``total`` steps, with a short text."""

    done: int
    total: int
    text: str = ""


@dataclass(frozen=True)
class Note:
    """A note the core issued as a warning about ``source`` (a layer's name), for a notification
    on the main thread (``mammo_denoise.notes``)."""

    source: str
    text: str


def iterate_progress(call):
    """``call(progress)`` on a helper thread; yields what it passes to ``progress``."""
    q: queue.Queue = queue.Queue()
    box: dict = {}

    def target():
        try:
            box["result"] = call(q.put)
        except BaseException as exc:  # noqa: BLE001 - handed to the worker below
            box["error"] = exc
        finally:
            q.put(_DONE)

    thread = threading.Thread(target=target, daemon=True, name="mammo-denoise-work")
    thread.start()
    while True:
        msg = q.get()
        if msg is _DONE:
            break
        yield msg
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def error_message(exc: BaseException) -> str:
    """A clear one-line message for a notification."""
    from mammo_denoise.errors import MammoDenoiseError

    if isinstance(exc, MammoDenoiseError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
