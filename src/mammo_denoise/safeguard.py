"""Never worse than the input: the removed part checked against the noise model.

In the generalized-Anscombe (GAT) domain of the image's own noise parameters the noise is white
with unit variance, so the part a denoiser removed, ``r = GAT(noisy) - GAT(denoised)``, should be
(nearly) that noise: a variance of at most about 1 and no more low-frequency power than white
noise (a denoiser removes fine grain first, so its ``r`` has less). Four measurements, over the
exposed pixels, say when the image or the noise model does not fit:

- ``input_sigma``: the input's noise in GAT units from its second difference (robust, so anatomy
  does not count): 1 when the noise parameters are right. A gain wrong by 3x gives 0.6 or 1.7.
- ``correlation_ratio``: the input's noise from first differences over that from the second
  difference: about 1.1 for white noise on anatomy, 1.3-1.5 for quantum noise blurred by an
  indirect detector (neighbour correlation ~0.2), which the shipped models never saw.
- ``level_trend``: the local noise level of the brightest quarter of blocks over the darkest;
  the GAT makes the noise level-independent, so a processed (FOR PRESENTATION, log) image or a
  wrong offset shows here (0.8-0.9 for a log image whose fit adapted to it, 1.00 +- 0.03 raw).
- ``removed_variance``: variance of ``r``. Above 1 the network took more than white noise:
  correlated detector noise (1.0-1.24 with a neighbour correlation of ~0.2, by model; the
  correlation test is the one that catches that) or texture it took for noise; 0.87-1.05 on
  phantoms and real anatomy with estimated parameters.
- ``lowfreq_ratio``: the variance of ``r``'s 4x4 block means over white noise's (1/16 of its
  variance): 0.45-0.75 on phantoms and real anatomy, 1.45-1.6 when the gain is 3x too high and
  anatomy goes with the noise.

The fallback is a local strength: where the removed part's variance over a 32 px window exceeds
what the noise allows (``1.3 * input_sigma**2``, the 99.9th percentile when the model fits), the
result is blended back toward the input until it does not (a smoothed map, so no seams), and with
too much low-frequency power the whole image's strength is lowered in proportion. The blend only
ever moves the result toward the input (strength 0); how often a result still ends below its
input is measured in BENCHMARKS.md ("Real anatomy").

A model fine-tuned on a clinic's correlated detector (issue #25) was trained for that noise,
not for white noise, and removes it whole: judged against white noise its result has 2.3-2.4x
the allowed variance and 1.4-1.8x the low-frequency power at a correlation ratio of 1.34-1.37,
and is blended back everywhere (``benchmarks/finetune_real.py``: +3.3 instead of +6.3 dB).
``expected_noise`` (a ``physics.correlation.NoiseCorrelation`` or ``(rho_x, rho_y, variance)``,
variance in GAT units; ``inference.denoise`` passes what the model's card recorded) makes each
figure relative to that noise's own value under the separable ``[a, 1, a]`` kernel model of
``physics.correlation`` (``f = 6 - 8 rho1 + 2 rho2`` per axis): second-difference level
``sqrt(variance f_x f_y / 36)``; first over second difference
``mean_axes(sqrt(1 - rho1)) / sqrt(f_x f_y / 36)`` (1.38 at rho1 = 0.3); removed variance over
``variance``; block-mean power over ``prod_axes(1 + (3 rho1 + 2 rho2) / 2)`` times white
noise's (2.2 at rho1 = 0.3); and a local cap whose excess over 1 grows with the square root of
``prod_axes(1 + 2 rho1^2 + 2 rho2^2)``, the wider spread of a correlated window's variance
(1.35 at rho1 = 0.3). Then the noise it was trained for reads 1 everywhere, and noise clearly
LESS correlated than that (``CORRELATION_MIN``: white noise into such a model) is flagged, as is
a gain wrong by 3x. Without it (or with white unit-variance noise) every figure and decision is
exactly the white-noise one above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from mammo_denoise.physics.params import NoiseParams

__all__ = ["RemovedCheck", "check_removed", "safeguard", "NoiseModelMismatch"]

WINDOW = 32  #: pixels, the local window of the removed variance and of the level trend
LOCAL_CAP = 1.3  #: removed variance allowed per window, in units of the input's noise variance
SIGMA_BAND = (0.85, 1.15)  #: input noise in GAT units that counts as fitting the model
TREND_BAND = (0.9, 1.1)
REMOVED_MAX = 1.1
CORRELATION_MAX = 1.25
LOWFREQ_MAX = 1.3
_LOWPASS_BLOCK = 4
#: With a correlated expectation, noise whose correlation ratio (over the expected one) is below
#: this is flagged as less correlated than the model was trained for. Against rho1 = 0.3, white
#: noise measures 0.73-0.78 (mini-MIAS anatomy, phantoms), the trained-for noise 0.96-0.99.
CORRELATION_MIN = 0.88


class NoiseModelMismatch(UserWarning):
    """The image's noise does not fit the model the result was made with (see RemovedCheck)."""


@dataclass(frozen=True)
class RemovedCheck:
    input_sigma: float
    correlation_ratio: float
    level_trend: float
    removed_variance: float
    lowfreq_ratio: float
    #: fraction of the exposed pixels whose strength the fallback lowered below 0.95
    lowered_fraction: float
    mean_strength: float  #: over the exposed pixels (1 = the network's result everywhere)
    problems: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line for a user: what was measured and what was done about it."""
        done = ("kept the network's result" if self.lowered_fraction == 0 else
                f"blended back toward the input on {100 * self.lowered_fraction:.0f} % of the image "
                f"(mean strength {self.mean_strength:.2f})")
        what = "; ".join(self.problems) if self.problems else "the removed part fits the noise model"
        return f"{what}; {done}"


def _exposed(z: np.ndarray, params: NoiseParams) -> np.ndarray:
    counts = (z - params.offset) / params.gain
    sample = counts[::_step(z.shape)]
    positive = sample[sample > 0]
    if positive.size == 0:
        return np.ones(z.shape, bool)
    return counts > 0.02 * float(np.median(positive))


def _block_view(a: np.ndarray, b: int) -> np.ndarray:
    h, w = (a.shape[0] // b) * b, (a.shape[1] // b) * b
    return a[:h, :w].reshape(h // b, b, w // b, b)


def _step(shape, max_pixels: int = 1 << 20) -> int:
    """Every how many rows to sample for about ``max_pixels`` pixels."""
    return max(1, int(shape[0] * shape[1] / max_pixels))


def _mad_sigma(a: np.ndarray, keep: np.ndarray) -> float:
    """Robust standard deviation (1.4826 MAD) of ``a[keep]``, from every ``_step``-th row: a
    million samples fix it to 0.1 %, and a full field's medians would cost a second."""
    step = _step(a.shape)
    v = a[::step][keep[::step]]
    if v.size == 0:
        return 1.0
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


class _Expected(NamedTuple):
    """The figures of the noise a result is judged against (module docstring), each as a factor
    on the white unit-variance one: 1.0 exactly for white noise, so that path is unchanged."""

    sigma: float = 1.0  #: the input's second-difference noise level in GAT units
    ratio: float = 1.0  #: first-difference over second-difference noise
    variance: float = 1.0  #: the pixel variance in GAT units (what a denoiser removes)
    lowfreq: float = 1.0  #: 4x4 block-mean variance over white noise's of the same variance
    cap: float = LOCAL_CAP  #: local removed variance allowed, in units of the noise variance
    correlated: bool = False


def _expected(noise) -> _Expected:
    """``expected_noise`` (a NoiseCorrelation, ``(rho_x, rho_y, variance)`` or None) as figures."""
    if noise is None:
        return _Expected()
    if isinstance(noise, (tuple, list)):
        rho_x, rho_y, variance = (float(v) for v in noise)
    else:
        rho_x, rho_y, variance = float(noise.rho_x), float(noise.rho_y), float(noise.variance)
    if not (np.isfinite([rho_x, rho_y, variance]).all() and variance > 0):
        return _Expected()  # an unusable record judges as the shipped models do
    if rho_x == 0.0 and rho_y == 0.0 and variance == 1.0:
        return _Expected()
    from mammo_denoise.physics.correlation import second_difference_factor, second_neighbour_correlation

    d2 = second_difference_factor(rho_x, rho_y)  # E[d^2] / variance, d = D2x D2y z / 6
    rho2 = [second_neighbour_correlation(r) for r in (rho_x, rho_y)]
    # 4x4 block mean of the kernel's noise, per axis: (4 + 2 (3 rho1 + 2 rho2)) / 16 of its variance
    lowfreq = float(np.prod([1.0 + (3.0 * r1 + 2.0 * r2) / 2.0
                             for r1, r2 in zip((rho_x, rho_y), rho2)]))
    # The variance of a window's sample variance grows with sum(rho_k^2) over lags, so the
    # allowed excess (1.3 = the 99.9th percentile for white noise) grows with its square root.
    spread = float(np.prod([1.0 + 2.0 * r1 * r1 + 2.0 * r2 * r2
                            for r1, r2 in zip((rho_x, rho_y), rho2)]))
    return _Expected(
        sigma=float(np.sqrt(variance * d2)),
        ratio=float(0.5 * (np.sqrt(1.0 - rho_x) + np.sqrt(1.0 - rho_y)) / np.sqrt(d2)),
        variance=variance, lowfreq=lowfreq, cap=1.0 + (LOCAL_CAP - 1.0) * float(np.sqrt(spread)),
        correlated=not (rho_x == 0.0 and rho_y == 0.0))


def check_removed(noisy, denoised, params: NoiseParams,
                  expected_noise=None) -> tuple[RemovedCheck, np.ndarray]:
    """Measure the removed part of one frame (module docstring) and the safe strength map.

    ``expected_noise``: the noise the model was trained for, a ``NoiseCorrelation`` or
    ``(rho_x, rho_y, variance in GAT units)``; None (the shipped models): white, unit variance.
    ``input_sigma``, ``correlation_ratio``, ``removed_variance`` and ``lowfreq_ratio`` are then
    reported relative to that noise's own values (1 when the input has exactly that noise).

    Returns ``(check, strength)``: ``strength`` (H, W) float32 in [0, 1], to be applied as
    ``noisy + strength * (denoised - noisy)`` (:func:`safeguard` does).
    """
    from scipy import ndimage

    from mammo_denoise.physics.anscombe import anscombe
    from mammo_denoise.physics.noise import _second_difference_detail

    # float32 throughout: the GAT's rounding (~1e-5) is nothing beside unit noise, and a full
    # field's temporaries stay ~35 MB each
    z = np.asarray(noisy, np.float32)
    e = _expected(expected_noise)
    if min(z.shape) < 2 * WINDOW:  # too few pixels to measure a noise level: nothing to say
        return RemovedCheck(1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, ()), np.ones(z.shape, np.float32)
    y = anscombe(z, params)
    r = y - anscombe(np.asarray(denoised, np.float32), params)
    exposed = _exposed(z, params)
    del z
    if exposed.sum() < 64:
        exposed = np.ones(y.shape, bool)

    d = _second_difference_detail(y)
    inner = exposed[1:-1, 1:-1]
    d_sigma = max(_mad_sigma(d, inner), 1e-6)  # noise-free input: every removal is "too much"
    input_sigma = d_sigma / e.sigma  # over the expected noise's (1.0 when white: as before)
    # White noise has the same variance in first and in second differences; noise correlated
    # between neighbours (an indirect detector) has much less at the second's Nyquist corner.
    step = _step(y.shape)
    top, under = y[1:-1:step], y[2::step]  # every step-th row and the row below it
    n = min(len(top), len(under))
    ok_top, ok_under = exposed[1:-1:step][:n], exposed[2::step][:n]
    horizontal = _mad_sigma(np.diff(top[:n], axis=1), ok_top[:, 1:] & ok_top[:, :-1])
    vertical = _mad_sigma(under[:n] - top[:n], ok_top & ok_under)
    correlation_ratio = 0.5 * (horizontal + vertical) / np.sqrt(2.0) / d_sigma / e.ratio

    # local noise level against local signal level, over blocks wholly exposed
    b = WINDOW
    blocks_ok = _block_view(inner, b).all(axis=(1, 3)).ravel()
    sig = np.sqrt(np.mean(_block_view(d * d, b), axis=(1, 3))).ravel()[blocks_ok]
    lev = np.mean(_block_view(y[1:-1, 1:-1], b), axis=(1, 3)).ravel()[blocks_ok]
    level_trend = 1.0
    if sig.size >= 8:
        lo, hi = np.percentile(lev, [25, 75])
        dark, bright = sig[lev <= lo], sig[lev >= hi]
        level_trend = float(np.median(bright) / max(np.median(dark), 1e-12))

    rc = r - np.float32(np.mean(r[exposed]))
    del r
    removed_variance = float(np.mean(rc[exposed] ** 2))
    # low-pass by 4x4 block means: white noise keeps 1/16 of its variance in them, correlated
    # noise e.lowfreq times that
    means = _block_view(np.where(exposed, rc, np.float32(0)), _LOWPASS_BLOCK).mean(axis=(1, 3))
    whole = _block_view(exposed, _LOWPASS_BLOCK).all(axis=(1, 3))
    lowfreq_ratio = float(np.mean(means[whole] ** 2) * _LOWPASS_BLOCK**2
                          / max(removed_variance, 1e-12)) / e.lowfreq if whole.any() else 1.0
    removed_variance /= e.variance  # over the expected noise's pixel variance

    problems = []
    predict = ("the noise parameters predict" if not e.correlated else
               "the noise parameters and the model's trained-for detector noise predict")
    if e.correlated and input_sigma < SIGMA_BAND[0]:
        # The noise fit reads correlated noise low, and the model was fine-tuned in the GAT
        # domain of such fits: a detector's calibrated gain looks too low-noise to it.
        problems.append(f"the input's noise is {input_sigma:.2f}x what {predict} (wrong gain, "
                        "or not raw data; this model was fine-tuned with the noise parameters "
                        "estimated from its images, so give it those, not the detector's "
                        "calibrated ones)")
    elif not SIGMA_BAND[0] <= input_sigma <= SIGMA_BAND[1]:
        problems.append(f"the input's noise is {input_sigma:.2f}x what {predict} "
                        "(wrong gain, or not raw data)")
    if not TREND_BAND[0] <= level_trend <= TREND_BAND[1]:
        problems.append(f"the noise level changes {level_trend:.2f}x from dark to bright tissue "
                        "(a processed image, or a wrong offset)")
    if correlation_ratio > CORRELATION_MAX and not e.correlated:
        problems.append(f"the noise is correlated between neighbouring pixels (first-difference "
                        f"noise {correlation_ratio:.2f}x the second-difference's, 1 when white)")
    elif correlation_ratio > CORRELATION_MAX:
        problems.append(f"the noise is more correlated between neighbouring pixels than the "
                        f"model was trained for ({correlation_ratio:.2f}x the expected "
                        "first-over-second-difference ratio)")
    elif e.correlated and correlation_ratio < CORRELATION_MIN:
        # a model trained for correlated noise takes white noise's fine grain for texture
        problems.append(f"the noise is less correlated between neighbouring pixels than the "
                        f"model was trained for ({correlation_ratio:.2f}x the expected "
                        "first-over-second-difference ratio; white noise?)")
    kind = "white noise" if not e.correlated else "the expected noise"
    if removed_variance > REMOVED_MAX * input_sigma**2:
        problems.append(f"the removed part has {removed_variance / input_sigma**2:.2f}x the "
                        f"variance of {kind} (correlated noise, or texture taken for noise)")
    if lowfreq_ratio > LOWFREQ_MAX:
        problems.append(f"the removed part has {lowfreq_ratio:.1f}x {kind}'s low-frequency "
                        "power (anatomy removed with the noise)")

    # The local removed variance over ``b`` px windows, on a grid of 8 px blocks (a full field's
    # map in milliseconds), upsampled bilinearly: a smooth map, so no seams.
    c = 8
    local = ndimage.uniform_filter(_block_view(rc * rc, c).mean(axis=(1, 3)), b // c, mode="nearest")
    cap = e.cap * input_sigma**2 * e.variance  # in GAT units, as rc
    coarse = np.sqrt(np.minimum(1.0, cap / np.maximum(local, 1e-12)))
    if lowfreq_ratio > LOWFREQ_MAX:
        coarse = coarse * np.sqrt(LOWFREQ_MAX / lowfreq_ratio)
    # Smoothing a map in [0, 1] keeps it there; the min keeps every capped window capped.
    coarse = np.minimum(coarse, ndimage.gaussian_filter(coarse, b / 2.0 / c, mode="nearest"))
    figures = dict(input_sigma=input_sigma, correlation_ratio=correlation_ratio,
                   level_trend=level_trend, removed_variance=removed_variance,
                   lowfreq_ratio=lowfreq_ratio, problems=tuple(problems))
    if coarse.min() >= 1.0:  # the usual case when the model fits: a full-size map costs 0.3 s
        return (RemovedCheck(lowered_fraction=0.0, mean_strength=1.0, **figures),
                np.ones(rc.shape, np.float32))
    fine = ndimage.zoom(coarse, c, order=1, mode="nearest", grid_mode=True)
    h, w = rc.shape
    strength = np.pad(fine, ((0, h - fine.shape[0]), (0, w - fine.shape[1])), mode="edge")
    strength = np.where(exposed, strength, 1.0).astype(np.float32)
    s_exp = strength[exposed]
    check = RemovedCheck(lowered_fraction=float(np.mean(s_exp < 0.95)),
                         mean_strength=float(np.mean(s_exp)), **figures)
    return check, strength


def safeguard(noisy, denoised, params: NoiseParams,
              expected_noise=None) -> tuple[np.ndarray, RemovedCheck]:
    """The denoised frame with the fallback strength applied (a new float32 array; where nothing
    was lowered, the denoised frame's values exactly), and the check behind it
    (``expected_noise``: :func:`check_removed`)."""
    check, strength = check_removed(noisy, denoised, params, expected_noise)
    if check.mean_strength == 1.0:
        return np.array(denoised, np.float32), check
    z = np.asarray(noisy, np.float32)
    out = z + strength * (np.asarray(denoised, np.float32) - z)
    return out.astype(np.float32), check
