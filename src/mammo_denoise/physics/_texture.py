"""Random fields for the breast phantom: power-law texture, ligament ridges, ductal streaks.

All functions are pure given their ``rng`` and work on whatever grid they are handed (the
phantom calls them on a reduced-resolution grid and upsamples; see ``phantom.py``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def radial_frequency(shape: tuple[int, int], pixel_mm: float) -> np.ndarray:
    """|f| in cycles/mm on the ``rfft2`` grid of an image of ``shape`` sampled at ``pixel_mm``."""
    fy = np.fft.fftfreq(shape[0], d=pixel_mm)[:, None]
    fx = np.fft.rfftfreq(shape[1], d=pixel_mm)[None, :]
    return np.sqrt(fy * fy + fx * fx)


def power_law_noise(
    shape: tuple[int, int],
    rng: np.random.Generator,
    beta: float = 3.0,
    pixel_mm: float = 1.0,
    f_min: float = 0.02,
    stretch: float = 1.0,
) -> np.ndarray:
    """Gaussian random field with power spectrum ``P(f) ~ 1/(f^2 + f_min^2)^(beta/2)``.

    Filtering white Gaussian noise in Fourier space gives an isotropic stationary field whose
    radially averaged spectrum falls as ``f^-beta`` above ``f_min`` (cycles/mm). Mammographic
    anatomical noise has beta = 3.17 +- 0.23 (CC) and 3.30 +- 0.24 (MLO) (Chen et al.,
    Med Phys 39:1435, 2012; Burgess et al., Med Phys 28:419, 2001). ``f_min`` only keeps the
    variance finite: structures larger than about ``1/f_min`` mm stop growing.
    ``stretch > 1`` elongates the structures along columns (the chest-wall-to-nipple axis).

    Returns float32, zero mean and unit standard deviation.
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    spec = np.fft.rfft2(white)
    fy = np.fft.fftfreq(shape[0], d=pixel_mm)[:, None]
    fx = np.fft.rfftfreq(shape[1], d=pixel_mm)[None, :] * stretch
    f2 = fy * fy + fx * fx + f_min * f_min
    spec *= f2 ** (-beta / 4.0)
    field = np.fft.irfft2(spec, s=shape).astype(np.float32)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def ridge_network(
    shape: tuple[int, int],
    rng: np.random.Generator,
    pixel_mm: float,
    scale_mm: float = 3.0,
    width_mm: float = 0.25,
    stretch: float = 1.6,
) -> np.ndarray:
    """Thin curvilinear ridges in [0, 1]: the zero-level lines of band-limited noise.

    Cooper's ligaments and the septa around fat lobules look like a network of thin bright
    curves that enclose rounded dark fat lobules a few mm across. The zero set of a smooth
    random field is exactly such a network of closed curves; ``h / |grad h|`` is the distance
    (in pixels) to that set, so a Gaussian of it draws lines of constant ``width_mm``.
    ``scale_mm`` sets the lobule size, ``stretch`` elongates them toward the nipple.
    """
    sigma = max(scale_mm / pixel_mm, 0.7)
    white = rng.standard_normal(shape, dtype=np.float32)
    # Gaussian low-pass in Fourier space (periodic): independent of the kernel size in cost.
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    gauss = np.exp(-2.0 * np.pi**2 * sigma**2 * (fy * fy + (stretch * fx) ** 2))
    h = np.fft.irfft2(np.fft.rfft2(white) * gauss, s=shape).astype(np.float32)
    gy, gx = np.gradient(h)
    grad = np.sqrt(gy * gy + gx * gx) + 1e-12
    dist_px = np.abs(h) / grad
    width_px = max(width_mm / pixel_mm, 0.5)
    return np.exp(-0.5 * (dist_px / width_px) ** 2).astype(np.float32)


def radial_streaks(
    shape: tuple[int, int],
    rng: np.random.Generator,
    pixel_mm: float,
    center_rc: tuple[float, float],
    angular_width_deg: float = 0.6,
    length_mm: float = 25.0,
) -> np.ndarray:
    """Zero-mean, unit-std streaks converging on ``center_rc`` (the nipple), in pixels.

    Ducts and the trabecular pattern run from the nipple back toward the chest wall. Noise
    drawn on a (angle, distance) grid, fine in angle and smooth along distance, and looked up
    at each pixel's polar coordinates gives lines radiating from the nipple.
    """
    rows, cols = np.indices(shape, dtype=np.float32)
    dr = rows - center_rc[0]
    dc = cols - center_rc[1]
    angle = np.degrees(np.arctan2(dr, dc))  # -180..180
    dist = np.hypot(dr, dc) * pixel_mm
    n_ang = int(np.ceil(360.0 / (angular_width_deg / 2))) + 1
    n_rad = int(np.ceil(dist.max() / (length_mm / 4))) + 3
    grid = rng.standard_normal((n_ang, n_rad), dtype=np.float32)
    grid = ndimage.gaussian_filter(grid, (1.0, 2.0), mode=("wrap", "nearest"))
    coords = np.stack([(angle + 180.0) / (angular_width_deg / 2), dist / (length_mm / 4)])
    field = ndimage.map_coordinates(grid, coords, order=1, mode="nearest")
    field -= field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)


def smoothstep(x, lo: float, hi: float):
    """C1 ramp from 0 at ``lo`` to 1 at ``hi`` (Hermite cubic)."""
    t = np.clip((np.asarray(x, dtype=np.float32) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
