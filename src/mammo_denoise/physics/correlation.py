"""Noise correlated between neighbouring pixels: a simulated indirect detector, and its measurement.

An indirect (CsI) detector spreads each x-ray's light over neighbouring pixels, so its quantum
noise is correlated between neighbours (PHYSICS.md section 1; Borges et al. 2019). The model
used here is a separable three-tap kernel per axis, ``[a, 1, a] / sqrt(1 + 2 a^2)``, applied to
the zero-mean noise: it keeps the pixel variance (the detector's noise line stays as it is) and
gives neighbour correlation ``rho1 = 2a / (1 + 2a^2)`` and ``rho2 = a^2 / (1 + 2a^2)`` at two
pixels, nothing beyond.

Measuring it from one noisy image (no flat field, anatomy everywhere): in the GAT domain of the
image's noise parameters the noise is stationary, and differences of order two and three along
an axis see little of the smooth anatomy (its power falls as 1/f^3). For the model above

    Var(D2) = R0 (6 - 8 rho1 + 2 rho2),    Var(D3) = R0 (20 - 30 rho1 + 12 rho2),

``D2 = [1, -2, 1]``, ``D3 = [1, -3, 3, -1]``, both measured robustly (1.4826 MAD) over the exposed
pixels; their ratio gives ``a`` per axis and then ``R0``, the noise variance in GAT units of the
parameters used. ``R0`` is 1 when the parameters describe the pixel variance; a noise fit made
on second differences of correlated noise (``physics.noise``) under-estimates the variance by
``(6 - 8 rho1 + 2 rho2) / 6`` (0.61 at rho1 = 0.3), and ``R0`` says by how much.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mammo_denoise.physics.params import NoiseParams

__all__ = ["NoiseCorrelation", "neighbour_kernel", "correlated_noise", "pooled",
           "correlated_detector_image", "measure_noise_correlation", "neighbour_correlation",
           "second_neighbour_correlation", "second_difference_factor"]

_A_GRID = np.linspace(-0.25, 0.8, 2101)


def _rhos(a):
    a = np.asarray(a, np.float64)
    n = 1.0 + 2.0 * a * a
    return 2.0 * a / n, a * a / n


def _a_for_rho1(rho1: float) -> float:
    """The tap ``a`` (|a| <= 1) of ``[a, 1, a]`` whose neighbour correlation is ``rho1``."""
    rho1 = float(rho1)
    if abs(rho1) < 1e-12:
        return 0.0
    if abs(rho1) >= 0.7:
        rho1 = float(np.sign(rho1)) * 0.7
    # rho1 (2 a^2) - 2 a + rho1 = 0, the root with |a| < 1
    return float((1.0 - np.sqrt(1.0 - 2.0 * rho1 * rho1)) / (2.0 * rho1))


def neighbour_kernel(rho1: float, rho1_y: float | None = None) -> np.ndarray:
    """3x3 separable kernel with unit sum of squares and neighbour correlation ``rho1`` along x
    (``rho1_y`` along y, default the same): noise convolved with it keeps its variance."""
    ax = _a_for_rho1(rho1)
    ay = ax if rho1_y is None else _a_for_rho1(rho1_y)
    kx = np.array([ax, 1.0, ax]) / np.sqrt(1.0 + 2.0 * ax * ax)
    ky = np.array([ay, 1.0, ay]) / np.sqrt(1.0 + 2.0 * ay * ay)
    return np.outer(ky, kx)


def correlated_noise(shape, kernel: np.ndarray, rng=None) -> np.ndarray:
    """Gaussian noise of ``shape`` (last two axes an image) with ``kernel``'s correlation and
    variance ``sum(kernel**2)``: white noise drawn with a margin and convolved, no border effect."""
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(rng)
    k = np.asarray(kernel, np.float64)
    ry, rx = k.shape[0] // 2, k.shape[1] // 2
    shape = tuple(int(s) for s in shape)
    lead, (h, w) = shape[:-2], shape[-2:]
    white = rng.standard_normal((*lead, h + 2 * ry, w + 2 * rx))
    kk = k.reshape((1,) * len(lead) + k.shape)
    if k.size == 1:
        return white * float(k.ravel()[0])
    return fftconvolve(white, kk, mode="valid", axes=(-2, -1))


def correlated_detector_image(expected_counts, params: NoiseParams, dose: float = 1.0, rng=None,
                              rho1: float = 0.3) -> np.ndarray:
    """An indirect detector's raw image: ``offset + gain * (lambda + K * (N - lambda)) + e``.

    ``N ~ Poisson(dose * expected_counts) = lambda`` per pixel, ``K`` the unit-norm kernel of
    :func:`neighbour_kernel` (neighbour correlation ``rho1`` of the quantum noise), ``e`` white
    electronic noise. Mean and pixel variance are those of ``detector_image`` (the noise line
    ``params`` stays exact); only the quantum noise is spread over neighbours. float32, not
    rounded (the correlation is what is tested, not the digitisation).
    """
    from scipy.ndimage import correlate

    rng = np.random.default_rng(rng)
    lam = np.maximum(np.asarray(expected_counts, np.float64) * float(dose), 0.0)
    quantum = rng.poisson(lam) - lam
    if rho1:
        quantum = correlate(quantum, neighbour_kernel(rho1), mode="reflect")
    z = params.offset + params.gain * (lam + quantum)
    if params.electronic_sigma > 0:
        z = z + params.electronic_sigma * rng.standard_normal(lam.shape)
    return z.astype(np.float32)


def neighbour_correlation(noise: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """Sample neighbour correlation ``(along x, along y)`` of a zero-mean noise field (a test and
    benchmark measure: on pure noise, not on anatomy)."""
    n = np.asarray(noise, np.float64)
    n = n - (n[mask].mean() if mask is not None else n.mean())
    m = np.ones(n.shape, bool) if mask is None else np.asarray(mask, bool)
    var = float(np.mean(n[m] ** 2))
    mx = m[:, 1:] & m[:, :-1]
    my = m[1:] & m[:-1]
    cx = float(np.mean((n[:, 1:] * n[:, :-1])[mx])) / var
    cy = float(np.mean((n[1:] * n[:-1])[my])) / var
    return cx, cy


@dataclass(frozen=True)
class NoiseCorrelation:
    """The noise of one detector in the GAT domain of given noise parameters.

    ``variance``: the noise variance in GAT units (1 when the parameters describe the pixel
    variance); ``rho_x``/``rho_y``: neighour correlation along rows / columns; ``pixels``: how
    many pixels it was measured on (0: assumed white).
    """

    variance: float = 1.0
    rho_x: float = 0.0
    rho_y: float = 0.0
    pixels: int = 0

    @property
    def white(self) -> bool:
        return self.rho_x == 0.0 and self.rho_y == 0.0

    def kernel(self) -> np.ndarray:
        """The kernel whose convolution with unit white noise has this noise's covariance
        (sum of squares = ``variance``)."""
        return np.sqrt(self.variance) * neighbour_kernel(self.rho_x, self.rho_y)

    def as_dict(self) -> dict:
        return {"variance_gat": round(self.variance, 4), "neighbour_correlation_x": round(self.rho_x, 4),
                "neighbour_correlation_y": round(self.rho_y, 4), "pixels": int(self.pixels),
                "model": "separable [a, 1, a] kernel per axis, measured from 2nd/3rd differences "
                         "in the GAT domain (physics/correlation.py)"}


def _mad_var(v: np.ndarray) -> float:
    if v.size == 0:
        return float("nan")
    s = 1.4826 * np.median(np.abs(v - np.median(v)))
    return float(s * s)


def _diff(y: np.ndarray, order: int, axis: int) -> np.ndarray:
    """``D2 = [1, -2, 1]`` or ``D3 = [1, -3, 3, -1]`` along ``axis`` (valid part)."""
    taps = {2: (1.0, -2.0, 1.0), 3: (1.0, -3.0, 3.0, -1.0)}[order]
    n = y.shape[axis] - len(taps) + 1
    out = np.zeros(y.shape[:axis] + (n,) + y.shape[axis + 1:], np.float64)
    for i, c in enumerate(taps):
        out += c * np.take(y, np.arange(i, i + n), axis=axis)
    return out


def _difference_variances(y: np.ndarray, ok: np.ndarray) -> tuple[float, float, float, int]:
    """Robust variances of ``D2x D2y y``, ``D3x D2y y`` and ``D2x D3y y`` over pixels whose whole
    4x4 support is usable. Differencing along both axes passes only the corner of the spectrum,
    where anatomy (isotropic, power ~ 1/f^3) has almost nothing."""
    from scipy.ndimage import minimum_filter

    good = minimum_filter(ok.astype(np.uint8), size=4, mode="constant", origin=(-2, -2)) > 0
    d2y = _diff(y, 2, 0)
    d22, d32 = _diff(d2y, 2, 1), _diff(d2y, 3, 1)
    d23 = _diff(_diff(y, 3, 0), 2, 1)
    h, w = d23.shape[0], d32.shape[1]
    g = good[:h, :w]
    v = [_mad_var(a[:h, :w][g]) for a in (d22, d32, d23)]
    return v[0], v[1], v[2], int(g.sum()), _flat_level(d22[:h, :w], g)


_BLOCK, _QUANTILE = 16, 25.0


def _flat_level(d: np.ndarray, good: np.ndarray) -> float:
    """The ``_QUANTILE``-th percentile of the mean square of ``d`` over ``_BLOCK`` px blocks wholly
    usable: the flattest blocks', where anatomy adds least (Foi et al. 2008 select blocks alike)."""
    b = _BLOCK
    h, w = (d.shape[0] // b) * b, (d.shape[1] // b) * b
    if h == 0 or w == 0:
        return float("nan")
    ms = (d[:h, :w] ** 2).reshape(h // b, b, w // b, b).mean(axis=(1, 3))
    ok = good[:h, :w].reshape(h // b, b, w // b, b).all(axis=(1, 3))
    return float(np.percentile(ms[ok], _QUANTILE)) if ok.sum() >= 8 else float("nan")


def _flat_level_of_noise(rho_x: float, rho_y: float) -> float:
    """``_flat_level`` of unit-variance noise with this correlation (simulated, seeded): what the
    image's flat level is divided by to give its noise variance."""
    noise = correlated_noise((512, 512), neighbour_kernel(rho_x, rho_y), rng=0x4E5053)
    d = _diff(_diff(noise, 2, 0), 2, 1)
    return _flat_level(d, np.ones(d.shape, bool))


def _f2(rho1, rho2):
    return 6.0 - 8.0 * rho1 + 2.0 * rho2


def _solve_ratio(ratio: float) -> tuple[float, float]:
    """``(rho1, rho2)`` of the [a, 1, a] kernel whose ``Var(D3) / Var(D2)`` is ``ratio``."""
    r1, r2 = _rhos(_A_GRID)
    q = (20.0 - 30.0 * r1 + 12.0 * r2) / _f2(r1, r2)  # decreasing in a
    a = float(np.interp(ratio, q[::-1], _A_GRID[::-1]))
    rho1, rho2 = _rhos(a)
    return float(rho1), float(rho2)


def measure_noise_correlation(image, params: NoiseParams, mask=None,
                              max_pixels: int = 1 << 21) -> NoiseCorrelation:
    """The noise variance and neighbour correlation of ``image`` in the GAT domain of ``params``
    (module docstring), over its exposed pixels (``mask`` and more than 2 % of the median count),
    less any clipped at the image's maximum.
    Correlation below 0.02 in magnitude counts as none."""
    from mammo_denoise.physics.anscombe import anscombe

    z = np.asarray(image, np.float64)
    counts = (z - params.offset) / params.gain
    pos = counts[counts > 0]
    ok = counts > 0.02 * (float(np.median(pos)) if pos.size else 0.0)
    if mask is not None:
        ok &= np.asarray(mask, bool)
    at_top = z >= float(z.max())
    if at_top.mean() > 1e-3:  # clipped (saturated) pixels carry no noise: leave them out
        from scipy.ndimage import binary_dilation

        ok &= ~binary_dilation(at_top, iterations=3)
    y = anscombe(z, params).astype(np.float64)
    step = max(1, int(np.sqrt(z.size / max_pixels)))
    if step > 1:  # every step-th block of 8 rows and columns: neighbours stay neighbours
        keep_r = (np.arange(z.shape[0]) // 8) % step == 0
        keep_c = (np.arange(z.shape[1]) // 8) % step == 0
        y, ok = y[keep_r][:, keep_c], ok[keep_r][:, keep_c]
    if min(y.shape) < 8:
        return NoiseCorrelation()
    v22, v32, v23, n, flat = _difference_variances(y, ok)
    if n < 256 or not all(np.isfinite([v22, v32, v23])) or v22 <= 0:
        return NoiseCorrelation()
    rx1 = _solve_ratio(v32 / v22)[0]
    ry1 = _solve_ratio(v23 / v22)[0]
    rx1 = rx1 if abs(rx1) >= 0.02 else 0.0
    ry1 = ry1 if abs(ry1) >= 0.02 else 0.0
    if np.isfinite(flat):
        variance = flat / _flat_level_of_noise(rx1, ry1)
    else:  # too few whole blocks: the robust variance over every pixel (anatomy adds to it)
        rx2, ry2 = (second_neighbour_correlation(r) for r in (rx1, ry1))
        variance = v22 / (_f2(rx1, rx2) * _f2(ry1, ry2))
    return NoiseCorrelation(float(variance), rx1, ry1, n)


def second_neighbour_correlation(rho1: float) -> float:
    """The lag-2 correlation of the ``[a, 1, a]`` kernel's noise whose lag-1 correlation is
    ``rho1``: ``a^2 / (1 + 2 a^2)`` (0.024 at rho1 = 0.3; 0 for white noise)."""
    return float(_rhos(_a_for_rho1(rho1))[1])


def second_difference_factor(rho_x: float, rho_y: float) -> float:
    """``E[d^2] / variance`` for the separable second difference ``d = D2x D2y z / 6`` that the
    noise fit (``physics.noise``) reads the noise from: 1 for white noise, 0.37 at rho1 = 0.3.
    A fit made on correlated noise gives ``factor x`` the pixel variance."""
    fx, fy = (_f2(float(r), second_neighbour_correlation(r)) for r in (rho_x, rho_y))
    return fx * fy / 36.0


def pooled(measures: list[NoiseCorrelation]) -> NoiseCorrelation:
    """One detector's correlation from several images: the pixel-weighted mean of each figure."""
    ms = [m for m in measures if m.pixels > 0]
    if not ms:
        return NoiseCorrelation()
    w = np.array([m.pixels for m in ms], np.float64)
    avg = lambda vals: float(np.sum(w * np.array(vals)) / w.sum())  # noqa: E731
    return NoiseCorrelation(avg([m.variance for m in ms]), avg([m.rho_x for m in ms]),
                            avg([m.rho_y for m in ms]), int(w.sum()))
