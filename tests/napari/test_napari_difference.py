"""Compare widget's difference: scaled by the breast, or in noise standard deviations."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_denoise.napari._layers import image_layer_kwargs
from mammo_denoise.render import breast_mask, difference_limit, gat_residual


def _pair(viewer, phantom, params=True):
    kwargs = image_layer_kwargs(phantom.noisy, phantom.meta, name="L CC",
                                params=phantom.params if params else None)
    noisy = viewer.add_image(phantom.noisy, **kwargs)
    clean = phantom.truth_at().astype(np.float32)
    viewer.add_image(clean, name="L CC denoised", scale=noisy.scale)
    return noisy, clean


def test_difference_colours_are_scaled_inside_the_breast(make_napari_viewer, phantom):
    from mammo_denoise.napari._widgets.compare import CompareWidget

    viewer = make_napari_viewer()
    noisy, clean = _pair(viewer, phantom)
    w = CompareWidget(viewer)
    w.noisy_combo.layer = "L CC"
    diff = w.difference()
    breast = breast_mask(phantom.noisy, phantom.meta, phantom.params)
    assert np.mean(breast == phantom.mask) > 0.97
    limit = difference_limit(phantom.noisy - clean, breast)
    assert tuple(diff.contrast_limits) == pytest.approx((-limit, limit))
    assert limit < 0.5 * difference_limit(phantom.noisy - clean)  # the whole image's is larger


def test_difference_in_noise_sigma(make_napari_viewer, phantom):
    from mammo_denoise.napari._widgets.compare import CompareWidget

    viewer = make_napari_viewer()
    noisy, clean = _pair(viewer, phantom)
    w = CompareWidget(viewer)
    w.noisy_combo.layer = "L CC"
    w.sigma_check.setChecked(True)
    layer = w.difference()
    assert layer.name == "L CC residual (σ)"
    np.testing.assert_allclose(layer.data, gat_residual(phantom.noisy, clean, phantom.params), atol=1e-5)
    assert tuple(layer.contrast_limits) == (-3.0, 3.0)
    assert "noise σ" in w.status.text()


def test_difference_in_noise_sigma_estimates_missing_params(make_napari_viewer, phantom):
    from mammo_denoise.napari._widgets.compare import CompareWidget

    viewer = make_napari_viewer()
    noisy, clean = _pair(viewer, phantom, params=False)
    w = CompareWidget(viewer)
    w.noisy_combo.layer = "L CC"
    w.sigma_check.setChecked(True)
    layer = w.difference()
    exposed = phantom.mask & (phantom.noisy > phantom.params.offset + 20 * phantom.params.electronic_sigma)
    assert np.std(layer.data[exposed]) == pytest.approx(1.0, abs=0.15)
    assert noisy.metadata["noise_params"] is not None


def test_difference_in_noise_sigma_refuses_processed_images(make_napari_viewer, phantom, notes):
    from dataclasses import replace

    from mammo_denoise.io import FOR_PRESENTATION
    from mammo_denoise.napari._widgets.compare import CompareWidget

    viewer = make_napari_viewer()
    meta = replace(phantom.meta, presentation_intent=FOR_PRESENTATION, pixel_intensity_relationship="LOG")
    viewer.add_image(phantom.noisy, **image_layer_kwargs(phantom.noisy, meta, name="p"))
    viewer.add_image(phantom.noisy, name="p denoised")
    w = CompareWidget(viewer)
    w.noisy_combo.layer = "p"
    w.sigma_check.setChecked(True)
    assert w.difference() is None
    assert [m for s, m in notes if "error" in s.lower()] == [
        "Compare: 'p' is not raw (linear) data: the residual in noise σ needs the Poisson-Gaussian "
        "noise of a FOR PROCESSING image"]
