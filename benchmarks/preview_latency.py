"""Dose-slider preview latency of the napari Dose widget on a full-field image.

    xvfb-run -a python benchmarks/preview_latency.py

Times ``DoseWidget.preview(fraction)`` end to end (simulation + layer update + a canvas repaint)
on a 3328 x 2560 phantom, for eight slider positions, twice: the whole image in view (simulated
decimated) and zoomed in 8x from the whole-image view (the visible region simulated at full
resolution, as napari's canvas reports it). Writes
benchmarks/results/preview_latency.json with the machine, date and command.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

SHAPE = (3328, 2560)
FRACTIONS = (0.05, 0.2, 0.4, 0.6, 0.8, 0.3, 0.1, 0.9)


def main() -> None:
    import napari

    from mammo_denoise.napari._layers import image_layer_kwargs
    from mammo_denoise.napari._widgets.dose import DoseWidget
    from mammo_denoise.physics.phantom import make_phantom

    started = time.perf_counter()
    # The widget's defaults, not whatever this user's widgets remember (napari/_persist.py).
    os.environ["MAMMO_DENOISE_CONFIG_DIR"] = tempfile.mkdtemp(prefix="mammo-latency-")
    phantom = make_phantom(seed=0, shape=SHAPE, dose=1.0)
    viewer = napari.Viewer(show=False)
    viewer.add_image(phantom.noisy, **image_layer_kwargs(phantom.noisy, phantom.meta, params=phantom.params))
    widget = DoseWidget(viewer)
    canvas = viewer.window._qt_viewer.canvas.native

    from qtpy.QtWidgets import QApplication

    from mammo_denoise.napari._widgets.dose import viewer_camera

    def timed(zoom):
        viewer.reset_view()
        camera = viewer_camera(viewer)
        camera.zoom = camera.zoom * zoom
        for _ in range(3):  # draw, so that napari sets the layer's on-screen region
            canvas.repaint()
            QApplication.processEvents()
        widget.preview(0.5)  # creates or re-places the layer
        times = []
        for fraction in FRACTIONS:
            t0 = time.perf_counter()
            widget.preview(fraction)
            canvas.repaint()
            times.append(time.perf_counter() - t0)
        return times, widget.preview_layer.metadata.get("decimation"), list(widget.preview_layer.data.shape)

    zoomed, zoomed_step, zoomed_shape = timed(8.0)
    if zoomed_step != 1:
        raise SystemExit(f"zoomed view still decimated x{zoomed_step}: canvas too large for the zoom?")
    times, decimation, _ = timed(1.0)
    result = {
        "shape": list(SHAPE),
        "decimation": decimation,
        "latency_ms": [round(1000 * t, 1) for t in times],
        "median_ms": round(1000 * float(np.median(times)), 1),
        "max_ms": round(1000 * max(times), 1),
        "zoomed_region": zoomed_shape,
        "zoomed_latency_ms": [round(1000 * t, 1) for t in zoomed],
        "zoomed_median_ms": round(1000 * float(np.median(zoomed)), 1),
    }
    out = C.write_result("preview_latency", result, started)
    print(f"preview latency on {SHAPE[0]}x{SHAPE[1]}: median {result['median_ms']} ms, "
          f"max {result['max_ms']} ms; zoomed in on {zoomed_shape}: median "
          f"{result['zoomed_median_ms']} ms -> {out}")


if __name__ == "__main__":
    main()
