"""Noise-parameter estimation on synthetic raw images with known parameters."""

import warnings

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.physics.noise import (
    NoiseFit,
    estimate_noise_params,
    fit_noise_model,
    seed_gain,
)
from mammo_denoise.physics.params import NoiseParams

TRUE = NoiseParams(offset=50.0, gain=2.5, electronic_sigma=3.0)


def power_law_texture(shape, beta, rng):
    """Zero-mean, unit-variance isotropic texture with power spectrum ~ 1/f^beta (numpy FFT)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = np.inf
    amp = f ** (-beta / 2.0)
    spectrum = (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)) * amp
    t = np.fft.irfft2(spectrum, s=shape)
    return (t - t.mean()) / t.std()


def synthetic_raw(
    seed,
    shape=(640, 576),
    params=TRUE,
    border=24,
    texture=0.2,
    photons=(500.0, 4000.0),
    blur=0.5,
):
    """Raw image ``z = tau + g*Poisson(lam) + N(0, sigma_e^2)`` of a breast-like object.

    ``lam``: smooth thickness fall-off from ``photons[0]`` (thick centre) to ``photons[1]``
    (skin line), times ``exp(texture * T)`` with T a 1/f^3 texture, blurred by a 0.5 px
    Gaussian (detector presampling MTF); unexposed strips of ``border`` rows at top and bottom
    (collimator shadow) sit at the offset with electronic noise only.
    """
    rng = np.random.default_rng(seed)
    H, W = shape
    y, x = np.mgrid[0:H, 0:W]
    r = np.hypot((y - H / 2) / (0.48 * H), x / (0.9 * W))
    fall = np.clip((r - 0.7) / 0.3, 0, 1) ** 2
    lo, hi = np.log(photons[0] * 1.3), np.log(photons[1] / 1.3)
    lam = np.exp(lo + (hi - lo) * fall) * np.exp(texture * power_law_texture(shape, 3.0, rng))
    lam[r > 1] = photons[1]
    if blur:
        lam = gaussian_filter(lam, blur)
    g, tau, s = params.gain, params.offset, params.electronic_sigma
    z = tau + g * rng.poisson(lam) + rng.normal(0.0, s, shape)
    if border:
        for rows in (slice(0, border), slice(H - border, H)):
            z[rows] = tau + rng.normal(0.0, s, z[rows].shape)
    return z.astype(np.float32)


def flat_field(seed, counts, shape=(256, 256), params=TRUE, border=0):
    rng = np.random.default_rng(seed)
    g, tau, s = params.gain, params.offset, params.electronic_sigma
    z = tau + g * rng.poisson(counts, shape) + rng.normal(0.0, s, shape)
    if border:
        z[:border] = tau + rng.normal(0.0, s, (border, shape[1]))
    return z


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_parameters_with_unexposed_border(seed):
    fit = fit_noise_model(synthetic_raw(seed))
    p = fit.params
    assert fit.offset_source == "dark"
    assert p.gain == pytest.approx(TRUE.gain, rel=0.05)
    assert p.electronic_sigma == pytest.approx(TRUE.electronic_sigma, rel=0.20)
    assert p.offset == pytest.approx(TRUE.offset, abs=1.0)
    assert fit.warnings == ()
    # the slope's own uncertainty is honest: a few percent at most
    assert 0 < fit.slope_stderr < 0.03 * p.gain


def test_thin_unexposed_border_found_from_edge_strips():
    # a 6-px collimator shadow is thinner than one block: the edge strips find it
    fit = fit_noise_model(synthetic_raw(11, border=6))
    assert fit.offset_source == "dark"
    assert fit.dark.sum() == 0 and fit.n_dark >= 10
    assert fit.params.offset == pytest.approx(TRUE.offset, abs=1.0)
    assert fit.params.electronic_sigma == pytest.approx(TRUE.electronic_sigma, rel=0.2)
    assert fit.params.gain == pytest.approx(TRUE.gain, rel=0.05)


def test_on_the_project_phantom():
    phantom = pytest.importorskip("mammo_denoise.physics.phantom")
    ph = phantom.make_phantom(seed=1, shape=(512, 512))
    fit = fit_noise_model(ph.noisy)
    assert fit.offset_source == "dark"
    assert fit.params.gain == pytest.approx(ph.params.gain, rel=0.05)
    assert fit.params.offset == pytest.approx(ph.params.offset, abs=1.0)
    assert fit.params.electronic_sigma == pytest.approx(ph.params.electronic_sigma, rel=0.2)


@pytest.mark.parametrize("view", ["CC", "MLO"])
def test_collimator_found_when_electronic_noise_rivals_photon_noise(view):
    # sigma_e 10 DN at 20 % dose: the shadow's variance (100) is within ~20 % of the thinnest
    # tissue's, so only the isolation of its level identifies it (the second pass)
    phantom = pytest.importorskip("mammo_denoise.physics.phantom")
    ph = phantom.make_phantom(seed=1, view=view, shape=(1024, 768), dose=0.2, electronic_sigma=10.0)
    fit = fit_noise_model(ph.noisy, warn=False)
    assert fit.offset_source == "dark"
    assert fit.params.offset == pytest.approx(50.0, abs=1.0)
    assert fit.params.electronic_sigma == pytest.approx(10.0, rel=0.05)
    assert fit.params.gain == pytest.approx(ph.params.gain, rel=0.05)
    # the same image without a shadow must not invent one
    bare = phantom.make_phantom(seed=1, view=view, shape=(1024, 768), dose=0.2, electronic_sigma=10.0,
                                collimator_border=False)
    assert fit_noise_model(bare.noisy, warn=False).offset_source == "assumed"


def test_fit_structure_for_plotting():
    fit = fit_noise_model(synthetic_raw(3))
    assert isinstance(fit, NoiseFit)
    n = fit.grid_shape[0] * fit.grid_shape[1]
    for arr in (fit.means, fit.variances, fit.valid, fit.flat, fit.inlier, fit.dark):
        assert arr.shape == (n,)
    assert not np.any(fit.inlier & ~fit.flat)
    assert not np.any(fit.flat & ~fit.valid)
    assert not np.any(fit.dark & ~fit.flat)
    # dark blocks lie in the unexposed strips (first and last block rows only)
    rows = np.nonzero(fit.dark.reshape(fit.grid_shape))[0]
    assert fit.n_dark >= 10
    assert set(rows) <= {0, 1, fit.grid_shape[0] - 2, fit.grid_shape[0] - 1}
    # the line through the inliers predicts the true variance at 2000 counts within 3 %
    m = TRUE.offset + TRUE.gain * 2000
    assert float(fit.line(m)) == pytest.approx(float(TRUE.variance(m)), rel=0.03)
    assert fit.intercept == pytest.approx(
        fit.params.electronic_sigma**2 - fit.params.gain * fit.params.offset, abs=1e-6
    )
    assert fit.dark_variance == pytest.approx(TRUE.electronic_sigma**2, rel=0.2)


def test_no_dark_region_flags_assumption():
    z = synthetic_raw(4, border=0)
    with pytest.warns(UserWarning, match="no unexposed"):
        fit = fit_noise_model(z)
    assert fit.offset_source == "assumed"
    assert fit.n_dark == 0
    assert any("not separately identifiable" in w for w in fit.warnings)
    assert fit.params.gain == pytest.approx(TRUE.gain, rel=0.05)
    # whatever the split, the variance model (what the GAT needs) is right where data are
    for counts in (600.0, 2000.0, 3500.0):
        m = TRUE.offset + TRUE.gain * counts
        assert float(fit.params.variance(m)) == pytest.approx(float(TRUE.variance(m)), rel=0.05)
    # and one of offset / electronic sigma is zero by construction
    assert fit.params.offset == 0.0 or fit.params.electronic_sigma == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = fit_noise_model(z, warn=False)
    assert quiet.warnings == fit.warnings


def test_given_offset_is_used():
    fit = fit_noise_model(synthetic_raw(5), offset=50.0)
    assert fit.offset_source == "given"
    assert fit.params.offset == 50.0
    assert fit.params.gain == pytest.approx(TRUE.gain, rel=0.05)
    assert fit.params.electronic_sigma == pytest.approx(TRUE.electronic_sigma, rel=0.2)


def test_structure_and_clipping_are_rejected():
    rng = np.random.default_rng(6)
    z = synthetic_raw(6).astype(np.float64)
    H, W = z.shape
    # bright specks (calcification-like, 2x2 px, +40 % of the signal) at random places
    specks = np.zeros(z.shape, bool)
    for y, x in zip(rng.integers(40, H - 40, 150), rng.integers(8, W - 8, 150)):
        specks[y : y + 2, x : x + 2] = True
    z[specks] *= 1.4
    # saturate the brightest 3 % of pixels
    ceiling = np.percentile(z, 97)
    z = np.minimum(z, ceiling)
    fit = fit_noise_model(z)
    assert fit.params.gain == pytest.approx(TRUE.gain, rel=0.05)
    b = fit.block
    ny, nx = fit.grid_shape

    def blocks_touching(pixels):
        return pixels[1 : 1 + ny * b, 1 : 1 + nx * b].reshape(ny, b, nx, b).any(axis=(1, 3))

    speck_blocks = blocks_touching(specks) & ~blocks_touching(z >= ceiling)
    assert speck_blocks.sum() > 50
    kept = np.count_nonzero(fit.inlier.reshape(fit.grid_shape) & speck_blocks)
    assert kept <= 0.1 * speck_blocks.sum()
    clipped_blocks = blocks_touching(z >= ceiling)
    assert clipped_blocks.sum() > 10
    assert not np.any(fit.valid.reshape(fit.grid_shape) & clipped_blocks)


def test_mask_restricts_blocks():
    z = synthetic_raw(7)
    mask = np.zeros(z.shape, bool)
    mask[:, : z.shape[1] // 2] = True
    fit = fit_noise_model(z, mask=mask)
    cols = np.nonzero(fit.valid.reshape(fit.grid_shape))[1]
    assert cols.max() * fit.block + fit.block <= z.shape[1] // 2 + 1
    assert fit.params.gain == pytest.approx(TRUE.gain, rel=0.05)


def test_seed_estimate_is_biased_as_physics_md_says():
    # PHYSICS.md section 1: tau 50, sigma_e 3, g 2 at 100 counts -> var/mean 1.64
    p = NoiseParams(offset=50.0, gain=2.0, electronic_sigma=3.0)
    z = flat_field(8, 100.0, shape=(512, 512), params=p, border=64)
    exposed = np.zeros(z.shape, bool)
    exposed[64:] = True
    k = seed_gain(z, mask=exposed)
    assert k == pytest.approx(1.64, abs=0.02)
    assert (np.var(z[exposed]) / (np.mean(z[exposed]) - 50.0)) == pytest.approx(2.04, abs=0.03)
    seed = estimate_noise_params(z, method="seed", mask=exposed)
    assert seed == NoiseParams(offset=0.0, gain=k, electronic_sigma=0.0)
    # the joint fit on the same flat field (exposed level + unexposed strip) is unbiased
    foi = estimate_noise_params(z, method="foi")
    assert foi.gain == pytest.approx(2.0, rel=0.05)
    assert foi.offset == pytest.approx(50.0, abs=1.0)
    assert foi.electronic_sigma == pytest.approx(3.0, rel=0.2)


def test_estimate_noise_params_matches_fit():
    z = synthetic_raw(9)
    assert estimate_noise_params(z) == fit_noise_model(z).params
    assert estimate_noise_params(z[None]) == fit_noise_model(z).params


def test_errors():
    z = synthetic_raw(10)
    bad = z.copy()
    bad[5, 5] = np.nan
    with pytest.raises(MammoDenoiseError, match="non-finite"):
        fit_noise_model(bad)
    with pytest.raises(MammoDenoiseError, match="too small"):
        fit_noise_model(z[:40, :40])
    with pytest.raises(MammoDenoiseError, match="2-D image"):
        fit_noise_model(np.stack([z, z]))
    tiny = np.zeros(z.shape, bool)
    tiny[100:150, 100:150] = True
    with pytest.raises(MammoDenoiseError, match="too few usable blocks"):
        fit_noise_model(z, mask=tiny)
    with pytest.raises(MammoDenoiseError, match="too few usable blocks"):
        fit_noise_model(np.full((256, 256), 7.0))
    below_offset = 100.0 + np.random.default_rng(4).normal(0.0, 5.0, (256, 256))
    with pytest.raises(MammoDenoiseError, match="does not grow with the signal"):
        fit_noise_model(below_offset, offset=150.0)
    with pytest.raises(MammoDenoiseError, match="mask shape"):
        fit_noise_model(z, mask=np.ones((3, 3), bool))
    with pytest.raises(MammoDenoiseError, match="unknown noise estimation method 'x'"):
        estimate_noise_params(z, method="x")


def test_one_signal_level_falls_back_to_a_proportional_variance():
    # A flat field has no slope to fit; its variance at its one level still gives the gain
    # once the offset is known (electronic noise 3 DN is 0.4 % of the variance here).
    with pytest.warns(UserWarning, match="variance-mean line is poorly determined"):
        fit = fit_noise_model(flat_field(11, 1000.0), offset=50.0)
    assert fit.params.gain == pytest.approx(TRUE.gain, rel=0.02)
    assert fit.params.offset == 50.0
    assert any("poorly determined" in n for n in fit.warnings)

