"""Estimating the Poisson-Gaussian noise parameters of one raw image (PHYSICS.md section 1).

Model: ``z = tau + g*N + e``, ``N ~ Poisson(lambda)``, ``e ~ Normal(0, sigma_e^2)``, so the
noise variance is a straight line in the local mean::

    Var[z] = g * E[z] + c,        c = sigma_e^2 - g * tau

:func:`fit_noise_model` follows the idea of Foi et al., "Practical Poissonian-Gaussian noise
modeling and fitting for single-image raw-data", IEEE TIP 17(10):1737-1754, 2008, simplified:

1. Tile the image into ``block x block`` blocks. For each block take the mean of ``z`` and a
   noise variance from a high-pass detail that ignores smooth anatomy: the separable second
   difference ``d = (D2x D2y z) / 6`` with ``D2 = [1, -2, 1]``. Its coefficients sum to zero
   in both directions and their squares sum to 36, so for white noise ``E[d^2] = Var[z]``
   exactly, while constants, ramps, quadratics along either axis and any ``f(x) + g(y)``
   give ``d = 0``.
2. Keep flat blocks: compare the detail variance with the residual variance of a
   least-squares quadratic surface fitted to the block (``RSS / (n - 6)``); for pure white
   noise both estimate the same variance, structure (texture, edges, the skin line,
   calcifications) inflates one more than the other. Blocks whose log-ratio lies outside
   ``centre +- flat_tolerance * spread`` are rejected, where centre and spread come from the
   lower quantiles of the ratio (structure only adds to the upper tail). Blocks whose detail
   coefficients have outlying kurtosis (isolated spikes), constant blocks (padding), blocks
   outside ``mask`` and blocks touching clipped values (the image's min or max repeated) are
   rejected too.
3. Split ``c`` into ``tau`` and ``sigma_e``. Unexposed (collimator-shadow) pixels, if the image
   has them, identify both (zero photons: the offset, with variance ``sigma_e^2``). Samples are
   the flat blocks and, because shadows are often narrower than a block, line segments of
   256 pixels in the outer ``2*block`` rows and columns on each side (variance from
   the 1-D second difference along the line). Candidates have a variance below
   ``dark_fraction`` of the 90th percentile of flat-block variances; if they hold no
   unexposed level, a second pass takes every sample below the median variance (electronic
   noise comparable to the photon noise leaves the dark variance close to the exposed one, and
   only the isolation of its level tells them apart). The lowest level holding
   ``min_dark_blocks`` of them within ``dark_spread_counts`` photon counts is the unexposed
   region if it is isolated: fewer than a quarter as many samples lie in the
   ``5 * dark_spread_counts`` counts above it (low-count exposed tissue is a continuum).
   ``tau`` is their median mean (unless ``offset`` is given), ``sigma_e^2`` their
   (outlier-trimmed) mean variance.
4. Fit the line on the (exposed) flat blocks by iteratively reweighted least squares with
   weights ``1 / predicted_var^2`` (the sampling variance of a variance is proportional to its
   square) times Tukey's bisquare of the relative residual, started from a Theil-Sen fit to
   binned medians. With dark blocks the line is anchored at ``(tau, sigma_e^2)`` and only the
   slope is fitted; otherwise slope and intercept are fitted, and ``sigma_e^2 = c + g*tau``
   (clipped at 0) with ``tau = offset`` if given: an extrapolation over the whole signal
   range, flagged in ``NoiseFit.warnings`` when its standard error exceeds its value.
   ``gain = a``. With neither dark pixels nor
   ``offset``, ``tau`` and ``sigma_e`` are not identifiable and the split with one of them
   zero that reproduces the line is assumed (see :func:`fit_noise_model`);
   ``NoiseFit.offset_source == "assumed"`` and a warning say so. The generalized Anscombe
   transform depends only on ``g`` and ``c`` and is exact either way; dose simulation needs
   the split.

Caveats
-------
- Anatomical texture with power near the Nyquist frequency leaks into the detail variance and
  biases the gain upwards (on a 1/f^3 texture of 20 % log-contrast after a 0.5 px detector
  blur: about +1 %; unblurred: about +5 %). Pass a ``mask`` of smooth regions when in doubt.
- The detail variance is the variance of the white part of the noise. Indirect (CsI)
  detectors correlate noise between neighbouring pixels, which lowers the detail variance
  against the pixel variance. ``NoiseFit.correlation_ratio`` (quadratic-residual over detail
  variance in flat blocks) is about 1 for white noise on smooth images; correlated noise or
  residual texture raise it. It is reported, not acted on.
- The model holds for linear raw ("FOR PROCESSING") data only.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.physics.params import NoiseParams

__all__ = ["NoiseFit", "fit_noise_model", "estimate_noise_params", "seed_gain", "NOISE_METHODS"]

NOISE_METHODS = ("foi", "seed")

_BISQUARE_C = 4.685
_Z25 = 0.6744897501960817  # standard normal 75th percentile
_Z10 = 1.2815515655446004  # standard normal 90th percentile


@dataclass(frozen=True, eq=False)
class NoiseFit:
    """Result of :func:`fit_noise_model`; everything the variance-vs-mean plot needs.

    Per-block arrays are flat, in row-major order of a ``grid_shape`` grid of blocks; block
    ``(i, j)`` covers pixels ``[1 + i*block, 1 + (i+1)*block)`` x ``[1 + j*block, ...)``.
    """

    means: np.ndarray  #: block means (DN)
    variances: np.ndarray  #: block noise variances from the detail coefficients (DN^2)
    valid: np.ndarray  #: bool, inside ``mask``, not clipped, not constant
    flat: np.ndarray  #: bool, passed the flatness tests (subset of ``valid``)
    inlier: np.ndarray  #: bool, kept by the robust line fit (subset of ``flat``)
    dark: np.ndarray  #: bool, unexposed blocks used for the offset (subset of ``flat``)
    slope: float  #: ``a`` of ``var = a*mean + c`` (= gain, DN per quantum)
    intercept: float  #: ``c = sigma_e^2 - gain*offset`` (DN^2)
    slope_stderr: float
    params: NoiseParams
    offset_source: str  #: "given", "dark" or "assumed"
    block: int
    grid_shape: tuple
    correlation_ratio: float  #: pixel variance / detail variance in flat blocks (~1 if white)
    warnings: tuple = field(default_factory=tuple)
    dark_variance: float = float("nan")  #: electronic variance measured in the dark (DN^2)
    #: means and variances of every unexposed sample (dark blocks and edge-strip segments)
    dark_means: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dark_variances: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def line(self, mean):
        """Fitted variance at ``mean`` (DN): ``slope * mean + intercept``."""
        return self.slope * np.asarray(mean, dtype=np.float64) + self.intercept

    @property
    def n_flat(self) -> int:
        return int(self.flat.sum())

    @property
    def n_dark(self) -> int:
        """Number of unexposed samples (blocks and edge-strip segments)."""
        return int(self.dark_means.size)


# ----------------------------------------------------------------------------- helpers
def _as_image(image) -> np.ndarray:
    z = np.asarray(image)
    if z.ndim == 3 and z.shape[0] == 1:
        z = z[0]
    if z.ndim != 2:
        raise MammoDenoiseError(
            f"noise estimation needs a single 2-D image (H, W), got an array of shape {z.shape}"
        )
    if z.dtype.kind not in "fiub":
        raise MammoDenoiseError(f"noise estimation needs a numeric image, got dtype {z.dtype}")
    if z.dtype.kind == "b":
        z = z.astype(np.uint8)
    if z.dtype.kind == "f" and not np.isfinite(z).all():
        raise MammoDenoiseError(
            "image contains non-finite values (NaN or inf); noise estimation needs finite pixels"
        )
    return z


def _second_difference_detail(z: np.ndarray) -> np.ndarray:
    """Separable second difference ``d = (D2x D2y z) / 6``, ``D2 = [1, -2, 1]``.

    Shape ``(H-2, W-2)``; ``d[i, j]`` is centred on ``z[i+1, j+1]``. Normalised so that for
    white noise of variance ``s^2``: ``E[d^2] = s^2 * (1+4+1)^2 / 36 = s^2``. Computed in
    float32 (rounding ~1e-7 of the signal, far below any detector noise).
    """
    z = np.asarray(z, dtype=np.float32)
    d1 = z[:, :-2] + z[:, 2:]
    d1 -= z[:, 1:-1]
    d1 -= z[:, 1:-1]
    d = d1[:-2] + d1[2:]
    d -= d1[1:-1]
    d -= d1[1:-1]
    d *= np.float32(1.0 / 6.0)
    return d


def _block_sum(a: np.ndarray, b: int) -> np.ndarray:
    """Sums over ``b x b`` blocks of a C-contiguous ``(ny*b, nx*b)`` array, in float64."""
    ny, nx = a.shape[0] // b, a.shape[1] // b
    return a.reshape(ny, b, nx, b).sum(axis=(1, 3), dtype=np.float64)


def _quadratic_residual_moments(zb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residual of a least-squares quadratic surface per block: variance ``RSS / (b^2 - 6)``
    and excess kurtosis ``b^2 * sum(r^4) / RSS^2 - 3``.

    ``zb`` is a C-contiguous float32 ``(ny, b, nx, b)`` array. The basis
    ``{1, x, y, x^2 - <x^2>, y^2 - <y^2>, x*y}`` on the centred grid is orthogonal, so each
    coefficient is one projection ``<z, p_k> / <p_k, p_k>``. The residual is formed explicitly
    (no cancellation) and its powers are summed in float64.
    """
    b = zb.shape[1]
    t = np.arange(b, dtype=np.float64) - (b - 1) / 2.0
    p = np.stack([np.ones(b), t, t * t - np.mean(t * t)], axis=1)  # (b, 3)
    norms = np.sum(p * p, axis=0)
    along_x = zb @ p.astype(np.float32)  # (ny, b, nx, 3): projections along x per block row
    coef = np.einsum("ibjk,bl->ijlk", along_x.astype(np.float64), p) / np.outer(norms, norms)
    coef[:, :, 1:, 1:] *= np.array([[1.0, 0.0], [0.0, 0.0]])  # keep xy; drop x^2y, xy^2, x^2y^2
    half = np.einsum("ijlk,xk->ijlx", coef, p).astype(np.float32)  # (ny, nx, 3, b)
    r = zb - np.einsum("ijlx,yl->iyjx", half, p.astype(np.float32), optimize=True)
    r *= r
    rss = r.sum(axis=(1, 3), dtype=np.float64)
    r *= r
    s4 = r.sum(axis=(1, 3), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        kurt = b * b * s4 / (rss * rss) - 3.0
    return rss / (b * b - 6), np.nan_to_num(kurt, nan=0.0, posinf=0.0)


def _edge_segments(z: np.ndarray, depth: int, length: int, ok: np.ndarray):
    """Mean and noise variance of line segments along the four image edges.

    Collimator shadows are strips along the image edges, often narrower than a block. Each of
    the outermost ``depth`` rows/columns on every side is cut into segments of ``length``
    pixels (fewer if the side is shorter); the variance is the 1-D second difference along the
    line, ``d = (z[i-1] - 2 z[i] + z[i+1]) / sqrt(6)`` (``E[d^2] = sigma^2`` for white noise),
    which never mixes in the neighbouring, exposed lines. Segments with a pixel outside ``ok``
    are dropped. Returns ``(means, variances)``.
    """
    H, W = z.shape
    means, variances = [], []
    for lines, good in (
        (z[:depth], ok[:depth]),
        (z[H - depth :][::-1], ok[H - depth :][::-1]),
        (z[:, :depth].T, ok[:, :depth].T),
        (z[:, W - depth :][:, ::-1].T, ok[:, W - depth :][:, ::-1].T),
    ):
        n_side = lines.shape[1]
        seg = min(length, n_side)
        k = n_side // seg
        if seg < 8 or k == 0:
            continue
        s = np.asarray(lines[:, : k * seg], dtype=np.float64).reshape(-1, seg)
        g = good[:, : k * seg].reshape(-1, seg).all(axis=1)
        d = (s[:, :-2] - 2.0 * s[:, 1:-1] + s[:, 2:]) / math.sqrt(6.0)
        v = np.mean(d * d, axis=1)
        keep = g & (v > 0)
        means.append(s.mean(axis=1)[keep])
        variances.append(v[keep])
    if not means:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(means), np.concatenate(variances)


def _dark_cluster(cand_m, all_m, width, gap, min_count):
    """The unexposed level among low-variance candidates, or None.

    The lowest window ``[m, m + width]`` (``m`` a candidate mean) that holds ``min_count``
    candidates is re-centred on their median (``+- width/2``). It is accepted as zero photons
    only if it is isolated: the samples (all flat blocks and edge segments) with means in the
    ``gap`` above it are fewer than a quarter of the cluster. An exposed region of low counts
    is a continuum of levels, not an isolated one. Returns ``(lo, hi)`` bounds of the cluster.
    """
    m = np.sort(cand_m)
    upto = np.searchsorted(m, m + width, side="right")
    first = np.flatnonzero(upto - np.arange(m.size) >= min_count)
    if first.size == 0:
        return None
    i = int(first[0])
    level = float(np.median(m[i : upto[i]]))
    lo, hi = level - width / 2.0, level + width / 2.0
    n_cluster = int(np.count_nonzero((cand_m >= lo) & (cand_m <= hi)))
    n_gap = int(np.count_nonzero((all_m > hi) & (all_m <= hi + gap)))
    if n_cluster < min_count or n_gap > 0.25 * n_cluster:
        return None
    return lo, hi


def _lower_tail_normal_fit(x: np.ndarray) -> tuple[float, float]:
    """Centre and spread of the uncontaminated part of a sample whose contamination lies in
    the upper tail: from the 10th and 25th percentiles as if normal."""
    q10, q25 = np.percentile(x, [10.0, 25.0])
    spread = (q25 - q10) / (_Z10 - _Z25)
    return float(q25 + _Z25 * spread), float(spread)


def _theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Median of pairwise slopes (Theil 1950, Sen 1968) and the median intercept."""
    i, j = np.triu_indices(len(x), 1)
    dx = x[j] - x[i]
    ok = dx > 0
    if not ok.any():
        return 0.0, float(np.median(y))
    slope = float(np.median((y[j] - y[i])[ok] / dx[ok]))
    return slope, float(np.median(y - slope * x))


def _binned_medians(m: np.ndarray, v: np.ndarray, nbins: int = 32):
    order = np.argsort(m)
    groups = np.array_split(order, min(nbins, max(1, len(m) // 3)))
    return (
        np.array([np.median(m[g]) for g in groups]),
        np.array([np.median(v[g]) for g in groups]),
    )


def _irls(X: np.ndarray, y: np.ndarray, base: np.ndarray, beta0: np.ndarray, iterations=30):
    """Robust weighted least squares for a variance model ``v = base + X @ beta``.

    Weights ``bisquare(r / (4.685 s)) / pred^2`` with the relative residual
    ``r = (v - pred) / pred`` and ``s = 1.4826 * median|r|``: the sampling variance of a
    variance estimate is proportional to the square of its expectation, and Tukey's bisquare
    removes blocks with residual structure. Returns ``(beta, cov, inlier)``.
    """
    v = base + y
    floor = 1e-6 * max(float(np.median(np.abs(v))), 1e-300)
    beta = np.asarray(beta0, dtype=np.float64)
    for _ in range(iterations):
        pred = np.maximum(base + X @ beta, floor)
        r = (v - pred) / pred
        s = max(1.4826 * float(np.median(np.abs(r))), 1e-12)
        u = r / (_BISQUARE_C * s)
        w = np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0) / pred**2
        sw = np.sqrt(w)
        new, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
        done = np.allclose(new, beta, rtol=1e-10, atol=0)
        beta = new
        if done:
            break
    pred = np.maximum(base + X @ beta, floor)
    r = (v - pred) / pred
    s = max(1.4826 * float(np.median(np.abs(r))), 1e-12)
    inlier = np.abs(r) < _BISQUARE_C * s
    xtwx = (X * w[:, None]).T @ X
    try:
        cov = s * s * np.linalg.inv(xtwx)
    except np.linalg.LinAlgError:
        cov = np.full((X.shape[1], X.shape[1]), np.inf)
    return beta, cov, inlier


def _fit_line(m, v, tau=None, s2=None):
    """Robust fit of ``v = a*m + c`` on flat blocks, started from a Theil-Sen fit to binned
    medians and refined by :func:`_irls`.

    With ``tau`` and ``s2`` (unexposed blocks measured the variance ``s2`` at the offset
    ``tau``), the line is anchored there: ``v = s2 + a*(m - tau)``, so that the electronic
    variance is not an extrapolation over thousands of DN. Returns
    ``(a, c, stderr_a, inlier, var_at)``; ``var_at(m)`` gives the fitted variance at ``m`` and
    its standard error.
    """
    a0, c0 = _theil_sen(*_binned_medians(m, v))
    if s2 is not None:
        x = m - tau
        if not a0 > 0:
            a0 = float(np.median((v - s2) / np.maximum(x, 1e-9 * np.abs(x).max())))
        base = np.full_like(v, s2)
        beta, cov, inlier = _irls(x[:, None], v - s2, base, np.array([a0]))
        a = float(beta[0])
        sd = math.sqrt(cov[0, 0])
        return a, float(s2 - a * tau), float(sd), inlier, lambda mm: (
            s2 + a * (mm - tau), abs(mm - tau) * sd
        )
    centre = float(np.mean(m))
    X = np.stack([np.ones_like(m), m - centre], axis=1)
    beta, cov, inlier = _irls(X, v, np.zeros_like(v), np.array([c0 + a0 * centre, a0]))
    a = float(beta[1])

    def var_at(mm):
        d = mm - centre
        err2 = cov[0, 0] + 2 * d * cov[0, 1] + d * d * cov[1, 1]
        return beta[0] + a * d, math.sqrt(max(err2, 0.0))

    return a, float(beta[0] - a * centre), float(np.sqrt(cov[1, 1])), inlier, var_at


# ----------------------------------------------------------------------------- public
def fit_noise_model(
    image,
    *,
    offset: float | None = None,
    block: int = 12,
    mask=None,
    flat_tolerance: float = 3.0,
    min_blocks: int = 20,
    dark_fraction: float = 0.05,
    dark_spread_counts: float = 10.0,
    min_dark_blocks: int = 4,
    warn: bool = True,
) -> NoiseFit:
    """Fit ``Var[z] = gain * E[z] + c`` from local block statistics (module docstring).

    Parameters
    ----------
    image : (H, W) array
        Linear raw image in DN. Must be finite.
    offset : float, optional
        Known offset ``tau`` (header, dark field). Otherwise estimated from unexposed pixels.
    block : int
        Block size in pixels (default 12, giving ``block**2`` detail coefficients per block;
        on 256 x 256 regions of real anatomy, smaller blocks span a wider range of signal
        levels and halve the gain's error against 16, BENCHMARKS.md "Noise estimation").
    mask : (H, W) bool array, optional
        Pixels allowed in the fit (True). Blocks with any pixel outside are ignored.
    flat_tolerance : float
        Half-width, in robust standard deviations, of the accepted band of the
        quadratic-residual / detail variance log-ratio.
    min_blocks : int
        Fewer flat blocks than this raise :class:`MammoDenoiseError`.
    dark_fraction, dark_spread_counts, min_dark_blocks
        Unexposed-region detection (module docstring, step 3).
    warn : bool
        Also issue the result's warnings with :func:`warnings.warn`.

    Offset and electronic noise
    ---------------------------
    ``offset_source`` is ``"given"``, ``"dark"`` (median mean of the unexposed blocks) or
    ``"assumed"``. In the last case (no offset, no unexposed region) the line cannot separate
    ``tau`` from ``sigma_e``; the assumption is the split with one of them zero that reproduces
    the fitted line: if ``c < 0``, ``sigma_e = 0`` and ``tau = -c/gain`` (the mean at which the
    line reaches zero variance, close to the true offset when ``sigma_e^2 << gain*tau``);
    if ``c >= 0``, ``tau = 0`` and ``sigma_e = sqrt(c)``. Either way ``NoiseParams.variance``
    reproduces the fitted line, hence the generalized Anscombe transform is unaffected.

    Raises
    ------
    MammoDenoiseError
        Non-finite or non-2-D input, an image smaller than ``4 * block + 2`` pixels on a side,
        a ``mask`` of the wrong shape, fewer than ``min_blocks`` flat blocks, or a fit
        without a positive slope (e.g. all flat blocks at one signal level).
    """
    z = _as_image(image)
    b = int(block)
    if b < 4:
        raise MammoDenoiseError(f"block must be at least 4 pixels, got {block}")
    H, W = z.shape
    need = 4 * b + 2
    if H < need or W < need:
        raise MammoDenoiseError(
            f"image too small for noise estimation: {H}x{W} pixels, need at least "
            f"{need}x{need} for block={b}"
        )
    ny, nx = (H - 2) // b, (W - 2) // b
    n = b * b
    crop = z[: ny * b + 2, : nx * b + 2]
    inner = crop[1:-1, 1:-1]
    zb = np.ascontiguousarray(inner, dtype=np.float32).reshape(ny, b, nx, b)

    d2 = _second_difference_detail(crop)  # (ny*b, nx*b), aligned with inner
    d2 *= d2
    v_detail = _block_sum(d2, b) / n
    del d2
    means = zb.sum(axis=(1, 3), dtype=np.float64) / n
    v_quad, kurt = _quadratic_residual_moments(zb)

    # validity: mask, clipping, constant blocks
    valid = (v_detail > 0) & (v_quad > 0)
    if mask is not None:
        mk = np.asarray(mask, dtype=bool)
        if mk.shape != z.shape:
            raise MammoDenoiseError(
                f"mask shape {mk.shape} does not match the image shape {z.shape}"
            )
        valid &= mk[1 : 1 + ny * b, 1 : 1 + nx * b].reshape(ny, b, nx, b).all(axis=(1, 3))
    # clipped / saturated / padded values: the image's min or max repeated more often than
    # noise would (more than 1e-4 of the pixels, at least 3 times)
    edge_ok = np.ones(z.shape, bool) if mask is None else mk.copy()
    for extreme in (z.min(), z.max()):
        hit = z == extreme
        if np.count_nonzero(hit) > max(2, 1e-4 * z.size):
            valid &= ~hit[1 : 1 + ny * b, 1 : 1 + nx * b].reshape(ny, b, nx, b).any(axis=(1, 3))
            edge_ok &= ~hit

    means, v_detail, v_quad, kurt, valid = (
        a.ravel() for a in (means, v_detail, v_quad, kurt, valid)
    )
    n_valid = int(valid.sum())
    if n_valid < min_blocks:
        raise MammoDenoiseError(
            f"too few usable blocks for noise estimation ({n_valid} of {valid.size}, need "
            f"{min_blocks}): the image (or mask) is mostly constant, clipped or masked out"
        )

    # flatness: log ratio of quadratic-residual to detail variance, then residual kurtosis
    log_ratio = np.zeros_like(means)
    log_ratio[valid] = np.log(v_quad[valid] / v_detail[valid])
    centre, spread = _lower_tail_normal_fit(log_ratio[valid])
    spread = max(spread, 1e-6)
    flat = valid & (np.abs(log_ratio - centre) <= flat_tolerance * spread)
    if flat.sum() >= min_blocks:
        k_med = float(np.median(kurt[flat]))
        k_mad = 1.4826 * float(np.median(np.abs(kurt[flat] - k_med)))
        flat &= kurt <= k_med + 2.0 * flat_tolerance * max(k_mad, 1e-6)
    n_flat = int(flat.sum())
    if n_flat < min_blocks:
        raise MammoDenoiseError(
            f"too few flat blocks for noise estimation ({n_flat}, need {min_blocks}): the "
            "image has too much structure or too small an area; pass a mask of flat regions "
            "or a larger image"
        )
    correlation_ratio = float(np.exp(np.median(log_ratio[flat])))

    # unexposed (dark) region: blocks and edge strips at the image's lowest variance, all at
    # one isolated level
    notes: list[str] = []
    dark = np.zeros_like(flat)
    dark_m = dark_v = np.zeros(0)
    seg_m, seg_v = _edge_segments(z, min(2 * b, H // 4, W // 4), 256, edge_ok)
    all_m = np.concatenate([means[flat], seg_m])
    ref_var = float(np.percentile(v_detail[flat], 90))
    # Usually the dark variance is far below the exposed one, and a tight threshold finds it
    # without admitting low-count tissue. When electronic noise dominates (sigma_e^2 comparable
    # to the photon noise) only the isolation of its level sets it apart, so a second pass
    # admits every sample below the median variance and leaves the decision to that test.
    for threshold in (dark_fraction * ref_var, float(np.median(v_detail[flat]))):
        cand = flat & (v_detail < threshold)
        exposed = flat & ~cand
        seg_cand = seg_v < threshold
        cand_m = np.concatenate([means[cand], seg_m[seg_cand]])
        cand_v = np.concatenate([v_detail[cand], seg_v[seg_cand]])
        if cand_m.size < min_dark_blocks or exposed.sum() < min_blocks:
            continue
        # provisional gain: slope from the lowest candidates to the exposed blocks (valid for
        # a dark level and for a low-count continuum alike, and for a single exposure level)
        m0, v0 = float(np.percentile(cand_m, 2)), float(np.median(cand_v))
        m_e, v_e = means[exposed], v_detail[exposed]
        above = m_e > m0
        a_pre = float(np.median((v_e[above] - v0) / (m_e[above] - m0))) if above.any() else 0.0
        found = None
        if a_pre > 0:
            found = _dark_cluster(
                cand_m,
                all_m,
                width=dark_spread_counts * a_pre,
                gap=5.0 * dark_spread_counts * a_pre,
                min_count=min_dark_blocks,
            )
        if found is not None and not np.median(m_e) > found[1] + 5.0 * dark_spread_counts * a_pre:
            found = None  # not below the exposed signal: e.g. one flat exposure level
        if found is not None:
            lo, hi = found
            near = (cand_m >= lo) & (cand_m <= hi)
            dark_m, dark_v = cand_m[near], cand_v[near]
            dark = cand & (means >= lo) & (means <= hi)
            break
    else:
        low = int(np.count_nonzero(v_detail[flat] < dark_fraction * ref_var)
                  + np.count_nonzero(seg_v < dark_fraction * ref_var))
        if low >= min_dark_blocks:
            notes.append(
                f"{low} low-variance blocks or edge strips found, but no isolated "
                "cluster at one level below the exposed signal: not treated as an unexposed "
                "region"
            )
    dark_var = float("nan")
    if dark_m.size:
        med = float(np.median(dark_v))
        mad = 1.4826 * float(np.median(np.abs(dark_v - med)))
        dark_var = float(np.mean(dark_v[np.abs(dark_v - med) <= 5.0 * mad + 1e-300]))
        tau = float(offset) if offset is not None else float(np.median(dark_m))
        fit_idx = np.flatnonzero(flat & ~dark)
        a, c, stderr, inl, _ = _fit_line(means[fit_idx], v_detail[fit_idx], tau=tau, s2=dark_var)
    else:
        tau = None if offset is None else float(offset)
        fit_idx = np.flatnonzero(flat)
        a, c, stderr, inl, var_at = _fit_line(means[fit_idx], v_detail[fit_idx])
    if not (a > 0) or not np.isfinite(stderr) or stderr > 0.5 * a:
        # A narrow signal range (a crop, a flat field) or dense texture tipping the slope: the
        # variance at the image's own signal level is still well measured, and a variance
        # proportional to the signal above the offset reproduces it there.
        lo, hi = np.percentile(means[fit_idx], [5, 95])
        failed = f"slope {a:.4g} +- {stderr:.2g} over {lo:.6g} to {hi:.6g} DN"
        anchor = float(offset) if offset is not None else (tau if dark_m.size else 0.0)
        s2 = dark_var if dark_m.size else 0.0
        a, c, stderr, inl, var_at = _fit_line(means[fit_idx], v_detail[fit_idx], tau=anchor, s2=s2)
        if not a > 0:
            raise MammoDenoiseError(
                f"the noise variance does not grow with the signal ({failed}): not linear raw "
                "(FOR PROCESSING) detector data; pass the noise parameters if they are known"
            )
        notes.append(
            f"the variance-mean line is poorly determined ({failed}): assumed the variance "
            f"proportional to the signal above {anchor:.4g} DN"
            + (" plus the unexposed region's electronic noise" if dark_m.size else "")
            + f" (gain {a:.4g}); right near the image's signal level, approximate far from it. "
            "Give the detector's gain, offset and electronic noise if known"
        )
        if not dark_m.size and offset is None:
            tau = None  # the split below: offset 0, no electronic noise
    inlier = dark.copy()
    inlier[fit_idx[inl]] = True

    if tau is not None:
        source = "given" if offset is not None else "dark"
        sigma2 = c + a * tau
        if not dark_m.size:
            s2_err = var_at(tau)[1]
            if s2_err > max(sigma2, 0.0):
                notes.append(
                    f"electronic variance extrapolated from the line to the offset: "
                    f"{sigma2:.3g} +- {s2_err:.2g} DN^2, poorly determined without an "
                    "unexposed region in the image"
                )
    else:
        source = "assumed"
        if c < 0:
            tau, sigma2 = -c / a, 0.0
            split = f"electronic_sigma = 0 and offset = -intercept/gain = {tau:.4g} DN"
        else:
            tau, sigma2 = 0.0, c
            split = f"offset = 0 and electronic_sigma = sqrt(intercept) = {math.sqrt(c):.4g} DN"
        notes.append(
            "no unexposed (dark) region found and no offset given: offset and electronic "
            f"noise are not separately identifiable; assumed {split}. Pass offset= (from "
            "the header or a dark field) if known. The Anscombe transform does not depend "
            "on this split; dose simulation does."
        )
    if sigma2 < 0:
        notes.append(
            f"offset {tau:.4g} DN implies a negative electronic variance ({sigma2:.4g} DN^2); "
            "electronic_sigma set to 0"
        )
        sigma2 = 0.0
    if warn:
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=2)

    params = NoiseParams(offset=float(tau), gain=float(a), electronic_sigma=math.sqrt(sigma2))
    return NoiseFit(
        means=means,
        variances=v_detail,
        valid=valid,
        flat=flat,
        inlier=inlier,
        dark=dark,
        slope=float(a),
        intercept=float(c),
        slope_stderr=float(stderr),
        params=params,
        offset_source=source,
        block=b,
        grid_shape=(ny, nx),
        correlation_ratio=correlation_ratio,
        warnings=tuple(notes),
        dark_variance=dark_var,
        dark_means=dark_m,
        dark_variances=dark_v,
    )


def seed_gain(image, mask=None) -> float:
    """The first seed's gain estimate (Eckert et al. 2019, eq. 2): ``k = var(z) / mean(z)``.

    The seed's simplification, kept to reproduce it: it assumes ``z = k * lambda`` with no
    offset and no electronic noise, so with ``tau > 0`` it is biased (PHYSICS.md: ``tau = 50``,
    ``sigma_e = 3``, ``g = 2`` at 100 counts gives 1.64 instead of 2). Computed over ``mask``
    (a flat region) when given, else over the whole image, where anatomy inflates the variance.
    """
    z = _as_image(image)
    if mask is not None:
        mk = np.asarray(mask, dtype=bool)
        if mk.shape != z.shape:
            raise MammoDenoiseError(
                f"mask shape {mk.shape} does not match the image shape {z.shape}"
            )
        z = z[mk]
    if z.size < 2:
        raise MammoDenoiseError("seed gain estimate needs at least 2 pixels")
    mean = float(np.mean(z))
    if not mean > 0:
        raise MammoDenoiseError(
            f"seed gain estimate var/mean needs a positive mean signal, got {mean:.4g}"
        )
    return float(np.var(z)) / mean


def estimate_noise_params(image, method: str = "foi", **kw) -> NoiseParams:
    """Noise parameters of a raw image.

    - ``"foi"``: :func:`fit_noise_model` (keyword arguments passed on), returns ``.params``.
    - ``"seed"``: the first seed's simplification, ``NoiseParams(offset=0, gain=k,
      electronic_sigma=0)`` with ``k = var(z)/mean(z)`` (:func:`seed_gain`; accepts ``mask``).
    """
    if method == "foi":
        return fit_noise_model(image, **kw).params
    if method == "seed":
        unknown = set(kw) - {"mask"}
        if unknown:
            raise MammoDenoiseError(
                f"method 'seed' takes only mask=, got {', '.join(sorted(unknown))}"
            )
        k = seed_gain(image, mask=kw.get("mask"))
        if not k > 0:
            raise MammoDenoiseError("seed gain estimate var/mean is zero: the image is constant")
        return NoiseParams(offset=0.0, gain=k, electronic_sigma=0.0)
    raise MammoDenoiseError(
        f"unknown noise estimation method {method!r}; choose one of {', '.join(NOISE_METHODS)}"
    )
