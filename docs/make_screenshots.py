"""Screenshots of the napari plugin's workflow, from the real window.

Run headless with::

    xvfb-run -a python docs/make_screenshots.py

Writes docs/screenshots/{01_denoise_compare_grid,02_dose_simulation,03_finetune}.png.
Uses the installed models (``mammo-unet`` when trained weights ship). When no model is installed
it saves a small random-init model to a temporary model folder and says so: the "denoised" image
is then not meaningful and the screenshot only shows the layout.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


OUT = Path(__file__).resolve().parent / "screenshots"
SIZE = (1500, 950)


def wait(app, widget, timeout=900.0):
    t0 = time.monotonic()
    while widget.worker is not None:
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{type(widget).__name__} did not finish")
    for _ in range(20):
        app.processEvents()


def settle(app, n=30):
    for _ in range(n):
        app.processEvents()
        time.sleep(0.01)


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from mammo_denoise.models import DEFAULT_MODEL, list_models
    from mammo_denoise.napari._sample_data import phantom_layer_data
    from mammo_denoise.napari._state import MODELS
    from mammo_denoise.napari._widgets.compare import CompareWidget
    from mammo_denoise.napari._widgets.denoise import DenoiseWidget
    from mammo_denoise.napari._widgets.dose import DoseWidget
    from mammo_denoise.napari._widgets.finetune import FinetuneWidget

    tmp = tempfile.mkdtemp(prefix="mammo-screenshots-")
    # The widgets' defaults, not whatever this user's widgets remember (napari/_persist.py).
    os.environ["MAMMO_DENOISE_CONFIG_DIR"] = tmp
    placeholder = False
    if not list_models():
        from mammo_denoise.models import make_denoiser, save_model

        os.environ["MAMMO_DENOISE_MODEL_DIR"] = tmp
        save_model(make_denoiser("unet", name="untrained-demo", seed=0), Path(tmp) / "untrained-demo")
        placeholder = True
        print("no trained model installed: using a random-init 'untrained-demo' model", file=sys.stderr)
    else:
        # fine-tuned demo models go to a temporary folder, not the user's
        os.environ.setdefault("MAMMO_DENOISE_MODEL_DIR", tmp)
    MODELS.refresh()
    model = DEFAULT_MODEL if DEFAULT_MODEL in MODELS.names() else MODELS.names()[0]

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-mammo-denoise")
    app = QApplication.instance()
    viewer.window._qt_window.resize(*SIZE)

    [(low, kw_low, _)] = phantom_layer_data(0.2)
    kw_low["name"] = "L CC 20 %"
    noisy = viewer.add_image(low, **kw_low)

    # 1. denoise + compare, side by side -------------------------------------------------------
    dw = DenoiseWidget(viewer)
    d_dock = viewer.window.add_dock_widget(dw, name="Denoise", area="right")
    cw = CompareWidget(viewer)
    c_dock = viewer.window.add_dock_widget(cw, name="Compare / difference", area="right")
    dw.layer_combo.layer = noisy
    dw.settings.model = model
    dw.run()
    wait(app, dw)
    cw.noisy_combo.layer = noisy
    cw.denoised_combo.layer = f"{noisy.name} denoised"
    cw.difference()
    cw.compute_nps()
    cw.side_by_side(True)
    viewer.reset_view()
    settle(app)
    viewer.screenshot(str(OUT / "01_denoise_compare_grid.png"), canvas_only=False)
    cw.side_by_side(False)

    # 2. dose simulation with the variance-vs-mean fit -----------------------------------------
    d_dock.hide()
    c_dock.hide()
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    [(full, kw_full, _)] = phantom_layer_data(1.0)
    kw_full["name"] = "L CC"
    full_layer = viewer.add_image(full, **kw_full)
    sw = DoseWidget(viewer)
    s_dock = viewer.window.add_dock_widget(sw, name="Dose simulation", area="right")
    sw.layer_combo.layer = full_layer
    sw.estimate()
    wait(app, sw)
    sw.settings.fraction = 0.2
    sw.apply()
    wait(app, sw)
    full_layer.visible = False
    viewer.reset_view()
    settle(app)
    viewer.screenshot(str(OUT / "02_dose_simulation.png"), canvas_only=False)

    # 3. fine-tuning on the open full-dose layer ----------------------------------------------
    s_dock.hide()
    full_layer.visible = True
    viewer.layers.remove(f"{full_layer.name} @ 20 % dose")
    fw = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(fw, name="Fine-tune a model", area="right")
    fw.set_layers([full_layer.name])
    fw.settings.init = model
    fw.settings.name = "my-site"
    fw.settings.epochs = 4
    fw.settings.iters_per_epoch = 8
    fw.settings.patch = 64
    fw.settings.batch_size = 4
    fw.settings.dose_low, fw.settings.dose_high = 0.1, 0.5
    fw.extra_config = {"val_patches": 16, "patience": None}
    fw.start()
    wait(app, fw)
    settle(app)
    viewer.screenshot(str(OUT / "03_finetune.png"), canvas_only=False)
    print("model used:", model, "(random init placeholder)" if placeholder else "")
    for p in sorted(OUT.glob("*.png")):
        print(p)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
