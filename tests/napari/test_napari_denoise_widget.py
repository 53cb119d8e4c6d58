"""The Denoise widget's progress bar and the modalities it accepts."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_denoise.napari._layers import image_layer_kwargs

WAIT = 60_000  # ms; generous for the shared 2-core CI box


def _widget(viewer):
    from mammo_denoise.napari._widgets.denoise import DenoiseWidget

    w = DenoiseWidget(viewer)
    w.refresh_models()
    w.settings.model, w.settings.device, w.settings.tile = "tiny", "cpu", 128
    return w


def _errors(notes):
    return [m for sev, m in notes if "error" in sev.lower()]


def test_progress_bar_reads_100_percent_after_a_finished_run(make_napari_viewer, qtbot, phantom,
                                                             model_dir):
    viewer = make_napari_viewer()
    src = viewer.add_image(phantom.noisy, **image_layer_kwargs(phantom.noisy, phantom.meta,
                                                              params=phantom.params))
    w = _widget(viewer)
    w.layer_combo.layer = src
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=WAIT)
    bar = w.progress_bar
    assert bar.maximum() > 0 and bar.value() == bar.maximum()
    assert bar.text() == "100%"


def test_a_ct_layer_is_refused_with_one_line_naming_the_file(make_napari_viewer, model_dir, notes):
    from mammo_denoise.io import MammogramMeta

    viewer = make_napari_viewer()
    data = np.full((64, 64), 100.0, np.float32)
    meta = MammogramMeta(path="/data/head.dcm", modality="CT")
    src = viewer.add_image(data, **image_layer_kwargs(data, meta, name="head"))
    w = _widget(viewer)
    w.layer_combo.layer = src
    assert w.run() is None
    assert _errors(notes) == ["Denoise: /data/head.dcm: modality CT: the denoising models are made "
                              "for mammograms and radiographs (MG, DX, CR), not CT images"]
    assert "head denoised" not in viewer.layers


@pytest.mark.parametrize("engine", ["torch", "openvino"])
def test_the_status_line_and_the_layer_say_which_engine_ran_where_and_how_long(
        make_napari_viewer, qtbot, phantom, model_dir, engine):
    import re

    if engine != "torch":
        pytest.importorskip(engine)
    viewer = make_napari_viewer()
    src = viewer.add_image(phantom.noisy, **image_layer_kwargs(phantom.noisy, phantom.meta,
                                                              params=phantom.params))
    w = _widget(viewer)
    w.engine_combo.setCurrentText(engine)  # Advanced → CPU engine
    assert w.settings.engine == engine
    w.layer_combo.layer = src
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=WAIT)
    ran = rf"{engine} on cpu, \d+ threads?: \d+\.\d s"
    assert re.fullmatch(rf"added '{src.name} denoised': {ran}", w.status.text()), w.status.text()
    assert re.fullmatch(ran, w.last_layer.metadata["ran"])
