"""Random fields for the breast phantom: power-law texture, ligament ridges, fat lobules.

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


def oriented_power_law_noise(
    shape: tuple[int, int],
    rng: np.random.Generator,
    orientation: np.ndarray,
    beta: float = 3.0,
    pixel_mm: float = 1.0,
    f_min: float = 0.02,
    stretch: float = 2.0,
    n_dirs: int = 6,
) -> np.ndarray:
    """1/f^beta field whose structures are elongated along a spatially varying direction.

    ``orientation`` (radians, per pixel, defined modulo pi) is the local direction of
    elongation, e.g. the line to the nipple. ``n_dirs`` fields are drawn from the same white
    noise, each with its spectrum compressed by ``stretch`` along one direction, and blended by
    angular hat weights (normalised in quadrature to keep unit variance). Each component is a
    power law f^-beta above ``f_min`` in every direction, so the radially averaged spectrum
    keeps its slope; only the orientation of the structures changes across the image.
    Returns float32, zero mean, unit standard deviation.
    """
    white = np.fft.rfft2(rng.standard_normal(shape, dtype=np.float32))
    fy = np.fft.fftfreq(shape[0], d=pixel_mm)[:, None]
    fx = np.fft.rfftfreq(shape[1], d=pixel_mm)[None, :]
    step = np.pi / n_dirs
    acc = np.zeros(shape, np.float32)
    wsum = np.zeros(shape, np.float32)
    for k in range(n_dirs):
        th = k * step
        fa = fx * np.cos(th) + fy * np.sin(th)  # along the elongation direction
        fp = -fx * np.sin(th) + fy * np.cos(th)
        f2 = (stretch * fa) ** 2 + fp * fp + f_min * f_min
        comp = np.fft.irfft2(white * f2 ** (-beta / 4.0), s=shape).astype(np.float32)
        comp /= comp.std() + 1e-12
        dth = np.angle(np.exp(2j * (orientation - th))) / 2.0  # -pi/2..pi/2
        w = np.clip(1.0 - np.abs(dth) / step, 0.0, 1.0).astype(np.float32)
        acc += w * comp
        wsum += w * w
    field = acc / np.sqrt(np.maximum(wsum, 1e-6))
    field -= field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)


def strand_ridges(
    u_mm: np.ndarray,
    v_mm: np.ndarray,
    rng: np.random.Generator,
    len_mm: float,
    sep_mm: float,
    width_px: float,
) -> np.ndarray:
    """Thin strands in [0, 1] running along the ``u`` coordinate lines.

    Band-limited noise is drawn on a grid over the (u, v) coordinates (mm), correlated over
    ``len_mm`` along u and ``sep_mm`` across, and sampled at each pixel. Its zero set is a
    family of long, gently meandering curves roughly parallel to the u lines (ending in
    arcs where neighbouring ones join), about ``sep_mm`` apart; ``h / |grad h|`` is the pixel
    distance to them, so a Gaussian of it draws lines ``width_px`` wide.
    """
    du, dv = len_mm / 3.0, sep_mm / 3.0
    u0, v0 = float(u_mm.min()), float(v_mm.min())
    nu = int(np.ceil((float(u_mm.max()) - u0) / du)) + 8
    nv = int(np.ceil((float(v_mm.max()) - v0) / dv)) + 8
    grid = rng.standard_normal((nu, nv), dtype=np.float32)
    grid = ndimage.gaussian_filter(grid, 1.2, mode="wrap")
    coords = np.stack([(u_mm - u0) / du + 4.0, (v_mm - v0) / dv + 4.0])
    h = ndimage.map_coordinates(grid, coords, order=3, mode="nearest").astype(np.float32)
    gy, gx = np.gradient(h)
    dist_px = np.abs(h) / (np.sqrt(gy * gy + gx * gx) + 1e-12)
    return np.exp(-0.5 * (dist_px / max(width_px, 0.5)) ** 2).astype(np.float32)


def lobule_septa(
    shape: tuple[int, int],
    rng: np.random.Generator,
    pixel_mm: float,
    size_mm: float = 6.0,
    width_mm: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Cellular (Voronoi) pattern of fat lobules ``size_mm`` across: ``(septa, rim)`` in [0, 1].

    Seeds on a jittered grid; ``F2 - F1`` (distance to the second- minus the nearest seed) is
    about twice the distance to the cell wall. ``septa`` is a thin line on the walls, ``rim``
    a soft ramp that is 1 at the wall and 0 toward the lobule centre, so lobules read as
    rounded lucencies bounded by thin fibrous septa.
    """
    s = max(size_mm / pixel_mm, 2.0)  # cell size, px
    ny, nx = int(np.ceil(shape[0] / s)) + 2, int(np.ceil(shape[1] / s)) + 2
    seeds = (np.stack(np.indices((ny, nx)), -1) - 1 + 0.5 + rng.uniform(-0.42, 0.42, (ny, nx, 2))) * s
    rows, cols = np.indices(shape, dtype=np.float32)
    ci = (rows / s).astype(np.int32) + 1
    cj = (cols / s).astype(np.int32) + 1
    f1 = np.full(shape, np.inf, np.float32)
    f2 = np.full(shape, np.inf, np.float32)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            sp = seeds[np.clip(ci + di, 0, ny - 1), np.clip(cj + dj, 0, nx - 1)]
            dd = np.hypot(rows - sp[..., 0], cols - sp[..., 1]).astype(np.float32)
            f2 = np.where(dd < f1, f1, np.minimum(f2, dd))
            f1 = np.minimum(f1, dd)
    gap = (f2 - f1) * pixel_mm  # ~2x distance to the wall, mm
    septa = np.exp(-0.5 * (gap / (2.0 * width_mm)) ** 2).astype(np.float32)
    rim = (1.0 - smoothstep(gap, 0.0, 0.6 * size_mm)).astype(np.float32)
    return septa, rim


def smoothstep(x, lo: float, hi: float):
    """C1 ramp from 0 at ``lo`` to 1 at ``hi`` (Hermite cubic)."""
    t = np.clip((np.asarray(x, dtype=np.float32) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
