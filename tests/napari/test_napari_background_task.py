"""BackgroundTask, the one mechanism behind the widgets' long work (napari/_widgets/_common.py)."""

from __future__ import annotations

import threading

import pytest

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.napari._workers import Note, Progress

WAIT = 30_000  # ms


@pytest.fixture
def panel(qtbot):
    """A Run and a Cancel button, a status line and the task that drives them."""
    from qtpy.QtWidgets import QLabel, QPushButton

    from mammo_denoise.napari._widgets._common import BackgroundTask

    run, cancel, status = QPushButton("Run"), QPushButton("Cancel"), QLabel("")
    for w in (run, cancel, status):
        qtbot.addWidget(w)
    return BackgroundTask([run], cancel, status), run, cancel, status


def _finish(qtbot, task):
    qtbot.waitUntil(lambda: not task.busy, timeout=WAIT)


def test_buttons_follow_the_run(qtbot, panel):
    task, run, cancel, _ = panel
    assert run.isEnabled() and not cancel.isEnabled()
    gate = threading.Event()
    task.start(lambda: gate.wait(10), status="working", failed="Failed")
    assert task.busy and not run.isEnabled() and cancel.isEnabled()
    gate.set()
    _finish(qtbot, task)
    assert run.isEnabled() and not cancel.isEnabled()


def test_an_error_in_the_work_gives_one_line_and_reenables_run(qtbot, panel, notes):
    task, run, cancel, status = panel
    results, finished = [], []

    def work():
        raise MammoDenoiseError("no pixel data", path="scan.dcm")

    task.start(work, status="working", failed="Denoising failed", on_result=results.append,
               on_finished=lambda: finished.append(True))
    _finish(qtbot, task)
    assert notes == [("error", "Denoising failed: scan.dcm: no pixel data")]
    assert results == [] and finished == [True]
    assert status.text() == "failed"
    assert run.isEnabled() and not cancel.isEnabled()


def test_cancel_stops_the_work_and_reenables_run(qtbot, panel, notes):
    task, run, cancel, status = panel
    results, progress = [], []
    started = threading.Event()

    def work():  # polls the task as the core's cancel= does
        started.set()
        for i in range(1000):
            if task.cancelled():
                from mammo_denoise.errors import Cancelled

                raise Cancelled("stopped")
            yield Progress(i, 1000)
            threading.Event().wait(0.01)
        return "done"

    task.start(work, status="working", failed="Failed", cancelled="Work cancelled: nothing added",
               on_progress=progress.append, on_result=results.append)
    assert started.wait(10)
    cancel.click()  # the button is wired to the task
    _finish(qtbot, task)
    assert results == [] and len(progress) < 1000
    assert notes == [("info", "Work cancelled: nothing added")]
    assert status.text() == "cancelled"
    assert run.isEnabled() and not cancel.isEnabled()
    task.start(task.cancelled, status="working", failed="Failed", on_result=results.append)
    _finish(qtbot, task)
    assert results == [False]  # a new run starts uncancelled


def test_messages_reach_the_widget_and_notes_become_warnings(qtbot, panel, notes):
    task, *_ = panel
    seen, results = [], []

    def work():
        yield Progress(1, 2)
        yield Note("L CC", "image is not linear raw data")
        yield Progress(2, 2)
        return 42

    task.start(work, status="working", failed="Failed", on_progress=seen.append,
               on_result=results.append)
    _finish(qtbot, task)
    assert seen == [Progress(1, 2), Progress(2, 2)] and results == [42]
    assert notes == [("warning", "L CC: image is not linear raw data")]


def test_a_failing_result_handler_is_a_notification_not_a_traceback(qtbot, panel, notes):
    task, run, _, status = panel

    def add_layer(result):
        raise ValueError("shape mismatch")

    task.start(lambda: 1, status="working", failed="Denoising failed", on_result=add_layer)
    _finish(qtbot, task)
    assert notes == [("error", "Denoising failed: ValueError: shape mismatch")]
    assert status.text() == "failed" and run.isEnabled()
