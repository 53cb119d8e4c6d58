"""Two-way binding between Qt inputs and a psygnal evented dataclass field."""

from __future__ import annotations

from qtpy.QtWidgets import QAbstractSlider, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox


def bind(widget, settings, field: str, to_model=None, to_view=None):
    """Keep ``widget`` and ``settings.<field>`` equal, whichever changes."""
    signal = getattr(settings.events, field)
    to_model = to_model or (lambda v: v)
    to_view = to_view or (lambda v: v)
    guard = {"busy": False}

    def model_changed(value):
        if guard["busy"]:
            return
        guard["busy"] = True
        try:
            _set(widget, to_view(value))
        except RuntimeError:  # the Qt object is gone
            pass
        finally:
            guard["busy"] = False

    def view_changed(*_):
        if guard["busy"]:
            return
        guard["busy"] = True
        try:
            setattr(settings, field, to_model(_get(widget)))
        finally:
            guard["busy"] = False

    signal.connect(model_changed)
    if isinstance(widget, (QSpinBox, QDoubleSpinBox, QAbstractSlider)):
        widget.valueChanged.connect(view_changed)
    elif isinstance(widget, QComboBox):
        widget.currentTextChanged.connect(view_changed)
    elif isinstance(widget, QLineEdit):
        widget.textChanged.connect(view_changed)
    model_changed(getattr(settings, field))


def _get(widget):
    if isinstance(widget, (QSpinBox, QDoubleSpinBox, QAbstractSlider)):
        return widget.value()
    if isinstance(widget, QComboBox):
        return widget.currentText()
    return widget.text()


def _set(widget, value):
    if isinstance(widget, (QSpinBox, QDoubleSpinBox, QAbstractSlider)):
        widget.setValue(value)
    elif isinstance(widget, QComboBox):
        index = widget.findText(str(value))
        if index >= 0:
            widget.setCurrentIndex(index)
    else:
        widget.setText(str(value))
