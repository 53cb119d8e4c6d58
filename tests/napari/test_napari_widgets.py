"""The dock widgets, driven through their public attributes and handlers (headless via Xvfb)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mammo_denoise.napari._layers import image_layer_kwargs
from mammo_denoise.napari._state import MODELS

WAIT = 60_000  # ms; generous for the shared 2-core CI box


def add_phantom(viewer, phantom, name=None):
    kwargs = image_layer_kwargs(phantom.noisy, phantom.meta, name=name, params=phantom.params)
    return viewer.add_image(phantom.noisy, **kwargs)


def wait_idle(qtbot, widget, timeout=WAIT):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def errors(notes):
    return [m for sev, m in notes if "error" in sev.lower()]


# -- load ---------------------------------------------------------------------------------------
def test_load_widget_lists_and_loads(make_napari_viewer, mg_folder):
    from mammo_denoise.napari._widgets.load import LoadWidget

    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    w.path = str(mg_folder)
    entries = w.scan()
    assert [(e.laterality, e.view) for e in entries] == [("R", "MLO"), ("L", "CC")]
    assert w.table.rowCount() == 2
    assert w.table.item(0, 4).text() == "128×160"
    assert w.table.item(0, 5).text().startswith("0.07")
    assert entries[0].intent == "FOR PROCESSING"
    w.select([1])
    [layer] = w.load()
    assert layer.name == "L CC" and layer.data.shape == (128, 96)
    assert tuple(layer.scale) == pytest.approx((0.07, 0.085))
    w.select([])
    assert len(w.load()) == 2  # nothing selected: all readable files


def test_load_widget_bad_path_notifies(make_napari_viewer, tmp_path, notes):
    from mammo_denoise.napari._widgets.load import LoadWidget

    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    w.path = str(tmp_path / "nope")
    assert w.scan() == []
    (tmp_path / "x.dcm").write_bytes(b"garbage")
    w.path = str(tmp_path / "x.dcm")
    w.scan()
    assert w.load() == []
    assert len(viewer.layers) == 0
    assert any("no such file" in m for m in errors(notes))
    assert any("x.dcm" in m for m in errors(notes))


# -- denoise ------------------------------------------------------------------------------------
def test_denoise_adds_layer(make_napari_viewer, qtbot, phantom, model_dir):
    from mammo_denoise.napari._widgets.denoise import DenoiseWidget

    viewer = make_napari_viewer()
    src = add_phantom(viewer, phantom, name="L CC")
    w = DenoiseWidget(viewer)
    assert "tiny" in w.refresh_models()
    w.settings.model = "tiny"
    assert w.model_combo.currentText() == "tiny"
    w.settings.device = "cpu"
    w.settings.tile = 128
    w.layer_combo.layer = src
    worker = w.run()
    assert worker is not None
    wait_idle(qtbot, w)
    out = viewer.layers["L CC denoised"]
    assert out.data.shape == src.data.shape and out.data.dtype == np.float32
    assert tuple(out.scale) == tuple(src.scale)
    assert tuple(out.contrast_limits) == tuple(src.contrast_limits)
    assert out.colormap.name == src.colormap.name == "gray_r"
    assert out.metadata["mammo_meta"] is src.metadata["mammo_meta"]
    assert out.metadata["noise_params"] == phantom.params
    assert "tiny" in out.metadata["derivation"]
    assert w.last_layer is out


def test_denoise_strength_applies_live_to_the_last_result(make_napari_viewer, qtbot, phantom, model_dir):
    from mammo_denoise.napari._widgets.denoise import DenoiseWidget

    viewer = make_napari_viewer()
    src = add_phantom(viewer, phantom, name="L CC")
    w = DenoiseWidget(viewer)
    w.refresh_models()
    w.settings.model, w.settings.device, w.settings.tile = "tiny", "cpu", 128
    w.settings.strength = 60  # set before the run: the first result is already at 60 %
    w.layer_combo.layer = src
    w.run()
    wait_idle(qtbot, w)
    out = viewer.layers["L CC denoised"]
    at_60 = np.array(out.data)
    noisy = np.asarray(src.data, np.float32)
    assert w.strength_spin.value() == 60
    assert out.metadata["derivation"].endswith("at strength 60 %")
    w.strength_spin.setValue(100)  # the spin box drives the setting, the setting the layer
    full = np.array(out.data)
    assert not out.metadata["derivation"].endswith("%")
    np.testing.assert_allclose(at_60, noisy + 0.6 * (full - noisy), rtol=1e-6, atol=1e-3)
    assert np.abs(full - noisy).mean() > 1.0
    w.settings.strength = 0
    np.testing.assert_allclose(out.data, noisy, rtol=1e-6, atol=1e-3)
    w.settings.strength = 100
    np.testing.assert_array_equal(out.data, full)  # the full-strength output is kept, not rebuilt

    from mammo_denoise.napari._widgets.compare import CompareWidget

    c = CompareWidget(viewer)
    c.noisy_combo.layer = "L CC"
    diff = c.difference()
    limits = tuple(diff.contrast_limits)
    w.settings.strength = 50  # the difference follows the result; its colour scale does not
    np.testing.assert_allclose(diff.data, 0.5 * (noisy - full), rtol=1e-5, atol=1e-2)
    assert tuple(diff.contrast_limits) == limits
    viewer.layers.remove(diff)
    w.settings.strength = 100  # the difference is gone: nothing to follow, nothing raises
    viewer.layers.remove(out)
    w.settings.strength = 50  # no layer left to update: nothing happens, nothing raises
    assert "L CC denoised" not in viewer.layers


def test_denoise_stack_frame_by_frame_with_its_own_noise_fit(make_napari_viewer, qtbot, phantom,
                                                             model_dir):
    from mammo_denoise.inference import denoise
    from mammo_denoise.napari._widgets.denoise import DenoiseWidget
    from mammo_denoise.physics.phantom import make_phantom

    other = make_phantom(seed=4, shape=phantom.noisy.shape, view="CC", dose=0.5)
    stack = np.stack([phantom.noisy, other.noisy]).astype(np.float32)
    viewer = make_napari_viewer()
    src = viewer.add_image(stack, name="stack")  # no noise parameters: the widget fits them
    w = DenoiseWidget(viewer)
    w.settings.model, w.settings.device, w.settings.tile = "tiny", "cpu", 128
    w.layer_combo.layer = src
    assert w.run() is not None
    wait_idle(qtbot, w)
    out = viewer.layers["stack denoised"]
    params = out.metadata["noise_params"]
    assert out.data.shape == stack.shape and len(params) == 2
    for k in range(2):
        assert params[k].gain == pytest.approx(phantom.params.gain, rel=0.15)
        expected = denoise(stack[k], model=str(model_dir / "tiny.safetensors"), params=params[k],
                           device="cpu", tile=128)
        np.testing.assert_allclose(out.data[k], expected, rtol=0, atol=1e-3)


def test_denoise_cancel_adds_no_layer(make_napari_viewer, qtbot, phantom, model_dir, notes,
                                      monkeypatch):
    import threading

    from mammo_denoise import inference
    from mammo_denoise.napari._widgets.denoise import DenoiseWidget

    gate = threading.Event()
    real = inference.denoise_frame

    def slow(*args, cancel=None, **kwargs):  # hold the first batch until the test cancelled
        gate.wait(10)
        return real(*args, cancel=cancel, **kwargs)

    monkeypatch.setattr(inference, "denoise_frame", slow)
    viewer = make_napari_viewer()
    add_phantom(viewer, phantom, name="L CC")
    w = DenoiseWidget(viewer)
    w.settings.model = "tiny"
    w.settings.tile = 64
    w.run()
    w.cancel()
    gate.set()
    wait_idle(qtbot, w)
    assert [ly.name for ly in viewer.layers] == ["L CC"]
    assert any("cancelled" in m.lower() for _, m in notes)


def test_denoise_of_a_processed_image_notifies_a_plain_note_naming_it(make_napari_viewer, qtbot, phantom,
                                                                    model_dir, notes):
    import dataclasses

    from mammo_denoise.napari._widgets.denoise import DenoiseWidget

    viewer = make_napari_viewer()
    meta = dataclasses.replace(phantom.meta, presentation_intent="FOR PRESENTATION")
    w = DenoiseWidget(viewer)
    w.settings.model, w.settings.device = "tiny", "cpu"
    for name in ("first", "second"):  # each run says it, not only the first in the process
        w.layer_combo.layer = viewer.add_image(phantom.noisy, **image_layer_kwargs(phantom.noisy, meta, name=name))
        w.run()
        wait_idle(qtbot, w)
    said = [m for sev, m in notes if "warning" in sev.lower() and "not linear raw data" in m]
    assert [m.split(": ")[0] for m in said] == ["first", "second"]
    assert all(m.split(": ", 1)[1].startswith("image is not linear raw data (FOR PRESENTATION or LOG)")
               for m in said)


def test_denoise_with_a_wrong_gain_notifies_the_mismatch_naming_the_layer(make_napari_viewer, qtbot,
                                                                           phantom, model_dir, notes):
    from mammo_denoise.napari._widgets.denoise import DenoiseWidget
    from mammo_denoise.physics.params import NoiseParams

    viewer = make_napari_viewer()
    p = phantom.params
    wrong = NoiseParams(p.offset, 3.0 * p.gain, p.electronic_sigma)  # as if typed in the Dose panel
    layer = viewer.add_image(phantom.noisy, **image_layer_kwargs(phantom.noisy, phantom.meta, name="L CC",
                                                                 params=wrong))
    w = DenoiseWidget(viewer)
    w.settings.model, w.settings.device = "default", "cpu"
    w.layer_combo.layer = layer
    w.run()
    wait_idle(qtbot, w)
    said = [m for sev, m in notes if "warning" in sev.lower() and "noise model mismatch" in m]
    assert len(said) == 1 and said[0].startswith("L CC: noise model mismatch: the input's noise is 0.")
    assert "L CC denoised" in viewer.layers


def test_denoise_without_layer_notifies(make_napari_viewer, model_dir, notes):
    from mammo_denoise.napari._widgets.denoise import DenoiseWidget

    w = DenoiseWidget(make_napari_viewer())
    assert w.run() is None
    assert any("choose an image layer" in m for m in errors(notes))


# -- compare ------------------------------------------------------------------------------------
def test_compare_difference_grid_toggle_nps(make_napari_viewer, phantom):
    from mammo_denoise.napari._widgets.compare import CompareWidget

    viewer = make_napari_viewer()
    noisy = add_phantom(viewer, phantom, name="L CC")
    clean = phantom.truth_at().astype(np.float32)
    viewer.add_image(clean, name="L CC denoised", scale=noisy.scale, units="mm")
    w = CompareWidget(viewer)
    w.noisy_combo.layer = "L CC"
    assert w.denoised_combo.layer.name == "L CC denoised"  # paired automatically
    diff = w.difference()
    assert diff.name == "L CC difference"
    np.testing.assert_allclose(diff.data, noisy.data - clean, rtol=1e-6)
    lo, hi = diff.contrast_limits
    assert lo == pytest.approx(-hi) and hi > 0
    assert diff.colormap.name == "PiYG_r"  # the raw phantom shows higher values darker (gray_r)
    assert tuple(diff.scale) == tuple(noisy.scale)

    from mammo_denoise.napari._widgets.compare import viewer_grid

    assert w.side_by_side() is True and viewer_grid(viewer).enabled
    assert w.side_by_side() is False and not viewer_grid(viewer).enabled
    assert w.toggle() == "L CC denoised"
    assert not noisy.visible and viewer.layers["L CC denoised"].visible
    assert w.toggle() == "L CC"
    assert noisy.visible

    assert w.compute_nps()  # a flat region is found automatically
    region = w.add_nps_region()
    assert region.name == "NPS region"
    assert w.compute_nps()


def test_compare_nps_levels(make_napari_viewer):
    from scipy.ndimage import gaussian_filter

    from mammo_denoise.napari._widgets.compare import NPS_REGION, CompareWidget

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    noisy = (1000 + 30 * rng.standard_normal((192, 192))).astype(np.float32)
    smooth = gaussian_filter(noisy, 1.5).astype(np.float32)
    viewer.add_image(noisy, name="flat", scale=(0.1, 0.1))
    viewer.add_image(smooth, name="flat denoised", scale=(0.1, 0.1))
    w = CompareWidget(viewer)
    w.noisy_combo.layer = "flat"
    viewer.add_shapes([[[20, 30], [20, 158], [148, 158], [148, 30]]], shape_type="rectangle",
                      name=NPS_REGION, scale=(0.1, 0.1))
    curves = w.compute_nps()
    assert w.region == (20, 30, 128, 128)  # the user's rectangle, in pixels
    (f_n, p_n), (f_d, p_d) = curves.values()
    assert f_n[-1] == pytest.approx(5.0)  # Nyquist of 0.1 mm pixels
    white = 30.0**2 * 0.1**2 / 1000.0**2  # NNPS of white noise: sigma^2 px^2 / mean^2
    assert np.median(p_n[2:]) == pytest.approx(white, rel=0.25)
    assert p_d[-5:].mean() < 0.01 * p_n[-5:].mean()
    assert w.nps_plot.ax.get_yscale() == "log"


# -- dose ---------------------------------------------------------------------------------------
def test_dose_preview_and_full_resolution(make_napari_viewer, qtbot, phantom):
    from mammo_denoise.napari._widgets.dose import DoseWidget

    viewer = make_napari_viewer()
    src = add_phantom(viewer, phantom, name="L CC")
    w = DoseWidget(viewer)
    w.layer_combo.layer = src
    assert w.settings.gain == pytest.approx(phantom.params.gain)  # taken from the layer
    w.settings.fraction = 0.2
    assert w.slider.value() == 20
    preview = w.preview(0.2)
    assert preview.name == "L CC dose preview"
    w.settings.seed = 5
    worker = w.apply()
    assert worker is not None
    wait_idle(qtbot, w)
    out = viewer.layers["L CC @ 20 % dose"]
    assert "L CC dose preview" not in viewer.layers
    assert out.data.shape == src.data.shape
    assert tuple(out.scale) == tuple(src.scale)
    off = phantom.params.offset
    expected = off + 0.2 * (np.mean(src.data) - off)  # signal above offset scales
    assert np.mean(out.data) == pytest.approx(expected, rel=0.03)
    assert out.metadata["dose_seed"] == 5
    assert out.metadata["dose_fraction"] == pytest.approx(0.2)
    assert out.metadata["noise_params"] == phantom.params


def test_dose_widget_without_an_image_says_nothing_until_asked(make_napari_viewer, qtbot, notes):
    from mammo_denoise.napari._widgets.dose import DoseWidget

    w = DoseWidget(make_napari_viewer())
    w.settings.fraction = 0.5  # the slider's timed preview: nothing to preview, nothing to say
    qtbot.wait(200)
    assert errors(notes) == []
    w.estimate()  # an explicit action still asks for an image
    assert len(errors(notes)) == 1 and "choose an image layer first" in errors(notes)[0]


def test_preview_window_is_the_visible_region_when_zoomed_in():
    from mammo_denoise.napari._widgets.dose import preview_window

    # Zoomed in: the on-screen box (inclusive corners) at full resolution.
    rows, cols, step = preview_window((3328, 2560), [[100, 200], [611, 967]], max_side=768)
    assert (rows, cols, step) == (slice(100, 612), slice(200, 968), 1)
    # Zoomed out, never drawn, or showing everything: the whole image, decimated.
    for corners in ([[0, 0], [3327, 2559]], [[0, 0], [0, 0]], [[10, 0], [1000, 2559]]):
        rows, cols, step = preview_window((3328, 2560), corners, max_side=768)
        assert (rows, cols, step) == (slice(0, 3328, 5), slice(0, 2560, 5), 5)
    # A small image shown whole is simulated whole, at full resolution.
    assert preview_window((192, 160), [[0, 0], [191, 159]]) == (slice(0, 192, 1), slice(0, 160, 1), 1)


def test_dose_preview_follows_the_view(make_napari_viewer, qtbot):
    from mammo_denoise.napari._widgets.dose import DoseWidget, preview_window, viewer_camera
    from mammo_denoise.physics.phantom import make_phantom

    ph = make_phantom(seed=8, shape=(1024, 896), view="CC")
    viewer = make_napari_viewer()
    src = add_phantom(viewer, ph, name="big")
    src.translate = (5.0, -2.0)
    w = DoseWidget(viewer)
    w.layer_combo.layer = src
    src.corner_pixels = np.array([[0, 0], [1023, 895]])
    whole = w.preview(0.3)
    assert whole.metadata["decimation"] == 2 and whole.data.shape == (512, 448)
    np.testing.assert_allclose(whole.scale, 2 * np.asarray(src.scale))
    # Zoomed in: the visible region at full resolution, placed exactly over the source pixels.
    src.corner_pixels = np.array([[300, 100], [555, 419]])
    zoomed = w.preview(0.3)
    assert zoomed is whole  # the same layer, updated
    assert zoomed.metadata["decimation"] == 1 and zoomed.data.shape == (256, 320)
    np.testing.assert_allclose(zoomed.scale, src.scale)
    np.testing.assert_allclose(zoomed.translate, np.asarray(src.translate) + np.asarray(src.scale) * (300, 100))
    np.testing.assert_allclose(zoomed.data_to_world((0, 0)), src.data_to_world((300, 100)))
    off = ph.params.offset
    part = np.asarray(src.data[300:556, 100:420], np.float64)
    assert zoomed.data.mean() == pytest.approx(off + 0.3 * (part.mean() - off), rel=0.01)
    # Zooming or panning the real canvas re-simulates what napari then reports on screen.
    viewer.reset_view()
    camera = viewer_camera(viewer)
    camera.zoom = camera.zoom * 8
    camera.center = (0.0, 400 * src.scale[0], 300 * src.scale[1])[-len(camera.center):]

    def shows_view():
        rows, cols, step = preview_window(src.data.shape, src.corner_pixels)
        return step == 1 and w.preview_layer.metadata["region"] == (rows.start, rows.stop, cols.start, cols.stop)

    qtbot.waitUntil(shows_view, timeout=5000)
    assert w.preview_layer.data.size < src.data.size / 4


def test_dose_estimate_fills_boxes(make_napari_viewer, qtbot, phantom):
    from mammo_denoise.napari._widgets.dose import DoseWidget

    viewer = make_napari_viewer()
    src = viewer.add_image(phantom.noisy, name="no params", scale=(0.07, 0.07))
    w = DoseWidget(viewer)
    w.layer_combo.layer = src
    w.settings.gain = 123.0
    w.estimate()
    wait_idle(qtbot, w)
    assert w.fit is not None
    assert w.settings.gain == pytest.approx(phantom.params.gain, rel=0.25)
    assert w.gain_spin.value() == pytest.approx(w.settings.gain, rel=1e-3)
    assert src.metadata["noise_params"].gain == pytest.approx(w.settings.gain)
    assert len(w.plot.ax.collections) >= 1  # the scatter is drawn


def test_parameters_typed_in_the_dose_panel_are_used_by_denoise(make_napari_viewer, qtbot, phantom,
                                                                 model_dir):
    from mammo_denoise.napari._widgets.denoise import DenoiseWidget
    from mammo_denoise.napari._widgets.dose import DoseWidget
    from mammo_denoise.physics.params import NoiseParams

    viewer = make_napari_viewer()
    src = viewer.add_image(phantom.noisy, name="typed", scale=(0.07, 0.07))
    dose = DoseWidget(viewer)
    dose.layer_combo.layer = src
    known = NoiseParams(phantom.params.offset, 2.0 * phantom.params.gain, 1.5)
    dose.offset_spin.setValue(known.offset)
    dose.gain_spin.setValue(known.gain)
    dose.sigma_spin.setValue(known.electronic_sigma)
    dose.sigma_spin.editingFinished.emit()
    assert src.metadata["noise_params"] == pytest.approx(known)
    w = DenoiseWidget(viewer)
    w.settings.model, w.settings.device = "tiny", "cpu"
    w.layer_combo.layer = src
    w.run()
    wait_idle(qtbot, w)
    assert viewer.layers["typed denoised"].metadata["noise_params"] == pytest.approx(known)


def test_dose_estimate_notifies_the_fit_notes_naming_the_layer(make_napari_viewer, qtbot, phantom, notes):
    from mammo_denoise.napari._widgets.dose import DoseWidget

    viewer = make_napari_viewer()
    w = DoseWidget(viewer)
    w.layer_combo.layer = viewer.add_image(np.ascontiguousarray(phantom.noisy[48:144, :64]), name="crop")
    w.estimate()
    wait_idle(qtbot, w)
    said = [m for sev, m in notes if "warning" in sev.lower()]
    assert len(said) == 1 and said[0].startswith("crop: no unexposed (dark) region found")


# -- fine-tune ----------------------------------------------------------------------------------
TINY = {"architecture": "dncnn", "arch_kwargs": {"depth": 3, "channels": 4}, "val_patches": 4,
        "patience": None}


def _finetune_widget(viewer, phantom, name, epochs=1):
    from mammo_denoise.napari._widgets.finetune import FinetuneWidget

    add_phantom(viewer, phantom, name="L CC")
    w = FinetuneWidget(viewer)
    w.set_layers(["L CC"])
    w.settings.init = "(random init)"
    w.settings.name = name
    w.settings.epochs = epochs
    w.settings.iters_per_epoch = 2
    w.settings.patch = 32
    w.settings.batch_size = 2
    w.settings.dose_low, w.settings.dose_high = 0.2, 0.5
    w.extra_config = dict(TINY)
    return w


def test_finetune_keeps_the_loss_of_the_model_it_starts_from(make_napari_viewer, phantom, model_dir):
    w = _finetune_widget(make_napari_viewer(), phantom, "my-site")
    w.settings.objective = "seed"  # open layers are real images: auto (noisier2noise) needs the MSE
    assert w.build_config().loss == "mse+ssim"  # fresh: the first seed's
    w.settings.init, w.extra_config = "mammo-unet", {}
    assert w.build_config().loss == "mse"  # what the shipped default was trained with


def test_finetune_saves_model_seen_by_denoise(make_napari_viewer, qtbot, phantom, model_dir):
    from mammo_denoise.napari._widgets.denoise import DenoiseWidget

    viewer = make_napari_viewer()
    dw = DenoiseWidget(viewer)
    w = _finetune_widget(viewer, phantom, "my-site")
    config = w.build_config()
    assert config.dose_range == (0.2, 0.5) and len(config.images) == 1
    assert w.start() is not None
    wait_idle(qtbot, w, timeout=120_000)
    assert w.saved_path == model_dir / "my-site.safetensors"
    assert w.saved_path.exists()
    items = [dw.model_combo.itemText(i) for i in range(dw.model_combo.count())]
    assert "my-site" in items  # the Denoise widget's list updated at once
    assert "my-site" in [w.init_combo.itemText(i) for i in range(w.init_combo.count())]
    from mammo_denoise.training import EpochEnd

    assert sum(isinstance(m, EpochEnd) for m in w.history) == 1
    assert len(w.plot.val) == 1 and len(w.plot.steps) >= 1
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "my-site.json", "my-site.safetensors", "tiny.json", "tiny.safetensors"]


def test_finetune_objective_is_auto_with_an_override_and_no_better_run_saves_nothing(
        make_napari_viewer, qtbot, phantom, model_dir, notes):
    viewer = make_napari_viewer()
    w = _finetune_widget(viewer, phantom, "no-better")
    assert w.objective_combo.currentText() == "auto" == w.settings.objective
    config = w.build_config()  # open layers are real images, so auto picks noisier2noise
    assert (config.objective, config.objective_auto, config.loss) == ("noisier2noise", True, "mse")
    w.settings.objective = "seed"  # the override, as chosen in the panel
    assert w.objective_combo.currentText() == "seed" and w.build_config().objective == "seed"
    w.settings.dose_high = 0.8  # noisier2noise cuts the range at 50 %, in a notification
    w.settings.objective = "auto"
    assert w.build_config().dose_range == (0.2, 0.5)
    assert any("dose range 0.2-0.8 cut to 0.2-0.5" in m for _, m in notes)
    # Fine-tuning 'tiny' with a negligible learning rate cannot beat it: nothing is saved.
    w.settings.init, w.settings.dose_high = "tiny", 0.5
    w.extra_config = {"val_patches": 4, "patience": None, "lr": 1e-12}
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    assert w.start() is not None
    wait_idle(qtbot, w, timeout=120_000)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before and w.saved_path is None
    said = [m for _, m in notes if "did not improve" in m]
    assert len(said) == 1 and said[0].startswith("Fine-tuning: fine-tuning did not improve on ")
    assert said[0].endswith("nothing saved, existing models unchanged") and not errors(notes)
    assert w.status.text() == "not saved: no better than the model it started from"


def test_failing_finetune_leaves_models(make_napari_viewer, qtbot, phantom, model_dir, notes,
                                        monkeypatch):
    import torch

    from mammo_denoise.training import loop

    calls = {"n": 0}
    real = loop.compute_loss

    def diverge_in_epoch_two(*args, **kwargs):  # a real failure path: the loss goes NaN
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * torch.nan if calls["n"] > 2 else loss

    monkeypatch.setattr(loop, "compute_loss", diverge_in_epoch_two)
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    viewer = make_napari_viewer()
    w = _finetune_widget(viewer, phantom, "doomed", epochs=2)
    assert w.start() is not None
    wait_idle(qtbot, w, timeout=120_000)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before
    assert "doomed" not in MODELS.names()
    assert any("Fine-tuning failed" in m and "diverged" in m for m in errors(notes))


def test_finetune_bad_settings_notify(make_napari_viewer, phantom, model_dir, notes):
    viewer = make_napari_viewer()
    w = _finetune_widget(viewer, phantom, "tiny")  # name taken
    assert w.start() is None
    w.settings.name = "bad name!"
    assert w.start() is None
    w.settings.name = "ok"
    w.set_layers([])
    assert w.start() is None
    msgs = errors(notes)
    assert any("exists already" in m for m in msgs)
    assert any("model name" in m for m in msgs)
    assert any("tick at least one" in m for m in msgs)


# -- settings remembered between sessions ----------------------------------------------------------
def test_widget_settings_are_remembered_between_sessions(make_napari_viewer, model_dir, _settings_file):
    from mammo_denoise.napari._widgets.denoise import DenoiseWidget
    from mammo_denoise.napari._widgets.dose import DoseWidget
    from mammo_denoise.napari._widgets.finetune import FinetuneWidget

    viewer = make_napari_viewer()
    w, d, f = DenoiseWidget(viewer), DoseWidget(viewer), FinetuneWidget(viewer)
    w.tile_spin.setValue(512)
    w.settings.device = "cpu"
    w.settings.strength = 70
    d.settings.method = "binomial"
    d.settings.gain = 3.0
    f.settings.epochs = 7
    f.settings.folder = "/data/curated"
    f.settings.name = "mine"
    f.settings.objective = "seed"

    # A new session: the choices made once are back, in the settings and on screen ...
    w2, d2, f2 = DenoiseWidget(viewer), DoseWidget(viewer), FinetuneWidget(viewer)
    assert (w2.settings.tile, w2.tile_spin.value(), w2.settings.device) == (512, 512, "cpu")
    assert d2.settings.method == d2.method_combo.currentText() == "binomial"
    assert (f2.settings.epochs, f2.settings.folder) == (7, "/data/curated")
    # ... what belongs to one image or one reading is not.
    assert w2.settings.strength == 100 and d2.settings.gain == 1.0 and f2.settings.name == "finetuned"
    assert f2.settings.objective == f2.objective_combo.currentText() == "auto"  # an override is per session


@pytest.mark.parametrize("text", ["not json", '["a list"]', '{"denoise": {"tile": "big", "device": "cpu"}}'])
def test_a_broken_settings_file_is_ignored(make_napari_viewer, model_dir, _settings_file, text):
    from mammo_denoise.napari._widgets.denoise import DenoiseWidget

    _settings_file.write_text(text)
    w = DenoiseWidget(make_napari_viewer())
    assert w.settings.tile == 1024  # a value of the wrong type is dropped, the others kept
    assert w.settings.device == ("cpu" if "device" in text else "auto")
    w.settings.tile = 768  # and the next change writes a good file
    assert json.loads(_settings_file.read_text())["denoise"]["tile"] == 768
