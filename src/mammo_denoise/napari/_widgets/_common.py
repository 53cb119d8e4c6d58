"""Small Qt helpers the widgets share: an image-layer chooser and error reporting."""

from __future__ import annotations

import napari
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QComboBox

from .._workers import error_message


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
