"""Dose simulation: live preview on the slider, full resolution on release.

The preview simulates what is on screen: the visible region at full resolution once the view
is zoomed in far enough for it to fit ``PREVIEW_MAX_SIDE``, else the whole image decimated
(every k-th pixel keeps per-pixel noise statistics). Panning or zooming refreshes it.
"""

from __future__ import annotations

import math

import napari
import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._layers import PARAMS_KEY, add_image, derived_kwargs
from .._persist import remember
from .._state import DoseSettings
from ._bind import bind
from ._common import BackgroundTask, LayerCombo, report_error, report_note

METHODS = ("moments", "binomial", "seed")
PREVIEW_MAX_SIDE = 768  # preview: at most ~0.6 Mpx whatever the detector size


def viewer_camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def preview_window(shape, corner_pixels, max_side: int = PREVIEW_MAX_SIDE):
    """``(rows, cols, step)`` of the image to simulate for a preview: the visible region
    (``corner_pixels``, napari's on-screen bounding box in data pixels) at full resolution when
    it fits ``max_side`` and is not the whole image, else the whole image every ``step`` pixels."""
    h, w = shape
    corners = np.asarray(corner_pixels, dtype=int)
    if corners.shape[-1] >= 2 and corners.any():  # all zero: the layer was never drawn
        (r0, c0), (r1, c1) = corners[0, -2:], corners[1, -2:]
        r0, c0 = max(int(r0), 0), max(int(c0), 0)
        r1, c1 = min(int(r1) + 1, h), min(int(c1) + 1, w)
        if 0 < r1 - r0 <= max_side and 0 < c1 - c0 <= max_side and (r1 - r0) * (c1 - c0) < h * w:
            return slice(r0, r1), slice(c0, c1), 1
    step = max(1, math.ceil(max(h, w) / max_side))
    return slice(0, h, step), slice(0, w, step), step


def _fit_attr(fit, *names, default=None):
    for n in names:
        if hasattr(fit, n):
            return getattr(fit, n)
    return default


def percent(fraction: float) -> str:
    return f"{fraction * 100:.3g} %"


class DoseWidget(QWidget):
    """Public attributes: ``settings`` (DoseSettings: fraction, method, seed, offset, gain,
    electronic_sigma), ``layer_combo`` (``.layer``), ``slider`` (5..100 %), ``plot``
    (variance-vs-mean), ``fit`` (last NoiseFit), ``preview_layer``, ``result_layer``, ``task``
    (its BackgroundTask: estimating and simulating share it), ``worker``;
    handlers: ``estimate()`` -> worker, ``preview(fraction=None)`` -> layer, ``apply(fraction=None)``
    -> worker (full resolution), ``params()`` -> NoiseParams.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.settings = DoseSettings()
        remember(self.settings, "dose", skip=("offset", "gain", "electronic_sigma"))
        self.fit = None
        self.preview_layer = None
        self.result_layer = None

        self.layer_combo = LayerCombo(
            napari_viewer, filter=lambda ly: not ly.name.endswith(" dose preview")
        )
        self.layer_combo.currentTextChanged.connect(self._on_layer_changed)

        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(5, 100)
        self.slider.setTracking(True)
        self.slider_label = QLabel("")
        slider_row = QHBoxLayout()
        slider_row.addWidget(self.slider, 1)
        slider_row.addWidget(self.slider_label)
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.sliderReleased.connect(lambda: self.apply())
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(20)
        self._preview_timer.timeout.connect(self._timed_preview)
        # A preview follows the view: pan or zoom and it is simulated again for what is shown.
        camera = viewer_camera(napari_viewer)
        camera.events.center.connect(self._on_camera)
        camera.events.zoom.connect(self._on_camera)

        self.method_combo = QComboBox()
        self.method_combo.addItems(METHODS)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.offset_spin = self._double(-1e6, 1e6, 3)
        self.gain_spin = self._double(1e-6, 1e6, 5)
        self.sigma_spin = self._double(0.0, 1e6, 3)
        self.estimate_button = QPushButton("Estimate from image")
        self.estimate_button.clicked.connect(self.estimate)
        self.apply_button = QPushButton("Simulate at full resolution")
        self.apply_button.clicked.connect(lambda: self.apply())
        from .._plots import VarianceMeanPlot

        self.plot = VarianceMeanPlot()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.task = BackgroundTask([self.estimate_button, self.apply_button], status=self.status)

        form = QFormLayout()
        form.addRow("image", self.layer_combo)
        form.addRow("dose", slider_row)
        form.addRow("method", self.method_combo)
        form.addRow("seed", self.seed_spin)
        form.addRow("offset (DN)", self.offset_spin)
        form.addRow("gain (DN/quantum)", self.gain_spin)
        form.addRow("electronic σ (DN)", self.sigma_spin)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.estimate_button)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.apply_button)
        layout.addWidget(self.status)

        bind(self.slider, self.settings, "fraction", lambda v: v / 100.0, lambda f: round(f * 100))
        bind(self.method_combo, self.settings, "method")
        bind(self.seed_spin, self.settings, "seed")
        bind(self.offset_spin, self.settings, "offset")
        bind(self.gain_spin, self.settings, "gain")
        bind(self.sigma_spin, self.settings, "electronic_sigma")
        for spin in (self.offset_spin, self.gain_spin, self.sigma_spin):
            spin.editingFinished.connect(self._on_params_edited)  # typed by the user only
        self.slider_label.setText(percent(self.settings.fraction))
        self._on_layer_changed(self.layer_combo.currentText())

    @property
    def worker(self):
        return self.task.worker

    @staticmethod
    def _double(lo, hi, decimals):
        spin = QDoubleSpinBox()
        spin.setRange(lo, hi)
        spin.setDecimals(decimals)
        spin.setKeyboardTracking(False)
        return spin

    # -- parameters ----------------------------------------------------------------------------
    def params(self):
        from mammo_denoise.physics.params import NoiseParams

        s = self.settings
        return NoiseParams(float(s.offset), float(s.gain), float(s.electronic_sigma))

    def set_params(self, params) -> None:
        self.settings.offset = float(params.offset)
        self.settings.gain = float(params.gain)
        self.settings.electronic_sigma = float(params.electronic_sigma)

    def _on_params_edited(self):
        """Parameters the user typed belong to the image: Denoise and Fine-tune take them from
        the layer instead of estimating their own."""
        layer = self.layer_combo.layer
        if layer is None or np.ndim(layer.data) != 2:
            return
        layer.metadata[PARAMS_KEY] = self.params()
        self.status.setText(f"noise parameters set for '{layer.name}': Denoise and Fine-tune use them")

    def _on_layer_changed(self, name: str):
        layer = self.layer_combo.layer
        params = layer.metadata.get(PARAMS_KEY) if layer is not None else None
        if params is not None:
            self.set_params(params)
            self.status.setText("noise parameters from the layer")

    def _source(self):
        layer = self.layer_combo.layer
        if layer is None:
            report_error("choose an image layer first", "Dose simulation")
            return None
        if layer.multiscale or np.ndim(layer.data) != 2 or getattr(layer, "rgb", False):
            report_error(f"layer '{layer.name}' is not a single 2D grey image", "Dose simulation")
            return None
        return layer

    def estimate(self):
        """Fit the noise model (block variance vs mean) in a worker; fills the boxes and plot."""
        layer = self._source()
        if layer is None or self.task.busy:
            return None
        data = np.asarray(layer.data, dtype=np.float32)

        def work():
            from mammo_denoise.physics.noise import fit_noise_model

            return fit_noise_model(data, warn=False)  # its notes are shown in _on_fit

        return self.task.start(work, status="estimating noise parameters…",
                               failed="Noise estimation failed",
                               on_result=lambda fit: self._on_fit(layer, fit))

    def _on_fit(self, layer, fit):
        self.fit = fit
        for text in _fit_attr(fit, "warnings", default=()):
            report_note(layer.name, text)
        params = _fit_attr(fit, "params")
        if params is not None:
            self.set_params(params)
            layer.metadata[PARAMS_KEY] = params
        means = np.asarray(_fit_attr(fit, "means", "block_means", default=[]), float)
        variances = np.asarray(_fit_attr(fit, "variances", "block_variances", default=[]), float)
        valid = _fit_attr(fit, "valid", default=None)
        valid = np.isfinite(means) & np.isfinite(variances) & (
            np.ones(means.shape, bool) if valid is None else np.asarray(valid, bool)
        )
        inlier = _fit_attr(fit, "inlier", "inliers", "inlier_mask")
        inlier = None if inlier is None else np.asarray(inlier, bool)[valid]
        self.plot.plot_fit(
            means[valid],
            variances[valid],
            inlier,
            params=params,
            slope=_fit_attr(fit, "slope"),
            intercept=_fit_attr(fit, "intercept"),
        )
        self.status.setText(
            f"estimated: offset {params.offset:.4g}, gain {params.gain:.4g}, "
            f"σe {params.electronic_sigma:.3g}"
            if params is not None
            else "estimated"
        )

    # -- preview -------------------------------------------------------------------------------
    def _on_slider(self, value: int):
        self.slider_label.setText(f"{value} %")
        self._preview_timer.start()

    def _on_camera(self, event=None):
        try:
            if self.preview_layer is not None and self.preview_layer in self.viewer.layers:
                self._preview_timer.start()
        except RuntimeError:  # the Qt object was deleted; napari still holds the callback
            pass

    def _timed_preview(self):
        # Slider moves preview what there is: without an image there is nothing to say (the
        # explicit actions still ask for one). While a full-resolution result is on its way,
        # no stale preview.
        if not self.task.busy and self.layer_combo.layer is not None:
            self.preview()

    def preview(self, fraction: float | None = None):
        """Simulate what is on screen (``preview_window``) and show it as '<name> dose preview'."""
        layer = self._source()
        if layer is None:
            return None
        fraction = self.settings.fraction if fraction is None else float(fraction)
        try:
            from mammo_denoise.physics.dose import simulate_dose

            params = self.params()
            rows, cols, step = preview_window(np.shape(layer.data), layer.corner_pixels)
            part = np.asarray(layer.data[rows, cols], dtype=np.float32)
            sim = simulate_dose(part, fraction, params, method=self.settings.method,
                                rng=self.settings.seed)
        except Exception as exc:  # noqa: BLE001
            report_error(exc, "Dose preview")
            return None
        name = f"{layer.name} dose preview"
        limits = self._limits(layer, fraction, params)
        scale = np.asarray(layer.scale) * step
        translate = np.asarray(layer.translate) + np.asarray(layer.scale) * (rows.start, cols.start)
        if name in self.viewer.layers:
            preview = self.viewer.layers[name]
            preview.data = sim
            preview.scale = scale
            preview.translate = translate
            preview.contrast_limits = limits
        else:
            kwargs = derived_kwargs(layer, name, "dose preview", scale=tuple(scale),
                                    translate=tuple(translate), contrast_limits=limits)
            preview = add_image(self.viewer, sim, kwargs)
        preview.metadata["dose_fraction"] = fraction
        preview.metadata["decimation"] = step
        preview.metadata["region"] = (rows.start, rows.stop, cols.start, cols.stop)
        self.preview_layer = preview
        where = (f"every {step}th pixel" if step > 1 else
                 f"visible {rows.stop - rows.start}x{cols.stop - cols.start} px at full resolution")
        self.status.setText(f"preview at {percent(fraction)} ({where})")
        return preview

    @staticmethod
    def _limits(layer, fraction, params):
        lo, hi = layer.contrast_limits
        off = params.offset
        return (off + fraction * (lo - off), off + fraction * (hi - off))

    # -- full resolution -----------------------------------------------------------------------
    def apply(self, fraction: float | None = None):
        """Full-resolution simulation in a worker: adds '<name> @ 20 % dose'."""
        layer = self._source()
        if layer is None:
            return None
        if self.task.busy:
            return None
        self._preview_timer.stop()
        fraction = self.settings.fraction if fraction is None else float(fraction)
        try:
            params = self.params()
        except Exception as exc:  # noqa: BLE001
            report_error(exc, "Dose simulation")
            return None
        method, seed = self.settings.method, int(self.settings.seed)
        data = np.asarray(layer.data, dtype=np.float32)

        def work():
            from mammo_denoise.physics.dose import simulate_dose

            return simulate_dose(data, fraction, params, method=method, rng=seed)

        return self.task.start(
            work, status=f"simulating {percent(fraction)} dose at full resolution…",
            failed="Dose simulation failed",
            on_result=lambda out: self._on_simulated(layer, out, fraction, params, method, seed),
        )

    def _on_simulated(self, layer, out, fraction, params, method, seed):
        name = f"{layer.name} @ {percent(fraction)} dose"
        derivation = (
            f"simulated {percent(fraction)} dose ({method}, seed {seed}, offset {params.offset:g}, "
            f"gain {params.gain:g}, sigma_e {params.electronic_sigma:g})"
        )
        kwargs = derived_kwargs(
            layer, name, derivation, params=params,
            contrast_limits=self._limits(layer, fraction, params),
        )
        kwargs["metadata"]["dose_fraction"] = fraction * float(
            layer.metadata.get("dose_fraction", 1.0)
        )
        kwargs["metadata"]["dose_seed"] = seed
        out = np.asarray(out, dtype=np.float32)
        if name in self.viewer.layers:
            target = self.viewer.layers[name]
            target.data = out
            target.metadata.update(kwargs["metadata"])
        else:
            target = add_image(self.viewer, out, kwargs)
        preview = f"{layer.name} dose preview"
        if preview in self.viewer.layers:
            self.viewer.layers.remove(preview)
        self.preview_layer = None
        self.result_layer = target
        self.status.setText(f"added '{name}'")
