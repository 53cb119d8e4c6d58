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
from mammo_denoise.safeguard import (CORRELATION_MAX, CORRELATION_MIN, NoiseModelMismatch, check_removed,
                                     safeguard)

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


def test_where_nothing_is_lowered_the_result_is_the_networks_bit_for_bit(phantom):
    z, _, params = phantom
    raw = _denoised(z, params).astype(np.float32)
    out, check = safeguard(z, raw, params)
    assert check.lowered_fraction == 0 and check.mean_strength == 1.0
    np.testing.assert_array_equal(out, raw)
    assert not np.shares_memory(out, raw)  # the caller's array is not handed back


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


# -- a model fine-tuned on a correlated detector (issue #25): judged against its trained-for noise

RHO = 0.3


@pytest.fixture(scope="module")
def correlated(phantom):
    """The phantom's anatomy through an indirect detector (quantum noise correlation 0.3), its
    noise-free mean (an oracle denoiser's output) and noise parameters fitted to it, as
    ``denoise`` and fine-tuning fit them."""
    from mammo_denoise.physics.correlation import correlated_detector_image

    _, truth, params = phantom
    lam = (truth.astype(np.float64) - params.offset) / params.gain
    z = correlated_detector_image(lam, params, 1.0, rng=25, rho1=RHO).astype(np.float64)
    return z, truth.astype(np.float64), estimate_noise_params(z, warn=False)


def _trained_for():
    """What a fine-tuned card records for this detector: the fit reads the noise from second
    differences, which correlated noise passes 0.37 times, so in the fitted parameters' GAT
    domain the pixel variance is 1 / 0.37 (2.72 in benchmarks/finetune_real.py's card)."""
    from mammo_denoise.physics.correlation import NoiseCorrelation, second_difference_factor

    return NoiseCorrelation(1.0 / second_difference_factor(RHO, RHO), RHO, RHO)


def test_oracle_on_a_correlated_detector_is_flagged_without_its_expected_noise(correlated):
    z, clean, fitted = correlated
    check, strength = check_removed(z, clean, fitted)
    assert check.correlation_ratio > CORRELATION_MAX
    assert any("correlated between neighbouring pixels" in p for p in check.problems), check
    assert check.lowered_fraction > 0.5 and strength.mean() < 0.8  # the fine-tune defeated


def test_oracle_on_a_correlated_detector_fits_its_expected_noise(correlated):
    z, clean, fitted = correlated
    out, check = safeguard(z, clean, fitted, _trained_for())
    assert check.fits, check.problems
    assert check.input_sigma == pytest.approx(1.0, abs=0.05)
    assert check.correlation_ratio == pytest.approx(1.0, abs=0.08)
    assert check.lowered_fraction == 0.0 and check.mean_strength == 1.0
    np.testing.assert_array_equal(out, clean.astype(np.float32))  # not blended at all
    # (rho_x, rho_y, variance) says the same
    e = _trained_for()
    assert check_removed(z, clean, fitted, (e.rho_x, e.rho_y, e.variance))[0] == check


def test_white_noise_against_a_correlated_expectation_is_flagged(phantom):
    z, truth, params = phantom
    fitted = estimate_noise_params(z, warn=False)
    check, _ = check_removed(z, truth, fitted, _trained_for())
    assert check.correlation_ratio < CORRELATION_MIN
    assert any("less correlated" in p for p in check.problems), check


@pytest.mark.parametrize("factor", [3.0, 1 / 3.0])
def test_wrong_gain_is_flagged_against_a_correlated_expectation(correlated, factor):
    z, clean, fitted = correlated
    wrong = NoiseParams(fitted.offset, factor * fitted.gain, fitted.electronic_sigma)
    check, _ = check_removed(z, clean, wrong, _trained_for())
    assert any("the input's noise is" in p for p in check.problems), check


def test_the_detectors_true_gain_into_a_correlated_fine_tune_says_to_use_the_estimate(correlated, phantom):
    z, clean, _ = correlated
    true_params = phantom[2]
    check, _ = check_removed(z, clean, true_params, _trained_for())
    low = [p for p in check.problems if p.startswith("the input's noise is 0.")]
    assert low and "parameters estimated from its images" in low[0], check.problems
    # a gain 3x too low is not that case and gets no such hint
    wrong = NoiseParams(true_params.offset, true_params.gain / 3.0, true_params.electronic_sigma)
    assert not any("estimated from its images" in p for p in check_removed(z, clean, wrong, _trained_for())[0].problems)


def test_white_unit_expectation_is_the_white_noise_check(phantom):
    from mammo_denoise.physics.correlation import NoiseCorrelation

    z, _, params = phantom
    raw = _denoised(z, params)
    check, strength = check_removed(z, raw, params)
    for white in (NoiseCorrelation(), (0.0, 0.0, 1.0)):
        c, s = check_removed(z, raw, params, white)
        assert c == check
        np.testing.assert_array_equal(s, strength)


def _with_card_noise(noise_used):
    import copy

    from mammo_denoise.models import load_model

    den = copy.deepcopy(load_model("default"))
    den.card = {**den.card, "training": {"data": {"real": {"noise_used": noise_used}}}}
    return den


def test_trained_noise_is_read_from_a_fine_tuned_card_only():
    from mammo_denoise.models import load_model

    assert load_model("default").trained_noise is None  # the shipped default: white, as before
    got = _with_card_noise({"neighbour_correlation_x": 0.3, "neighbour_correlation_y": 0.28,
                            "variance_gat": [2.6, 2.8, 2.7]}).trained_noise
    assert (got.rho_x, got.rho_y, got.variance) == (0.3, 0.28, 2.7)
    for used in ("white (neighbour correlation below 0.15)", {"neighbour_correlation_x": 0.3},
                 {"neighbour_correlation_x": 0.0, "neighbour_correlation_y": 0.0, "variance_gat": 1.0},
                 {"neighbour_correlation_x": 0.3, "neighbour_correlation_y": 0.3, "variance_gat": -1},
                 {"neighbour_correlation_x": 0.3, "neighbour_correlation_y": 0.3, "variance_gat": []}):
        assert _with_card_noise(used).trained_noise is None, used


def test_denoise_judges_a_fine_tuned_model_against_its_card(correlated):
    z, _, fitted = correlated
    e = _trained_for()
    den = _with_card_noise({"neighbour_correlation_x": e.rho_x, "neighbour_correlation_y": e.rho_y,
                            "variance_gat": [e.variance]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = denoise(z, model=den, params=fitted, device="cpu", engine="torch", safeguard=False)
    said = {}
    for name, model in (("card", den), ("white", _with_card_noise("white"))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = denoise(z, model=model, params=fitted, device="cpu", engine="torch")
        said[name] = " ".join(str(w.message) for w in caught if w.category is NoiseModelMismatch)
        # what denoise returns is the network's output through safeguard() with the card's noise
        np.testing.assert_array_equal(out, safeguard(z, raw, fitted, model.trained_noise)[0])
    assert "correlated between neighbouring pixels" in said["white"]
    assert "correlated between neighbouring pixels" not in said["card"], said["card"]
