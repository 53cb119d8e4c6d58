"""Tests of the display/figure helpers (no Qt)."""

import numpy as np
import pytest
from PIL import Image

from mammo_denoise.io.meta import MammogramMeta
from mammo_denoise.physics.phantom import make_phantom
from mammo_denoise.render import (
    display_image,
    display_window,
    save_difference_png,
    save_panel_png,
    save_png,
)


@pytest.fixture(scope="module")
def ph():
    return make_phantom(seed=1, shape=(192, 160), density=0.5)


def test_display_in_unit_range_and_dense_is_bright(ph):
    out = display_image(ph.noisy, meta=ph.meta, params=ph.params)
    assert out.shape == ph.noisy.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    inner = ph.mask & (ph.expected_counts < 0.99 * ph.expected_counts.max())
    dense = inner & (ph.glandular > 0.5)
    fat = inner & (ph.glandular < 0.05)
    assert dense.sum() > 50 and fat.sum() > 50
    assert out[dense].mean() > out[fat].mean() + 0.1
    # Background (direct exposure) and collimator shadow are black.
    bw = ph.info["collimator_px"]
    assert out[:bw].max() == 0.0
    assert np.median(out[~ph.mask]) < 0.05


def test_display_without_params_or_meta_still_works(ph):
    out = display_image(ph.noisy)
    dense = ph.mask & (ph.glandular > 0.5)
    fat = ph.mask & (ph.glandular < 0.05)
    assert 0 <= out.min() and out.max() <= 1
    assert out[dense].mean() > out[fat].mean()


def test_shared_window_and_presentation_images(ph):
    win = display_window(ph.noisy, ph.meta, ph.params, mask=ph.mask)
    a = display_image(ph.truth_at(), ph.meta, ph.params, window=win)
    b = display_image(ph.noisy, ph.meta, ph.params, window=win)
    assert abs(a[ph.mask].mean() - b[ph.mask].mean()) < 0.05
    # FOR PRESENTATION MONOCHROME1 data: high values display dark, no log.
    pres = MammogramMeta(presentation_intent="FOR PRESENTATION",
                         photometric_interpretation="MONOCHROME1")
    ramp = np.tile(np.arange(100, dtype=np.float32), (10, 1))
    out = display_image(ramp, meta=pres, percentiles=(0, 100))
    assert out[0, 0] == pytest.approx(1.0) and out[0, -1] == pytest.approx(0.0)


def test_save_png_variants(tmp_path, ph):
    p = save_png(tmp_path / "a.png", ph.noisy, meta=ph.meta, params=ph.params, max_side=80)
    im = Image.open(p)
    assert im.mode == "L" and max(im.size) == 80
    d = save_difference_png(tmp_path / "d.png", ph.noisy - ph.truth_at(), title="noise")
    assert Image.open(d).size[0] > 100
    panel = save_panel_png(
        tmp_path / "p.png",
        [("truth", ph.truth_at()), ("noisy", ph.noisy), ("noise", ph.noisy - ph.truth_at(), "diff")],
        meta=ph.meta, params=ph.params,
    )
    w, h = Image.open(panel).size
    assert w > 2 * h
