"""Compare: difference layer, side-by-side grid, visibility toggle and noise power spectra."""

from __future__ import annotations

import napari
import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._layers import META_KEY, PARAMS_KEY, add_image, derived_kwargs
from ._common import LayerCombo, report_error

NPS_REGION = "NPS region"
DIFF_COLORMAP = "PiYG"


def flat_region(image, size: int | None = None, noisy=None) -> tuple[int, int, int, int]:
    """``(row0, col0, height, width)`` of the most uniform square ROI with signal.

    Uniformity is the relative standard deviation of the ROI about a fitted plane (of a denoised
    image this is mostly anatomy, so the smallest value is the flattest place). ROIs where ``noisy`` is clipped at its
    maximum (saturated open field: no noise left to measure) are skipped.
    """
    image = np.asarray(image, dtype=np.float32)
    top = None if noisy is None else float(np.max(noisy))
    h, w = image.shape
    if size is None:
        size = min(256, h // 2, w // 2)
    size = max(16, min(size, h, w))
    step = max(8, size // 2)
    level = np.median(image)
    yy, xx = np.mgrid[0:size, 0:size]
    design = np.c_[np.ones(size * size), yy.ravel(), xx.ravel()]
    pinv = np.linalg.pinv(design)
    best, best_score = (0, 0, size, size), np.inf
    for r in range(0, h - size + 1, step):
        for c in range(0, w - size + 1, step):
            roi = image[r : r + size, c : c + size]
            m = float(roi.mean())
            if not np.isfinite(m) or m <= 0 or m < 0.5 * level:
                continue
            if top is not None and np.mean(noisy[r : r + size, c : c + size] >= top) > 0.01:
                continue
            values = roi.ravel().astype(np.float64)
            score = float((values - design @ (pinv @ values)).std()) / m
            if score < best_score:
                best, best_score = (r, c, size, size), score
    return best


def _residual(noisy, denoised, params=None):
    """noisy − denoised in DN, or with ``params`` (one NoiseParams, or a list for a stack's
    frames) in noise standard deviations."""
    if params is None:
        return noisy - denoised
    from mammo_denoise.render import gat_residual

    if isinstance(params, (list, tuple)):
        return np.stack([gat_residual(n, d, p) for n, d, p in zip(noisy, denoised, params)])
    return gat_residual(noisy, denoised, params)


def viewer_grid(viewer):
    """The viewer's grid model (``viewer.canvas.grid`` since napari 0.9, else ``viewer.grid``)."""
    canvas = getattr(viewer, "canvas", None)
    grid = getattr(canvas, "grid", None) if canvas is not None else None
    return grid if grid is not None else viewer.grid


class CompareWidget(QWidget):
    """Public attributes: ``noisy_combo``/``denoised_combo`` (``.layer``), ``nps_plot``,
    ``nps_curves`` (dict label -> (freqs, nnps) after ``compute_nps()``), ``k_sigma`` (3.0: the
    colour limits, in noise σ, of the residual with ``sigma_check`` on);
    handlers: ``difference()`` -> layer, ``side_by_side(enabled=None)``, ``toggle()`` -> name of
    the layer now shown, ``add_nps_region()``, ``compute_nps()`` -> dict.
    """

    def __init__(self, napari_viewer: napari.Viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.k_sigma = 3.0
        self.nps_curves: dict = {}
        self.region: tuple[int, int, int, int] | None = None
        self._followed = None  # (denoised layer, its data-event callback)

        self.noisy_combo = LayerCombo(napari_viewer)
        self.denoised_combo = LayerCombo(napari_viewer)
        self.noisy_combo.currentTextChanged.connect(self._pair_denoised)

        self.diff_button = QPushButton("Difference (noisy − denoised)")
        self.diff_button.clicked.connect(self.difference)
        self.sigma_check = QCheckBox("in noise σ (Anscombe domain)")
        self.sigma_check.setToolTip(
            "anscombe(noisy) − anscombe(denoised) with the image's noise parameters: removed noise "
            "is ~N(0, 1) everywhere, so removed anatomy stands out (raw FOR PROCESSING data only)")
        self.grid_button = QPushButton("Side by side")
        self.grid_button.setCheckable(True)
        self.grid_button.clicked.connect(lambda checked: self.side_by_side(checked))
        self.toggle_button = QPushButton("Toggle noisy / denoised")
        self.toggle_button.clicked.connect(self.toggle)
        row = QHBoxLayout()
        row.addWidget(self.grid_button)
        row.addWidget(self.toggle_button)

        self.region_button = QPushButton("Choose NPS region")
        self.region_button.setToolTip(
            f"Adds a '{NPS_REGION}' rectangle at a flat place; move or redraw it, then compute"
        )
        self.region_button.clicked.connect(self.add_nps_region)
        self.nps_button = QPushButton("Noise power spectrum")
        self.nps_button.clicked.connect(self.compute_nps)
        row2 = QHBoxLayout()
        row2.addWidget(self.region_button)
        row2.addWidget(self.nps_button)
        from .._plots import NPSPlot

        self.nps_plot = NPSPlot()
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("noisy", self.noisy_combo)
        form.addRow("denoised", self.denoised_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.diff_button)
        layout.addWidget(self.sigma_check)
        layout.addLayout(row)
        layout.addLayout(row2)
        layout.addWidget(self.nps_plot, 1)
        layout.addWidget(self.status)
        self._pair_denoised(self.noisy_combo.currentText())

    def _pair_denoised(self, name: str):
        if name and f"{name} denoised" in self.viewer.layers:
            self.denoised_combo.layer = f"{name} denoised"

    def _pair(self):
        noisy, denoised = self.noisy_combo.layer, self.denoised_combo.layer
        if noisy is None or denoised is None:
            report_error("choose a noisy and a denoised image layer", "Compare")
            return None
        if noisy is denoised:
            report_error("noisy and denoised are the same layer", "Compare")
            return None
        if np.shape(noisy.data) != np.shape(denoised.data):
            report_error(
                f"'{noisy.name}' {np.shape(noisy.data)} and '{denoised.name}' "
                f"{np.shape(denoised.data)} differ in size",
                "Compare",
            )
            return None
        return noisy, denoised

    def difference(self):
        """Add (or update) '<noisy> difference' = noisy − denoised, diverging, centred on 0, its
        colours scaled inside the breast; with ``sigma_check`` on, '<noisy> residual (σ)' = the
        same in noise standard deviations (``render.gat_residual``), limits ±``k_sigma``."""
        from mammo_denoise.render import breast_mask, difference_limit

        pair = self._pair()
        if pair is None:
            return None
        noisy, denoised = pair
        noisy_data = np.asarray(noisy.data, np.float32)
        meta = noisy.metadata.get(META_KEY)
        in_sigma = self.sigma_check.isChecked()
        try:
            params = self._noise_params(noisy, noisy_data) if in_sigma else None
            diff = _residual(noisy_data, np.asarray(denoised.data, np.float32), params)
            if in_sigma:
                limits = (-self.k_sigma, self.k_sigma)
                shown = f"±{self.k_sigma:g} noise σ shown"
            else:
                # In raw data the open field holds the most counts and so the largest residual:
                # scaled by the whole image, the breast's residual would look flat.
                mask = breast_mask(noisy_data, meta, noisy.metadata.get(PARAMS_KEY)
                                   if noisy_data.ndim == 2 else None)
                limit = difference_limit(diff, mask)
                limits = (-limit, limit)
                shown = f"±{limit:.3g} DN shown (99.5th percentile of |difference| in the breast)"
        except Exception as exc:  # noqa: BLE001
            report_error(exc, "Compare")
            return None
        name = f"{noisy.name} residual (σ)" if in_sigma else f"{noisy.name} difference"
        # Green where the noisy pixel shows brighter than the denoised one, whichever way the
        # image's grey scale runs (raw and MONOCHROME1 data show higher values darker).
        colormap = f"{DIFF_COLORMAP}_r" if noisy.colormap.name == "gray_r" else DIFF_COLORMAP
        kwargs = derived_kwargs(
            noisy,
            name,
            f"{'residual in noise σ' if in_sigma else 'difference'} '{noisy.name}' − '{denoised.name}'",
            colormap=colormap,
            contrast_limits=limits,
            gamma=1.0,
        )
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = diff
            layer.contrast_limits = limits
            layer.colormap = colormap
            layer.gamma = 1.0
            layer.metadata.update(kwargs["metadata"])
        else:
            layer = add_image(self.viewer, diff, kwargs)
        self._follow(noisy, denoised, layer, params)
        self.status.setText(f"{name}: {shown}")
        return layer

    def _noise_params(self, noisy, data):
        """The noisy layer's NoiseParams; estimated (and kept on the layer) when it has none."""
        from mammo_denoise.errors import MammoDenoiseError

        meta = noisy.metadata.get(META_KEY)
        if meta is not None and not meta.is_linear:
            raise MammoDenoiseError(
                f"'{noisy.name}' is not raw (linear) data: the residual in noise σ needs the "
                "Poisson-Gaussian noise of a FOR PROCESSING image")
        params = noisy.metadata.get(PARAMS_KEY)
        if params is None:
            from mammo_denoise.physics.noise import estimate_noise_params

            params = (estimate_noise_params(data) if data.ndim == 2
                      else [estimate_noise_params(frame) for frame in data])
            noisy.metadata[PARAMS_KEY] = params
        return params

    def _follow(self, noisy, denoised, diff_layer, params=None):
        """Keep the difference equal to noisy − denoised while the denoised layer changes (its
        strength, a rerun). Colours stay as first scaled, so a smaller difference looks smaller."""
        self._unfollow()

        def update(*_):
            layers = self.viewer.layers
            if not all(x in layers for x in (noisy, denoised, diff_layer)):
                self._unfollow()
            elif np.shape(noisy.data) == np.shape(denoised.data):
                diff_layer.data = _residual(np.asarray(noisy.data, np.float32),
                                            np.asarray(denoised.data, np.float32), params)

        denoised.events.data.connect(update)
        self._followed = (denoised, update)

    def _unfollow(self):
        if self._followed is not None:
            layer, callback = self._followed
            layer.events.data.disconnect(callback)
            self._followed = None

    def side_by_side(self, enabled: bool | None = None) -> bool:
        """Grid view on/off (``None`` toggles); returns the new state."""
        grid = viewer_grid(self.viewer)
        enabled = (not grid.enabled) if enabled is None else bool(enabled)
        if enabled:
            for layer in (self.noisy_combo.layer, self.denoised_combo.layer):
                if layer is not None:
                    layer.visible = True
        grid.enabled = enabled
        self.grid_button.setChecked(enabled)
        return enabled

    def toggle(self) -> str | None:
        """Show one of noisy/denoised and hide the other (the same place, blink comparison)."""
        noisy, denoised = self.noisy_combo.layer, self.denoised_combo.layer
        if noisy is None or denoised is None:
            report_error("choose a noisy and a denoised image layer", "Compare")
            return None
        show_denoised = noisy.visible
        noisy.visible = not show_denoised
        denoised.visible = show_denoised
        return denoised.name if show_denoised else noisy.name

    # -- noise power spectrum ------------------------------------------------------------------
    def _region_from_shapes(self, shape_2d):
        if NPS_REGION not in self.viewer.layers:
            return None
        shapes = self.viewer.layers[NPS_REGION]
        if not isinstance(shapes, napari.layers.Shapes) or len(shapes.data) == 0:
            return None
        verts = np.asarray(shapes.data[-1])[:, -2:]
        ref = self.noisy_combo.layer
        # shapes data -> world -> image data coordinates
        world = verts * np.asarray(shapes.scale)[-2:] + np.asarray(shapes.translate)[-2:]
        data = (world - np.asarray(ref.translate)[-2:]) / np.asarray(ref.scale)[-2:]
        r0, c0 = np.floor(data.min(0)).astype(int)
        r1, c1 = np.ceil(data.max(0)).astype(int)
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, shape_2d[0]), min(c1, shape_2d[1])
        if r1 - r0 < 16 or c1 - c0 < 16:
            report_error(f"the '{NPS_REGION}' rectangle is smaller than 16 pixels", "Compare")
            return None
        return (int(r0), int(c0), int(r1 - r0), int(c1 - c0))

    def add_nps_region(self):
        """Add a movable rectangle at an automatically found flat region."""
        pair = self._pair()
        if pair is None:
            return None
        noisy, denoised = pair
        r, c, h, w = flat_region(denoised.data, noisy=np.asarray(noisy.data))
        rect = np.array([[r, c], [r, c + w], [r + h, c + w], [r + h, c]], float)
        if NPS_REGION in self.viewer.layers:
            self.viewer.layers.remove(NPS_REGION)
        layer = self.viewer.add_shapes(
            [rect],
            shape_type="rectangle",
            name=NPS_REGION,
            edge_color="yellow",
            face_color="transparent",
            edge_width=3 * float(noisy.scale[-1]),
            scale=tuple(noisy.scale)[-2:],
            translate=tuple(noisy.translate)[-2:],
        )
        return layer

    def compute_nps(self) -> dict:
        """Radial NNPS of noisy and denoised in the chosen (or a flat) region; plotted log-y."""
        pair = self._pair()
        if pair is None:
            return {}
        noisy, denoised = pair
        try:
            from mammo_denoise.metrics import nps_radial

            region = self._region_from_shapes(np.shape(noisy.data))
            if region is None:
                region = flat_region(denoised.data, noisy=np.asarray(noisy.data))
            r, c, h, w = region
            # An image whose header has no usable spacing is shown at scale 1: per pixel, not mm.
            meta = noisy.metadata.get(META_KEY)
            unit = "pixel" if meta is not None and meta.pixel_spacing_mm is None else "mm"
            pixel_mm = 1.0 if unit == "pixel" else float(noisy.scale[-1])
            side = min(256, h, w)
            curves = {}
            for label, layer in (("noisy", noisy), ("denoised", denoised)):
                roi = np.asarray(layer.data[r : r + h, c : c + w], dtype=np.float64)
                # normalised (NNPS = NPS / mean^2), plane-detrended, 50 % overlapping sub-ROIs
                freqs, nnps = nps_radial(roi, pixel_mm, roi=side, normalise=True)
                curves[f"{label} ({layer.name})"] = (np.asarray(freqs), np.asarray(nnps))
        except Exception as exc:  # noqa: BLE001
            report_error(exc, "Noise power spectrum")
            return {}
        self.region = region
        self.nps_curves = curves
        self.nps_plot.plot_curves(curves, unit)
        self.status.setText(f"NPS region rows {r}:{r + h}, cols {c}:{c + w}")
        return curves
