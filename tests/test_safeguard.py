"""The removed part checked against the noise model: flags and the fallback strength."""

import warnings

import numpy as np
import pytest
from scipy import ndimage

from mammo_denoise import denoise
from mammo_denoise.metrics import psnr
from mammo_denoise.physics.noise import estimate_noise_params
from mammo_denoise.physics.params import NoiseParams
from mammo_denoise.physics.phantom import make_phantom
from mammo_denoise.safeguard import NoiseModelMismatch, check_removed, safeguard

CROP = (slice(160, 416), slice(40, 296))  # inside the breast of a 512 x 512 CC phantom


@pytest.fixture(scope="module")
def phantom():
    ph = make_phantom(seed=7, shape=(512, 512), dose=0.2)
    return ph.noisy[CROP].astype(np.float64), ph.truth_at(0.2)[CROP], ph.params


def _denoised(z, params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return denoise(z, params=params, device="cpu", safeguard=False)


def test_a_fitting_model_is_left_alone(phantom):
    z, _, params = phantom
    check, strength = check_removed(z, _denoised(z, params), params)
    assert check.fits, check.problems
    assert check.input_sigma == pytest.approx(1.0, abs=0.05)
    assert 0.7 < check.removed_variance < 1.05
    assert check.lowfreq_ratio < 1.0
    assert check.lowered_fraction < 0.01 and strength.min() > 0.8


def test_gain_three_times_too_high_is_flagged_and_not_worse_than_the_input(phantom):
    z, truth, params = phantom
    wrong = NoiseParams(params.offset, 3.0 * params.gain, params.electronic_sigma)
    raw = _denoised(z, wrong)
    out, check = safeguard(z, raw, wrong)
    assert check.input_sigma == pytest.approx(3 ** -0.5, rel=0.1)
    assert any("the input's noise is 0.5" in p or "the input's noise is 0.6" in p for p in check.problems)
    rng = float(truth.max() - truth.min())
    assert psnr(out, truth, data_range=rng) > psnr(z, truth, data_range=rng)


def test_gain_three_times_too_low_is_flagged(phantom):
    z, _, params = phantom
    wrong = NoiseParams(params.offset, params.gain / 3.0, params.electronic_sigma)
    check, _ = check_removed(z, _denoised(z, wrong), wrong)
    # sqrt(3) for quantum noise alone; the phantom's electronic noise (3 DN) is not rescaled
    assert 1.3 < check.input_sigma < 1.8
    assert any("the input's noise is 1." in p for p in check.problems)


def test_correlated_noise_is_flagged():
    ph = make_phantom(seed=8, shape=(512, 512), dose=0.2)
    truth, params = ph.truth_at(0.2)[CROP], ph.params
    rng = np.random.default_rng(0)
    lam = (truth - params.offset) / params.gain
    # quantum noise blurred by a small kernel (an indirect detector), variance kept:
    # neighbour correlation 0.22; white noise on this anatomy gives a ratio of 1.08-1.13
    k = np.array([[0.0, 0.12, 0.0], [0.12, 1.0, 0.12], [0.0, 0.12, 0.0]])
    k /= np.sqrt((k * k).sum())
    z = truth + params.gain * ndimage.convolve(rng.poisson(lam) - lam, k, mode="reflect")
    fitted = estimate_noise_params(z, warn=False)
    check, _ = check_removed(z, _denoised(z, fitted), fitted)
    assert check.correlation_ratio > 1.3
    assert any("correlated between neighbouring pixels" in p for p in check.problems), check


def test_processed_image_is_flagged(phantom):
    z, _, params = phantom
    shown = 1000.0 * np.log(z - params.offset + 10.0)  # a log-processed (FOR PRESENTATION) view
    fitted = estimate_noise_params(shown, warn=False)
    check, _ = check_removed(shown, _denoised(shown, fitted), fitted)
    assert any("noise level changes" in p for p in check.problems), check


def test_never_worse_than_the_input_when_anatomy_is_removed(phantom):
    z, truth, params = phantom
    blurred = ndimage.gaussian_filter(z, 3.0)  # "denoises" by taking anatomy away with the noise
    out, check = safeguard(z, blurred, params)
    assert any("low-frequency power" in p for p in check.problems)
    rng = float(truth.max() - truth.min())
    assert psnr(out, truth, data_range=rng) > psnr(blurred, truth, data_range=rng) + 1.0
    assert psnr(out, truth, data_range=rng) >= psnr(z, truth, data_range=rng)


def test_denoise_warns_per_frame_and_applies_the_safeguard(phantom):
    z, _, params = phantom
    wrong = NoiseParams(params.offset, 3.0 * params.gain, params.electronic_sigma)
    stack = np.stack([z, z])
    with pytest.warns(NoiseModelMismatch, match=r"frame 1: noise model mismatch: the input's noise"):
        out = denoise(stack, params=wrong, device="cpu")
    raw = _denoised(stack, wrong)
    for k in range(2):  # what denoise returns is the network's output through safeguard()
        np.testing.assert_array_equal(out[k], safeguard(stack[k], raw[k], wrong)[0])
    # blended toward the input, never past it
    between = (out - z) * (raw - z)
    assert between.min() >= -1e-3 and np.all(np.abs(out - z) <= np.abs(raw - z) + 1e-3)
