"""Metrics: PSNR/SSIM of known errors, NPS of white noise, contrast of synthetic disks."""

import math

import numpy as np
import pytest

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.metrics import (
    calcification_contrast,
    spot_contrast_map,
    cnr,
    flat_region_sigma,
    nps_2d,
    nps_radial,
    psnr,
    ssim,
)


def test_psnr_of_known_mse():
    ref = np.random.default_rng(0).uniform(0, 1000, (64, 64))
    est = ref + 5.0  # MSE = 25 exactly
    dr = ref.max() - ref.min()
    assert psnr(est, ref) == pytest.approx(10 * math.log10(dr**2 / 25.0), abs=1e-9)
    assert psnr(est, ref, data_range=1000) == pytest.approx(10 * math.log10(1000**2 / 25.0))
    assert psnr(ref, ref) == float("inf")
    # mask: the error lives only outside the mask
    est2 = ref.copy()
    est2[:, 32:] += 10.0
    mask = np.zeros(ref.shape, bool)
    mask[:, :32] = True
    assert psnr(est2, ref, data_range=1000, mask=mask) == float("inf")
    assert psnr(est2, ref, data_range=1000, mask=~mask) == pytest.approx(40.0)
    with pytest.raises(MammoDenoiseError, match="shapes differ"):
        psnr(ref[:10], ref)


def test_ssim_identity_and_degradation():
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:128, 0:128]
    ref = 1000 + 300 * np.sin(x / 7.0) * np.cos(y / 11.0)
    assert ssim(ref, ref) == pytest.approx(1.0)
    light = ssim(ref + rng.normal(0, 10, ref.shape), ref)
    heavy = ssim(ref + rng.normal(0, 100, ref.shape), ref)
    assert 1.0 > light > heavy > 0.0


def test_ssim_mask_scores_only_the_masked_pixels():
    # Left half untouched, right half noisy: the whole-image mean lies between the halves', and
    # the mask picks one half (the windows straddling the seam are the only coupling).
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:128, 0:128]
    ref = 1000 + 300 * np.sin(x / 7.0) * np.cos(y / 11.0)
    est = ref.copy()
    est[:, 64:] += rng.normal(0, 100, (128, 64))
    left = np.zeros(ref.shape, bool)
    left[:, :60] = True
    right = np.zeros(ref.shape, bool)
    right[:, 68:] = True
    assert ssim(est, ref, mask=left) == pytest.approx(1.0)
    noisy_half = ssim(est[:, 68:], ref[:, 68:], data_range=np.ptp(ref))
    assert ssim(est, ref, mask=right) == pytest.approx(noisy_half, abs=0.01)
    assert ssim(est, ref, mask=right) < ssim(est, ref) < 1.0
    with pytest.raises(MammoDenoiseError, match="mask selects no pixels"):
        ssim(est, ref, mask=np.zeros(ref.shape, bool))


@pytest.fixture(scope="module")
def white_noise():
    return np.random.default_rng(2).normal(0.0, 10.0, (2048, 2048))


def test_nps_of_white_noise_is_flat(white_noise):
    s2, pixel = 100.0, 0.1
    f, nps = nps_radial(white_noise, pixel, roi=64, overlap=0.0, normalise=False)
    assert f[0] == 0 and f[-1] == pytest.approx(1 / (2 * pixel))
    assert np.allclose(np.diff(f), 1 / (64 * pixel))
    expected = s2 * pixel * pixel
    # plane detrending removes power at the lowest frequencies only (bins 0..2)
    assert np.all(np.abs(nps[3:] / expected - 1) < 0.05)
    assert nps[0] < 0.01 * expected


def test_nps_integrates_to_variance_and_normalises(white_noise):
    pixel = 0.085
    noise = white_noise[:1024, :1024]
    (fy, fx), nps = nps_2d(noise, pixel, roi=128, normalise=False)
    assert nps.shape == (128, 128)
    assert fy[64] == 0 and fx[64] == 0  # fftshift order
    df = (fy[1] - fy[0]) * (fx[1] - fx[0])
    var = np.var(noise)
    assert nps.sum() * df == pytest.approx(var * (1 - 3 / 128**2), rel=0.01)
    # NNPS: divided by the squared mean signal
    (_, _), nnps = nps_2d(noise + 1000.0, pixel, roi=128, normalise=True)
    np.testing.assert_allclose(nnps, nps / 1000.0**2, rtol=1e-4, atol=1e-20)


@pytest.mark.parametrize("n", [33, 48])
def test_nps_matches_direct_definition_on_roi_stack(n):
    rng = np.random.default_rng(3)
    rois = rng.normal(5.0, 2.0, (20, n, n)) + np.linspace(0, 3, n)[None, None, :]
    (_, _), nps = nps_2d(rois, (0.1, 0.05), detrend="mean", normalise=False)
    resid = rois - rois.mean(axis=(1, 2), keepdims=True)
    direct = 0.1 * 0.05 / (n * n) * (np.abs(np.fft.fft2(resid)) ** 2).mean(axis=0)
    np.testing.assert_allclose(nps, np.fft.fftshift(direct), rtol=1e-9, atol=1e-15)


def test_nps_detrend_removes_ramp():
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0:256, 0:256]
    img = 1000 + 2.0 * x + 1.0 * y + rng.normal(0, 5, (256, 256))
    f, plane = nps_radial(img, 0.1, roi=128, normalise=False)
    _, none = nps_radial(img, 0.1, roi=128, detrend="none", normalise=False)
    assert none[1] > 100 * plane[1]
    assert np.median(plane[3:]) == pytest.approx(25 * 0.01, rel=0.1)
    with pytest.raises(MammoDenoiseError, match="unknown detrend"):
        nps_radial(img, 0.1, detrend="cubic")
    with pytest.raises(MammoDenoiseError, match="smaller than one"):
        nps_radial(img[:100], 0.1, roi=128)


def disk_phantom(contrast, polarity, noise=0.0, seed=5):
    """Flat background 1000 with 12 disks of diameter 9 px at relative contrast ``contrast``
    (darker for polarity -1, brighter for +1)."""
    rng = np.random.default_rng(seed)
    img = np.full((256, 256), 1000.0)
    y, x = np.mgrid[0:256, 0:256]
    centres = [(40.0 + 60 * i, 40.0 + 58 * j + 0.3 * i) for i in range(3) for j in range(4)]
    for cy, cx in centres:
        img[np.hypot(y - cy, x - cx) <= 4.5] *= 1 + polarity * contrast
    return img + rng.normal(0, noise, img.shape), centres


@pytest.mark.parametrize("polarity", [-1, 1])
def test_calcification_contrast_recovered(polarity):
    img, centres = disk_phantom(0.2, polarity, noise=5.0)
    c = calcification_contrast(img, centres, 9, polarity=polarity)
    assert c.shape == (12,)
    np.testing.assert_allclose(c, 0.2, rtol=0.02)
    # wrong polarity flips the sign
    assert np.all(calcification_contrast(img, centres, 9, polarity=-polarity) < 0)
    # smoothing the disks away drives contrast to 0
    flat = np.full_like(img, 1000.0)
    np.testing.assert_allclose(calcification_contrast(flat, centres, 9, polarity=polarity), 0)


def test_spot_contrast_map_is_the_contrast_at_every_pixel():
    img, centres = disk_phantom(0.2, -1, noise=5.0)
    img = img + 50.0
    m = spot_contrast_map(img, 9, offset=50.0)
    assert m.shape == img.shape
    # At integer centres the filters see exactly the pixels calcification_contrast averages.
    probes = [(40.0, 98.0), (100.0, 40.0), (77.0, 131.0)]
    np.testing.assert_allclose([m[int(r), int(c)] for r, c in probes],
                               calcification_contrast(img, probes, 9, offset=50.0), rtol=1e-10)
    # The spots are the strongest local responses; elsewhere only the noise.
    top = [m[int(round(r)), int(round(c))] for r, c in centres]
    assert min(top) > 0.15 and np.median(m) < 0.01
    np.testing.assert_allclose(spot_contrast_map(img, 9, polarity=1, offset=50.0), -m)
    assert np.isnan(spot_contrast_map(np.full((32, 32), 50.0), 3, offset=50.0)).all()


def test_contrast_with_offset_and_background():
    img, centres = disk_phantom(0.2, -1)
    img = img + 50.0  # a detector offset of 50 DN
    c = calcification_contrast(img, centres, 9, offset=50.0)
    np.testing.assert_allclose(c, 0.2, rtol=1e-9)
    c_bg = calcification_contrast(img, centres, 9, background=2050.0, offset=50.0)
    np.testing.assert_allclose(c_bg, 0.1, rtol=1e-9)


def test_cnr_and_flat_sigma():
    img, centres = disk_phantom(0.2, -1, noise=10.0)
    sigma = flat_region_sigma(img, (0, 20, 0, 256))
    assert sigma == pytest.approx(10.0, rel=0.05)
    values = cnr(img, centres, 9, sigma=sigma)
    np.testing.assert_allclose(values, 200.0 / 10.0, rtol=0.05)
    per_ring = cnr(img, centres, 9)
    assert np.median(per_ring) == pytest.approx(20.0, rel=0.15)
    with pytest.raises(MammoDenoiseError, match="too close to the image edge"):
        cnr(img, [(0.0, 0.0)], 40)


def test_flat_region_sigma_removes_trend():
    rng = np.random.default_rng(6)
    y, x = np.mgrid[0:200, 0:200]
    img = 500 + 3.0 * x - 2.0 * y + rng.normal(0, 4, (200, 200))
    assert flat_region_sigma(img) == pytest.approx(4.0, rel=0.02)
    assert flat_region_sigma(img, detrend="none") > 100
    mask = x < 100
    assert flat_region_sigma(img, mask) == pytest.approx(4.0, rel=0.03)
    assert flat_region_sigma(img, (slice(0, 50), slice(0, 50))) == pytest.approx(4.0, rel=0.05)
