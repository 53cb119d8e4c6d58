"""The difference image: scaled by the breast, and the residual in noise standard deviations."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mammo_denoise.physics.anscombe import anscombe
from mammo_denoise.physics.phantom import make_phantom
from mammo_denoise.render import breast_mask, difference_limit, gat_residual, save_difference_png


@pytest.fixture(scope="module")
def ph():
    return make_phantom(seed=2, shape=(256, 192))


def test_breast_mask_finds_the_phantoms_breast(ph):
    mask = breast_mask(ph.noisy, ph.meta, ph.params)
    agree = np.mean(mask == ph.mask)
    assert agree > 0.95


def test_difference_limit_comes_from_inside_the_breast(ph):
    # The open field is far noisier (in DN) than the breast: scaled by the whole image, the
    # breast's residual uses a small part of the colour scale.
    residual = ph.noisy - ph.truth_at()
    inside = float(np.percentile(np.abs(residual[ph.mask]), 99.5))
    whole = float(np.percentile(np.abs(residual), 99.5))
    assert whole > 1.5 * inside
    assert difference_limit(residual, ph.mask) == pytest.approx(inside)
    assert difference_limit(residual) == pytest.approx(whole)
    assert difference_limit(residual, np.zeros_like(ph.mask)) == pytest.approx(whole)  # no breast


def test_gat_residual_of_pure_noise_is_unit_variance_everywhere(ph):
    truth = ph.truth_at()
    r = gat_residual(ph.noisy, truth, ph.params)
    np.testing.assert_allclose(r, anscombe(ph.noisy, ph.params) - anscombe(truth, ph.params), atol=1e-5)
    exposed = ph.noisy > ph.params.offset + 20 * ph.params.electronic_sigma
    assert np.std(r[ph.mask & exposed]) == pytest.approx(1.0, abs=0.1)
    assert np.std(r[~ph.mask & exposed]) == pytest.approx(1.0, abs=0.1)


def test_difference_png_with_a_mask_is_scaled_by_it(ph, tmp_path):
    residual = ph.noisy - ph.truth_at()
    by_breast = np.asarray(Image.open(save_difference_png(tmp_path / "a.png", residual, mask=ph.mask,
                                                          colorbar=False)))
    whole = np.asarray(Image.open(save_difference_png(tmp_path / "b.png", residual, colorbar=False)))
    # a stronger colour (further from the white centre of RdBu_r) inside the breast
    assert by_breast[..., :3].astype(float).std() > 1.2 * whole[..., :3].astype(float).std()


def test_demo_writes_the_residual_in_noise_sigma(tmp_path, capsys):
    from mammo_denoise.cli import main

    out = tmp_path / "demo"
    assert main(["demo", str(out), "--size", "256x192"]) == 0
    assert Image.open(out / "residual_sigma.png").size[0] > 100
    assert "residual_sigma.png" in capsys.readouterr().out
