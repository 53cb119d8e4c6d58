"""What the widgets share: an image-layer chooser, notifications, and ``BackgroundTask``."""

from __future__ import annotations

import inspect
import threading

import napari
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QProgressBar, QPushButton

from .._workers import Note, error_message


class LayerCombo(QComboBox):
    """A combo box of the viewer's image layers that follows layers added, removed or renamed.

    ``layer`` gets/sets the chosen layer (a Layer, a name, or None).
    """

    def __init__(self, viewer: napari.Viewer, parent=None, filter=None):
        super().__init__(parent)
        self.viewer = viewer
        self._filter = filter
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(14)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self.refresh)
        viewer.layers.events.reordered.connect(self.refresh)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _on_inserted(self, event=None):
        layer = getattr(event, "value", None)
        if layer is not None:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _candidates(self):
        out = [ly for ly in self.viewer.layers if isinstance(ly, napari.layers.Image)]
        if self._filter is not None:
            out = [ly for ly in out if self._filter(ly)]
        return out

    def refresh(self, event=None):
        try:
            self._refresh()
        except RuntimeError:  # the Qt object was deleted; napari still holds the callback
            pass

    def _refresh(self):
        current = self.currentText()
        names = [ly.name for ly in self._candidates()]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentIndex(names.index(current))
        self.blockSignals(False)
        if current not in names:
            self.currentIndexChanged.emit(self.currentIndex())

    @property
    def layer(self):
        name = self.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    @layer.setter
    def layer(self, value):
        name = value if isinstance(value, str) else getattr(value, "name", "")
        index = self.findText(name)
        if index < 0:
            self.refresh()
            index = self.findText(name)
        if index >= 0:
            self.setCurrentIndex(index)


def report_error(exc: BaseException | str, context: str = "") -> str:
    """Show a napari error notification (never raise) and return its text."""
    text = exc if isinstance(exc, str) else error_message(exc)
    message = f"{context}: {text}" if context else text
    show_error(message)
    return message


def report_info(message: str) -> None:
    show_info(message)


def report_note(source: str, text: str) -> None:
    """A warning notification naming the layer: something about its result is approximate."""
    show_warning(f"{source}: {text}")


def run_controls(run_text: str, on_run):
    """``(run, cancel, row, bar, status)``: Run and Cancel buttons side by side in ``row`` (a
    ``BackgroundTask`` wires Cancel), an idle progress bar and a wrapping status line."""
    run, cancel = QPushButton(run_text), QPushButton("Cancel")
    run.clicked.connect(on_run)
    row = QHBoxLayout()
    row.addWidget(run)
    row.addWidget(cancel)
    bar = QProgressBar()
    bar.setRange(0, 1)
    bar.setValue(0)
    status = QLabel("")
    status.setWordWrap(True)
    return run, cancel, row, bar, status


class BackgroundTask:
    """One widget's long job on a napari thread worker, and everything around it.

    ``start(work, ...)`` runs ``work()`` (a function, or a generator yielding progress messages)
    off the main thread. Until it ends, however it ends, the run buttons are disabled and Cancel
    is enabled. On the main thread, each yielded message goes to ``on_progress`` (a ``Note``
    becomes a warning notification naming its layer instead), the return value to ``on_result``,
    and an exception to one error notification line (never a traceback), or to the info
    ``cancelled`` after Cancel; ``on_finished`` runs last. A callback that raises is reported the
    same way. The work stops early by polling ``task.cancelled`` (the core's ``cancel=``).
    """

    def __init__(self, run_buttons, cancel_button=None, status=None):
        self.worker = None
        self._run_buttons = tuple(run_buttons)
        self._cancel_button = cancel_button
        self._status = status
        self._stop = threading.Event()
        self.cancelled = self._stop.is_set  # polled from the worker thread
        if cancel_button is not None:
            cancel_button.setEnabled(False)
            cancel_button.clicked.connect(self.cancel)

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def start(self, work, *, status: str, failed: str, cancelled: str = "cancelled",
              on_progress=None, on_result=None, on_finished=None):
        """Start ``work`` in a worker and return it; ``failed`` prefixes an error's message."""
        self._stop.clear()
        worker = thread_worker(work, start_thread=False, ignore_errors=True)()
        if inspect.isgeneratorfunction(work):
            worker.yielded.connect(lambda msg: self._guarded(failed, self._hand_on, msg, on_progress))
        if on_result is not None:
            worker.returned.connect(lambda result: self._guarded(failed, on_result, result))
        worker.errored.connect(lambda exc: self._on_errored(exc, failed, cancelled))
        worker.finished.connect(lambda: self._on_finished(on_finished))
        self.worker = worker
        self._set_running(True)
        self._say(status)
        worker.start()
        return worker

    def cancel(self):
        """Ask the work to stop at its next ``cancelled()`` check."""
        self._stop.set()
        self._say("cancelling…")

    @staticmethod
    def _hand_on(msg, on_progress):
        if isinstance(msg, Note):
            report_note(msg.source, msg.text)
        elif on_progress is not None:
            on_progress(msg)

    def _guarded(self, failed: str, callback, *args):
        try:
            callback(*args)
        except Exception as exc:  # noqa: BLE001 - a notification, not a traceback
            report_error(exc, failed)
            self._say("failed")

    def _on_errored(self, exc, failed, cancelled):
        from mammo_denoise.errors import Cancelled

        if isinstance(exc, Cancelled) or self.cancelled():
            report_info(cancelled)
            self._say("cancelled")
        else:
            report_error(exc, failed)
            self._say("failed")

    def _on_finished(self, on_finished):
        self.worker = None
        self._set_running(False)
        if on_finished is not None:
            on_finished()

    def _set_running(self, running: bool):
        for button in self._run_buttons:
            button.setEnabled(not running)
        if self._cancel_button is not None:
            self._cancel_button.setEnabled(running)

    def _say(self, text: str):
        if self._status is not None:
            self._status.setText(text)
