"""How a raw mammogram is windowed when its header has no VOI window."""

import numpy as np
import pytest

from mammo_denoise.napari._layers import image_layer_kwargs, robust_limits
from mammo_denoise.physics.phantom import make_phantom


def test_raw_window_covers_the_breast_not_the_open_field_or_collimator():
    phantom = make_phantom(seed=0, shape=(512, 384))
    lo, hi = image_layer_kwargs(phantom.noisy, phantom.meta)["contrast_limits"]
    breast_lo, breast_hi = np.percentile(phantom.noisy[phantom.mask], [1, 99])
    assert lo > phantom.params.offset + 10 * phantom.params.electronic_sigma  # not the collimator
    assert hi < 0.7 * phantom.noisy.max()  # not the direct-exposure field
    assert lo <= breast_lo * 1.1 and hi >= 0.5 * breast_hi
    # The plain percentile window would have spent the grey scale on the two plateaus.
    naive_lo, naive_hi = robust_limits(phantom.noisy)
    assert (hi - lo) < 0.7 * (naive_hi - naive_lo)


def test_unknown_spacing_opens_at_scale_1_and_says_so(make_napari_viewer, tmp_path):
    """pydicom-data's RG1_J2KR.dcm (a CR with PixelSpacing 0\\0) crashed napari's add_image."""
    import pydicom

    from mammo_denoise.io import FOR_PROCESSING, MammogramMeta, write_mammogram

    meta = MammogramMeta(modality="CR", presentation_intent=FOR_PROCESSING)
    path = write_mammogram(np.full((64, 48), 1000, np.float32), tmp_path / "cr.dcm", meta)
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = [0, 0]
    ds.save_as(path)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-mammo-denoise")
    assert tuple(layer.scale) == (1.0, 1.0)
    assert str(layer.units[-1]) == "pixel"
    assert layer.metadata["pixel_spacing"] == "unknown (scale: 1 per pixel)"


def test_known_spacing_is_in_the_metadata(phantom):
    kwargs = image_layer_kwargs(phantom.noisy, phantom.meta)
    assert kwargs["metadata"]["pixel_spacing"] == "0.07 x 0.07 mm"
    assert kwargs["units"] == "mm"


def test_nps_of_an_image_without_spacing_is_per_pixel(make_napari_viewer):
    from mammo_denoise.io import MammogramMeta
    from mammo_denoise.napari._widgets.compare import CompareWidget

    rng = np.random.default_rng(0)
    noisy = (1000 + 30 * rng.standard_normal((160, 160))).astype(np.float32)
    meta = MammogramMeta(modality="CR", pixel_spacing_mm=(0.0, 0.0))
    viewer = make_napari_viewer()
    viewer.add_image(noisy, **image_layer_kwargs(noisy, meta, name="cr"))
    viewer.add_image(noisy * 0.5 + 500, **image_layer_kwargs(noisy, meta, name="cr denoised"))
    w = CompareWidget(viewer)
    w.noisy_combo.layer = "cr"
    [(freqs, _), _] = w.compute_nps().values()
    assert freqs[-1] == pytest.approx(0.5)  # Nyquist in cycles per pixel
    assert w.nps_plot.ax.get_xlabel() == "spatial frequency (pixel⁻¹)"
    assert w.nps_plot.ax.get_ylabel() == "NNPS (pixel²)"


def test_load_table_says_a_zero_spacing_is_unknown(tmp_path):
    import pydicom

    from mammo_denoise.io import MammogramMeta, write_mammogram
    from mammo_denoise.napari._widgets.load import read_header_summary

    path = write_mammogram(np.ones((32, 32), np.float32), tmp_path / "cr.dcm", MammogramMeta())
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = ds.ImagerPixelSpacing = [0, 0]
    ds.save_as(path)
    summary = read_header_summary(path)
    assert summary.spacing is None and summary.cells()[-1] == "unknown"


def _monochrome2(phantom, sign=1):
    from dataclasses import replace

    return replace(phantom.meta, photometric_interpretation="MONOCHROME2",
                   pixel_intensity_relationship_sign=sign)


def _shown(kwargs, values):
    """Displayed grey level (0 black .. 1 white) of data values under the layer's settings."""
    lo, hi = kwargs["contrast_limits"]
    v = np.clip((np.asarray(values, float) - lo) / (hi - lo), 0, 1) ** kwargs["gamma"]
    return 1 - v if kwargs["colormap"] == "gray_r" else v


def test_raw_monochrome2_shows_the_breast_bright_on_a_dark_background():
    phantom = make_phantom(seed=0, shape=(512, 384))
    data = phantom.noisy.copy()
    kwargs = image_layer_kwargs(data, _monochrome2(phantom), params=phantom.params)
    np.testing.assert_array_equal(data, phantom.noisy)  # display settings only, data untouched
    assert kwargs["colormap"] == "gray_r"
    open_field = phantom.noisy >= np.percentile(phantom.noisy, 99)
    breast = np.median(_shown(kwargs, phantom.noisy[phantom.mask]))
    assert breast > 0.3 and np.median(_shown(kwargs, phantom.noisy[open_field])) == 0.0


def test_raw_window_follows_the_log_of_the_signal_in_the_breast():
    phantom = make_phantom(seed=0, shape=(512, 384))
    kwargs = image_layer_kwargs(phantom.noisy, _monochrome2(phantom), params=phantom.params)
    lo, hi = kwargs["contrast_limits"]
    z = np.percentile(phantom.noisy[phantom.mask], [10, 25, 50, 75, 90])
    off = phantom.params.offset
    attenuation = np.log((hi - off) / (z - off)) / np.log((hi - off) / (lo - off))
    np.testing.assert_allclose(_shown(kwargs, z), attenuation, atol=0.06)


def test_raw_with_a_negative_sign_is_not_inverted():
    phantom = make_phantom(seed=0, shape=(256, 192))
    assert image_layer_kwargs(phantom.noisy, _monochrome2(phantom, sign=-1))["colormap"] == "gray"


def test_layers_derived_from_a_raw_image_follow_its_display(make_napari_viewer):
    from mammo_denoise.napari._layers import derived_kwargs
    from mammo_denoise.napari._widgets.compare import CompareWidget

    phantom = make_phantom(seed=0, shape=(256, 192))
    viewer = make_napari_viewer()
    src = viewer.add_image(phantom.noisy, **image_layer_kwargs(
        phantom.noisy, _monochrome2(phantom), name="raw", params=phantom.params))
    den = viewer.add_image(phantom.truth_at(), **derived_kwargs(src, "raw denoised", "denoised"))
    assert (den.colormap.name, den.gamma) == ("gray_r", src.gamma) and src.gamma < 1
    w = CompareWidget(viewer)
    w.noisy_combo.layer = "raw"
    diff = w.difference()
    # noisy − denoised > 0 means more X-rays in the noisy image: shown darker, like the image
    assert diff.colormap.name == "PiYG_r"
