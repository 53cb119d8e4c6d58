"""Image-quality metrics physicists use for denoised mammograms (PHYSICS.md section 5).

numpy, with scikit-image for SSIM and SciPy (its dependency) for filtering. Images are 2-D
arrays in any linear units; positions are ``(row, column)`` in pixels.
"""

from __future__ import annotations

import math

import numpy as np

from mammo_denoise.errors import MammoDenoiseError

__all__ = [
    "psnr",
    "ssim",
    "nps_2d",
    "nps_radial",
    "calcification_contrast",
    "spot_contrast_map",
    "cnr",
    "flat_region_sigma",
    "DETREND_METHODS",
]

DETREND_METHODS = ("none", "mean", "plane", "quadratic")


# ----------------------------------------------------------------------------- helpers
def _pair(estimate, reference) -> tuple[np.ndarray, np.ndarray]:
    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if est.shape != ref.shape:
        raise MammoDenoiseError(
            f"estimate and reference shapes differ: {est.shape} vs {ref.shape}"
        )
    if not (np.isfinite(est).all() and np.isfinite(ref).all()):
        raise MammoDenoiseError("estimate or reference contains non-finite values")
    return est, ref


def _data_range(ref: np.ndarray, data_range) -> float:
    if data_range is None:
        data_range = float(ref.max() - ref.min())
    data_range = float(data_range)
    if not data_range > 0:
        raise MammoDenoiseError(
            f"data_range must be positive (the reference is constant?), got {data_range}"
        )
    return data_range


def _mask(mask, shape) -> np.ndarray:
    m = np.asarray(mask, dtype=bool)
    if m.shape != shape:
        raise MammoDenoiseError(f"mask shape {m.shape} does not match {shape}")
    if not m.any():
        raise MammoDenoiseError("mask selects no pixels")
    return m


def _poly_basis(shape: tuple[int, int], order: int) -> np.ndarray:
    """Polynomial basis images up to total degree ``order`` on centred coordinates,
    shape ``(n_terms, H*W)``."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    y -= y.mean()
    x -= x.mean()
    terms = [np.ones(shape)]
    if order >= 1:
        terms += [y, x]
    if order >= 2:
        terms += [y * y, x * x, x * y]
    return np.stack([t.ravel() for t in terms])


def _detrend(rois: np.ndarray, detrend: str) -> np.ndarray:
    """Subtract a least-squares polynomial per ROI (``rois``: ``(N, H, W)``)."""
    if detrend not in DETREND_METHODS:
        raise MammoDenoiseError(
            f"unknown detrend {detrend!r}; choose one of {', '.join(DETREND_METHODS)}"
        )
    if detrend == "none":
        return rois
    order = {"mean": 0, "plane": 1, "quadratic": 2}[detrend]
    q, _ = np.linalg.qr(_poly_basis(rois.shape[1:], order).T)  # (n, k) orthonormal columns
    flat = rois.reshape(rois.shape[0], -1)
    flat = flat - (flat @ q) @ q.T
    return flat.reshape(rois.shape)


def _extract_rois(image_or_rois, roi: int, overlap: float) -> np.ndarray:
    data = image_or_rois
    if isinstance(data, (list, tuple)):
        data = np.stack([np.asarray(r, dtype=np.float64) for r in data])
    data = np.asarray(data, dtype=np.float64)
    if not np.isfinite(data).all():
        raise MammoDenoiseError("NPS input contains non-finite values")
    if data.ndim == 3:
        if data.shape[1] < 4 or data.shape[2] < 4:
            raise MammoDenoiseError(f"ROIs too small for an NPS: {data.shape[1:]}")
        return data
    if data.ndim != 2:
        raise MammoDenoiseError(
            f"NPS needs a 2-D image or a stack of ROIs (N, H, W), got shape {data.shape}"
        )
    if not 0.0 <= overlap < 1.0:
        raise MammoDenoiseError(f"overlap must be in [0, 1), got {overlap}")
    roi = int(roi)
    H, W = data.shape
    if roi < 4 or H < roi or W < roi:
        raise MammoDenoiseError(f"image {H}x{W} is smaller than one {roi}x{roi} NPS ROI")
    step = max(1, int(round(roi * (1.0 - overlap))))
    ys = range(0, H - roi + 1, step)
    xs = range(0, W - roi + 1, step)
    return np.stack([data[y : y + roi, x : x + roi] for y in ys for x in xs])


def _pixel_mm(pixel_mm) -> tuple[float, float]:
    if np.ndim(pixel_mm) == 0:
        dy = dx = float(pixel_mm)
    else:
        dy, dx = (float(v) for v in pixel_mm)
    if not (dy > 0 and dx > 0):
        raise MammoDenoiseError(f"pixel_mm must be positive, got {pixel_mm!r}")
    return dy, dx


def _annulus_radii(diameter) -> tuple[float, float, float]:
    """Disk radius and the background annulus' inner and outer radii for a spot's diameter."""
    r = float(diameter) / 2.0
    if not r > 0:
        raise MammoDenoiseError(f"diameter must be positive, got {diameter}")
    r_in = r + max(1.0, r)
    return r, r_in, r_in + max(3.0, 2.0 * r)


def _disk_and_annulus(shape, centre, diameter):
    """Boolean masks of the disk ``|p - c| <= d/2`` and of the background annulus
    ``r_in < |p - c| <= r_out`` with ``r_in = d/2 + max(1, d/2)`` (a guard ring against blur)
    and ``r_out = r_in + max(3, d)``, on a window around the centre (the whole annulus must lie
    inside the image).

    Returns ``(window_slices, disk, annulus)``."""
    cy, cx = float(centre[0]), float(centre[1])
    r, r_in, r_out = _annulus_radii(diameter)
    y0, y1 = int(math.floor(cy - r_out)), int(math.ceil(cy + r_out)) + 1
    x0, x1 = int(math.floor(cx - r_out)), int(math.ceil(cx + r_out)) + 1
    if y0 < 0 or x0 < 0 or y1 > shape[0] or x1 > shape[1]:
        raise MammoDenoiseError(
            f"position {(cy, cx)} (diameter {diameter} px) is too close to the image edge: "
            f"the background annulus (outer radius {r_out:.1f} px) leaves the image"
        )
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.hypot(yy - cy, xx - cx)
    return (slice(y0, y1), slice(x0, x1)), d <= r, (d > r_in) & (d <= r_out)


def _positions(positions, diameters_px):
    pos = np.atleast_2d(np.asarray(positions, dtype=np.float64))
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise MammoDenoiseError(f"positions must be (row, column) pairs, got shape {pos.shape}")
    diam = np.broadcast_to(np.asarray(diameters_px, dtype=np.float64), (pos.shape[0],))
    return pos, diam


def _disk_stats(image, positions, diameters_px):
    """Per position: (mean in disk, mean in annulus, std in annulus (ddof 1))."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise MammoDenoiseError(f"expected a 2-D image, got shape {img.shape}")
    pos, diam = _positions(positions, diameters_px)
    out = np.empty((pos.shape[0], 3))
    for i, (c, d) in enumerate(zip(pos, diam)):
        win, disk, ring = _disk_and_annulus(img.shape, c, d)
        if disk.sum() < 1:
            raise MammoDenoiseError(f"diameter {d} px at {tuple(c)} covers no pixel centre")
        patch = img[win]
        out[i] = patch[disk].mean(), patch[ring].mean(), patch[ring].std(ddof=1)
    return out


# ----------------------------------------------------------------------------- fidelity
def psnr(estimate, reference, data_range=None, mask=None) -> float:
    """Peak signal-to-noise ratio in dB: ``PSNR = 10 * log10(R^2 / MSE)``,
    ``MSE = mean((estimate - reference)^2)`` over ``mask`` (all pixels if None).

    ``R = data_range``, by default ``max(reference) - min(reference)`` over the mask (the
    convention of ``skimage.metrics.peak_signal_noise_ratio`` for float images; fix it
    explicitly when comparing across images). ``inf`` when the images are equal.
    """
    est, ref = _pair(estimate, reference)
    if mask is not None:
        m = _mask(mask, ref.shape)
        est, ref = est[m], ref[m]
    dr = _data_range(ref, data_range)
    mse = float(np.mean((est - ref) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(dr * dr / mse)


def ssim(estimate, reference, data_range=None, mask=None) -> float:
    """Mean structural similarity (Wang et al., IEEE TIP 13(4), 2004) via
    ``skimage.metrics.structural_similarity`` (7x7 uniform window, K1 = 0.01, K2 = 0.03).

    ``data_range`` defaults to ``max(reference) - min(reference)``. With ``mask``, the local
    SSIM map is averaged over the masked pixels only (the windows still see their neighbours):
    on a mammogram the flat unattenuated background would otherwise pull the mean toward 1.
    """
    from skimage.metrics import structural_similarity

    est, ref = _pair(estimate, reference)
    dr = _data_range(ref, data_range)
    if mask is None:
        return float(structural_similarity(ref, est, data_range=dr))
    m = _mask(mask, ref.shape)
    _, ssim_map = structural_similarity(ref, est, data_range=dr, full=True)
    return float(ssim_map[m].mean())


# ----------------------------------------------------------------------------- noise power
def nps_2d(image_or_rois, pixel_mm, roi: int = 256, overlap: float = 0.5, detrend="plane",
           normalise: bool = True):
    """Two-dimensional noise power spectrum (IEC 62220-1 style; PHYSICS.md section 5)::

        NPS(u, v) = (dx * dy) / (Nx * Ny) * < |DFT(ROI - trend)|^2 >_ROIs

    Parameters
    ----------
    image_or_rois : (H, W) image, or (N, Ny, Nx) stack / list of ROIs
        A 2-D image is tiled into ``roi x roi`` ROIs with ``overlap`` (0.5 = 50 %); a stack is
        used as given (e.g. differences of repeated exposures, divided by sqrt(2) by the caller).
    pixel_mm : float or (dy, dx)
        Pixel pitch in mm.
    detrend : {"plane", "quadratic", "mean", "none"}
        Least-squares polynomial removed from each ROI before the transform.
    normalise : bool
        Divide by the squared mean signal (mean of the ROI means before detrending): the
        normalised NPS (NNPS, mm^2). Otherwise units are (signal units)^2 * mm^2.

    Returns
    -------
    ((fy, fx), nps) : frequencies in cycles/mm (``fftshift`` order, zero in the centre) and
    the ``(Ny, Nx)`` spectrum. By Parseval, ``nps.sum() * dfy * dfx`` equals the variance of
    the detrended ROIs (divided by the squared mean if ``normalise``).
    """
    dy, dx = _pixel_mm(pixel_mm)
    rois = _extract_rois(image_or_rois, roi, overlap)
    mean_signal = float(rois.mean())
    resid = _detrend(rois, detrend)
    ny, nx = resid.shape[1:]
    half = np.zeros((ny, nx // 2 + 1))
    for start in range(0, resid.shape[0], 256):  # chunks bound the complex temporaries
        spec = np.fft.rfft2(resid[start : start + 256])
        half += (spec.real**2 + spec.imag**2).sum(axis=0)
    half /= resid.shape[0]
    # the spectrum of a real signal is Hermitian: P(-u, -v) = P(u, v)
    power = np.empty((ny, nx))
    power[:, : nx // 2 + 1] = half
    cols = np.arange(nx // 2 + 1, nx)
    power[:, cols] = half[(-np.arange(ny)) % ny][:, nx - cols]
    nps = (dx * dy) / (nx * ny) * power
    if normalise:
        if mean_signal == 0:
            raise MammoDenoiseError("cannot normalise the NPS: the mean signal is 0")
        nps = nps / mean_signal**2
    fy = np.fft.fftshift(np.fft.fftfreq(ny, d=dy))
    fx = np.fft.fftshift(np.fft.fftfreq(nx, d=dx))
    return (fy, fx), np.fft.fftshift(nps)


def nps_radial(image_or_rois, pixel_mm, roi: int = 256, overlap: float = 0.5,
               detrend="plane", normalise: bool = True):
    """Radially averaged NPS (see :func:`nps_2d`).

    The 2-D spectrum is averaged over annuli of width ``df = 1/(N * pixel)`` (the frequency
    sampling of the ROI, ``N = max(Nx, Ny)``) centred on ``k * df``, ``k = 0 .. N/2``, i.e.
    from 0 to the Nyquist frequency ``1/(2 * pixel)``.

    Returns
    -------
    (f, nps) : 1-D arrays, frequencies in cycles/mm and the averaged (N)NPS.
    """
    (fy, fx), nps = nps_2d(image_or_rois, pixel_mm, roi, overlap, detrend, normalise)
    n = max(len(fy), len(fx))
    df = max(fy[1] - fy[0], fx[1] - fx[0]) if n > 1 else 1.0
    f_nyq = min(np.abs(fy).max(), np.abs(fx).max())
    radius = np.hypot(fy[:, None], fx[None, :])
    k = np.rint(radius / df).astype(np.int64)
    kmax = int(np.floor(f_nyq / df + 1e-9))
    keep = k <= kmax
    sums = np.bincount(k[keep], weights=nps[keep], minlength=kmax + 1)
    counts = np.bincount(k[keep], minlength=kmax + 1)
    f = np.arange(kmax + 1) * df
    with np.errstate(invalid="ignore"):
        return f, sums / counts


# ----------------------------------------------------------------------------- lesions
def calcification_contrast(image, positions, diameters_px, background=None, *, polarity=-1,
                           offset: float = 0.0) -> np.ndarray:
    """Relative contrast of small round objects at known positions::

        C = polarity * (S - A) / (B - offset)

    ``S``: mean inside the disk of diameter ``diameters_px`` centred at ``positions``
    (``(row, col)``, sub-pixel allowed); ``A``: mean in the background annulus
    ``r_in < |p - c| <= r_out`` with ``r = d/2``, ``r_in = r + max(1, r)`` (guard ring against
    blur) and ``r_out = r_in + max(3, 2r)``; ``B``: ``background`` (scalar or one per
    position) or ``A`` when None; ``offset``: the zero-signal level (the detector offset for
    raw images, 0 for counts).

    ``polarity``: -1 (default) for linear raw / photon-count images, where a calcification
    attenuates and lowers the signal; +1 for images where it is brighter (log-transformed or
    FOR PRESENTATION MONOCHROME2 data). With the right polarity a visible calcification has
    positive contrast; a denoiser that smooths it away drives it to 0.
    """
    if polarity not in (-1, 1):
        raise MammoDenoiseError(f"polarity must be +1 or -1, got {polarity!r}")
    stats = _disk_stats(image, positions, diameters_px)
    inside, ring = stats[:, 0], stats[:, 1]
    ref = ring if background is None else np.broadcast_to(
        np.asarray(background, dtype=np.float64), ring.shape
    )
    denom = ref - float(offset)
    if np.any(denom == 0):
        raise MammoDenoiseError("background level equals the offset: contrast undefined")
    return polarity * (inside - ring) / denom


def spot_contrast_map(image, diameter_px: float, *, polarity=-1, offset: float = 0.0) -> np.ndarray:
    """:func:`calcification_contrast` of a spot of ``diameter_px`` centred on every pixel.

    The same disk and background annulus, as filters over the whole image (mirrored at the
    borders), so that a denoiser's output can be searched for calcification-like dots where
    there are none: on a flat exposure every local maximum above a contrast a real
    calcification would have is a false one. NaN where the background equals the offset.
    """
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise MammoDenoiseError(f"expected a 2-D image, got shape {img.shape}")
    if polarity not in (-1, 1):
        raise MammoDenoiseError(f"polarity must be +1 or -1, got {polarity!r}")
    half = int(math.ceil(_annulus_radii(diameter_px)[2]))
    _, disk, ring = _disk_and_annulus((2 * half + 1,) * 2, (half, half), diameter_px)
    inside = ndimage.correlate(img, disk / disk.sum(), mode="reflect")
    background = ndimage.correlate(img, ring / ring.sum(), mode="reflect")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = polarity * (inside - background) / (background - float(offset))
    # Filter sums are not exact: a background within rounding of the offset is "equal".
    out[np.isclose(background, float(offset), rtol=1e-9, atol=0.0)] = np.nan
    return out


def cnr(image, positions, diameters_px, *, polarity=-1, sigma=None) -> np.ndarray:
    """Contrast-to-noise ratio at known positions (PHYSICS.md section 5)::

        CNR = polarity * (mean_signal - mean_background) / sigma_background

    Disk and annulus as in :func:`calcification_contrast`. ``sigma_background`` is the
    standard deviation in each annulus unless ``sigma`` is given (e.g. from
    :func:`flat_region_sigma`, steadier for small annuli).
    """
    if polarity not in (-1, 1):
        raise MammoDenoiseError(f"polarity must be +1 or -1, got {polarity!r}")
    stats = _disk_stats(image, positions, diameters_px)
    s = stats[:, 2] if sigma is None else np.broadcast_to(
        np.asarray(sigma, dtype=np.float64), stats[:, 2].shape
    )
    if np.any(s <= 0):
        raise MammoDenoiseError("background standard deviation is 0: CNR undefined")
    return polarity * (stats[:, 0] - stats[:, 1]) / s


def flat_region_sigma(image, region=None, detrend="plane") -> float:
    """Noise standard deviation in a flat region after removing a least-squares trend::

        sigma = sqrt( sum (z - trend)^2 / (n - k) ),  k = number of trend terms

    ``region``: None (whole image), a tuple of slices, ``(y0, y1, x0, x1)`` or a boolean
    mask of the image's shape. ``detrend``: "plane" (default), "quadratic", "mean", "none".
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise MammoDenoiseError(f"expected a 2-D image, got shape {img.shape}")
    if detrend not in DETREND_METHODS:
        raise MammoDenoiseError(
            f"unknown detrend {detrend!r}; choose one of {', '.join(DETREND_METHODS)}"
        )
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    if region is None:
        sel = np.ones(img.shape, bool)
    elif isinstance(region, np.ndarray) and region.dtype == bool:
        if region.shape != img.shape:
            raise MammoDenoiseError(f"region mask shape {region.shape} != image {img.shape}")
        sel = region
    else:
        if len(region) == 4 and all(isinstance(v, (int, np.integer)) for v in region):
            region = (slice(region[0], region[1]), slice(region[2], region[3]))
        sel = np.zeros(img.shape, bool)
        sel[tuple(region)] = True
    z, y, x = img[sel], yy[sel].astype(np.float64), xx[sel].astype(np.float64)
    y -= y.mean() if y.size else 0
    x -= x.mean() if x.size else 0
    cols = {"none": [], "mean": [np.ones_like(z)], "plane": [np.ones_like(z), y, x],
            "quadratic": [np.ones_like(z), y, x, y * y, x * x, x * y]}[detrend]
    k = len(cols)
    if z.size <= k + 1:
        raise MammoDenoiseError(f"region has too few pixels ({z.size}) for a noise estimate")
    if k:
        A = np.stack(cols, axis=1)
        coef, *_ = np.linalg.lstsq(A, z, rcond=None)
        z = z - A @ coef
    return float(np.sqrt(np.sum(z * z) / (z.size - k)))
