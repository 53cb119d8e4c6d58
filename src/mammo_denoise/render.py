"""Render mammograms for screens and figures (numpy + Pillow + matplotlib Agg; no Qt).

A raw ("FOR PROCESSING", LIN) mammogram is proportional to transmitted photons. Viewing it
like a FOR PRESENTATION image takes the log of the offset-corrected signal, which is the
projected attenuation ``sum(mu * l)`` (Beer-Lambert), windows it on robust percentiles inside
the breast and shows attenuation as bright: dense tissue and calcifications white, fat grey,
the direct-exposure background black (the MONOCHROME1 sense of the raw data).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from .io.meta import MammogramMeta
from .physics.params import NoiseParams

__all__ = [
    "attenuation_image",
    "equalize_periphery",
    "display_window",
    "display_image",
    "to_uint8",
    "save_png",
    "save_difference_png",
    "save_panel_png",
    "breast_mask",
    "difference_limit",
    "gat_residual",
]


def _is_linear(meta: MammogramMeta | None, linear: bool | None) -> bool:
    if linear is not None:
        return bool(linear)
    if meta is None or not (meta.pixel_intensity_relationship or meta.presentation_intent):
        return True  # unknown: assume raw linear data, this package's main input
    return bool(meta.is_linear)


def attenuation_image(
    image,
    meta: MammogramMeta | None = None,
    params: NoiseParams | None = None,
    linear: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(a, valid)``: a display-domain image in which brighter means denser.

    Linear raw data: ``a = -log(z - offset)`` (``offset`` from ``params``, else 0). Pixels
    with essentially no signal (collimator shadow: below ``offset + max(5 sigma_e, gain)``,
    or without params below 2 % of the 99.9th percentile) are not ``valid``; they carry no
    attenuation information and are shown black. Non-linear (FOR PRESENTATION) data is used
    as is, negated for MONOCHROME1 so that larger ``a`` is always displayed brighter.
    """
    z = np.asarray(image, dtype=np.float32)
    if not _is_linear(meta, linear):
        a = -z if (meta is not None and meta.display_inverted) else z.copy()
        return a, np.isfinite(a)
    if params is not None:
        signal = z - np.float32(params.offset)
        floor = max(5.0 * params.electronic_sigma, params.gain, 1e-3)
    else:
        signal = z
        sub = z[:: max(1, z.shape[0] // 512), :: max(1, z.shape[-1] // 512)]
        floor = max(0.02 * float(np.percentile(sub, 99.9)), 1e-3)
    valid = signal > floor
    a = -np.log(np.maximum(signal, np.float32(floor)))
    return a.astype(np.float32, copy=False), valid


def _pixel_mm(meta: MammogramMeta | None) -> float:
    if meta is not None and meta.pixel_spacing_mm:
        return float(meta.pixel_spacing_mm[0])
    return 0.07


def _breast_mask(a: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Tissue vs direct exposure by Otsu's threshold on the attenuation of valid pixels."""
    from skimage.filters import threshold_otsu

    step = max(1, int(np.sqrt(a.size / 250_000)))
    sample = a[::step, ::step][valid[::step, ::step]]
    if sample.size < 16 or np.ptp(sample) == 0:
        return valid
    return valid & (a > threshold_otsu(sample))


def breast_mask(
    image,
    meta: MammogramMeta | None = None,
    params: NoiseParams | None = None,
    linear: bool | None = None,
) -> np.ndarray:
    """Boolean mask of the breast (tissue, not the direct exposure or the collimator shadow);
    a stack gets one mask per frame."""
    image = np.asarray(image)
    if image.ndim == 3:
        return np.stack([breast_mask(f, meta, params, linear) for f in image])
    return _breast_mask(*attenuation_image(image, meta, params, linear))


def difference_limit(diff, mask=None, percentile: float = 99.5) -> float:
    """Symmetric colour limit of a difference image: the ``percentile`` of ``|diff|`` inside
    ``mask`` (the breast), else over the image. In raw data the direct exposure holds the most
    counts and so the largest residual in DN; scaled by it, the breast's residual looks flat."""
    diff = np.asarray(diff, dtype=np.float32)
    if mask is not None:
        inside = diff[np.asarray(mask, bool) & np.isfinite(diff)]
        if inside.size >= 64:  # a mask that found no breast falls back to the whole image
            return _symmetric_limit(inside, None, percentile)
    return _symmetric_limit(diff, None, percentile)


def gat_residual(noisy, denoised, params: NoiseParams) -> np.ndarray:
    """``anscombe(noisy) - anscombe(denoised)``: the removed part in noise standard deviations.

    The generalized Anscombe transform makes Poisson-Gaussian noise unit-variance at every
    level, so removed noise is ~N(0, 1) in the breast and the open field alike, while removed
    anatomy (an edge, a calcification) stands out at several sigma.
    """
    from .physics.anscombe import anscombe

    residual = anscombe(np.asarray(noisy, np.float32), params) - anscombe(
        np.asarray(denoised, np.float32), params)
    return np.asarray(residual, dtype=np.float32)


def equalize_periphery(
    a: np.ndarray,
    tissue: np.ndarray,
    strength: float = 1.0,
    pixel_mm: float = 0.07,
    sigma_mm: float = 4.0,
) -> np.ndarray:
    """Lift the thin breast periphery toward the interior level (peripheral equalisation).

    Toward the skin line the compressed breast gets thinner, so projected attenuation falls
    over the last centimetre and a plain log view shows a dark rim. Processed (FOR
    PRESENTATION) mammograms compensate this. Here the smooth attenuation ``S`` (a Gaussian of
    ``sigma_mm`` over the tissue, normalised convolution) is compared with its median inside
    the tissue; ``strength * max(0, median - S)`` is added back. Only the low-frequency
    thickness deficit is touched; texture and denser regions are left as they are.
    """
    from scipy import ndimage

    tissue = np.asarray(tissue, bool)
    if strength == 0 or not tissue.any():
        return a
    k = max(1, int(round(sigma_mm / pixel_mm / 8)))  # work at ~8 samples per sigma
    h, w = (a.shape[0] // k) * k, (a.shape[1] // k) * k
    weight = tissue[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3), dtype=np.float32)
    vals = np.where(tissue, a, 0.0)[:h, :w].reshape(h // k, k, w // k, k).sum(axis=(1, 3))
    vals = vals / np.float32(k * k)
    sig = sigma_mm / pixel_mm / k
    num = ndimage.gaussian_filter(vals, sig, mode="nearest")
    den = ndimage.gaussian_filter(weight, sig, mode="nearest")
    smooth = num / np.maximum(den, 1e-3)
    ref = float(np.median(smooth[weight > 0.99])) if (weight > 0.99).any() else float(np.median(a[tissue]))
    deficit = np.maximum(ref - smooth, 0.0).astype(np.float32)
    full = ndimage.zoom(deficit, k, order=1, mode="nearest", grid_mode=True, prefilter=False)
    full = np.pad(full, ((0, a.shape[0] - full.shape[0]), (0, a.shape[1] - full.shape[1])), mode="edge")
    return np.where(tissue, a + np.float32(strength) * full, a).astype(np.float32)


def display_window(
    image,
    meta: MammogramMeta | None = None,
    params: NoiseParams | None = None,
    mask=None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    linear: bool | None = None,
    equalize: float = 0.0,
) -> tuple[float, float]:
    """Robust ``(low, high)`` window in the display domain of :func:`attenuation_image`.

    Percentiles are taken inside ``mask`` (the breast) when given, else inside an Otsu breast
    mask, so the direct-exposure background and the collimator shadow do not set the window.
    """
    a, valid = attenuation_image(image, meta, params, linear)
    region = valid & np.asarray(mask, bool) if mask is not None else _breast_mask(a, valid)
    if equalize:
        a = equalize_periphery(a, region, equalize, _pixel_mm(meta))
    step = max(1, int(np.sqrt(a.size / 1_000_000)))
    vals = a[::step, ::step][region[::step, ::step]]
    if vals.size < 2:
        vals = a[valid] if valid.any() else a.ravel()
    lo, hi = np.percentile(vals, percentiles)
    if hi <= lo:
        hi = lo + 1e-6
    return float(lo), float(hi)


def display_image(
    image,
    meta: MammogramMeta | None = None,
    params: NoiseParams | None = None,
    mask=None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    window: tuple[float, float] | None = None,
    linear: bool | None = None,
    gamma: float = 1.0,
    equalize: float = 0.0,
) -> np.ndarray:
    """Render a mammogram as float32 in [0, 1], dense tissue bright, background black.

    ``window`` (from :func:`display_window`, e.g. of a reference image) overrides the
    percentile window so that several images can be shown on the same grey scale. ``gamma``
    is applied after windowing (< 1 brightens fat, > 1 darkens it). ``equalize`` (0..1) applies
    :func:`equalize_periphery` so that the thin rim near the skin line stays readable, as on
    processed mammograms; 0 shows the plain log image.
    """
    a, valid = attenuation_image(image, meta, params, linear)
    if window is None:
        window = display_window(image, meta, params, mask, percentiles, linear, equalize)
    if equalize:
        region = valid & np.asarray(mask, bool) if mask is not None else _breast_mask(a, valid)
        a = equalize_periphery(a, region, equalize, _pixel_mm(meta))
    lo, hi = window
    out = np.clip((a - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0)
    if gamma != 1.0:
        out **= np.float32(gamma)
    out[~valid] = 0.0
    return out.astype(np.float32, copy=False)


def to_uint8(rendered) -> np.ndarray:
    """[0, 1] float -> uint8 with rounding."""
    return np.rint(np.clip(np.asarray(rendered, np.float32), 0, 1) * 255).astype(np.uint8)


def save_png(
    path: str | PathLike,
    image,
    render: bool = True,
    max_side: int | None = None,
    **kw,
) -> Path:
    """Write an 8-bit grey PNG of ``image`` rendered by :func:`display_image` (``**kw``).

    ``render=False`` takes ``image`` as already in [0, 1]. ``max_side`` shrinks the picture
    (Lanczos) so that its longer side is at most that many pixels.
    """
    from PIL import Image

    rendered = display_image(image, **kw) if render else np.asarray(image, np.float32)
    pic = Image.fromarray(to_uint8(rendered), mode="L")
    if max_side and max(pic.size) > max_side:
        scale = max_side / max(pic.size)
        pic = pic.resize(
            (max(1, round(pic.size[0] * scale)), max(1, round(pic.size[1] * scale))),
            Image.LANCZOS,
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pic.save(path)
    return path


def _symmetric_limit(diff: np.ndarray, limit: float | None, percentile: float) -> float:
    if limit is not None:
        return float(abs(limit)) or 1.0
    finite = np.abs(diff[np.isfinite(diff)])
    lim = float(np.percentile(finite, percentile)) if finite.size else 1.0
    return lim if lim > 0 else 1.0


def _figure(nrows, ncols, panel_in):
    import matplotlib

    matplotlib.use("Agg", force=False)  # no-op when a backend is already chosen
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_in * ncols, panel_in * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_difference_png(
    path: str | PathLike,
    diff,
    limit: float | None = None,
    percentile: float = 99.5,
    cmap: str = "RdBu_r",
    title: str | None = None,
    units: str = "DN",
    colorbar: bool = True,
    dpi: int = 150,
    panel_in: float = 5.0,
    mask=None,
) -> Path:
    """Write a difference image with a diverging colormap centred on zero.

    The limits are symmetric, ``[-limit, +limit]``; by default ``limit`` is the
    ``percentile`` of ``|diff|`` inside ``mask`` (the breast; :func:`difference_limit`), so that
    neither a few outliers nor the open field wash the map out.
    """
    diff = np.asarray(diff, dtype=np.float32)
    lim = (float(abs(limit)) or 1.0) if limit is not None else difference_limit(diff, mask, percentile)
    fig, axes = _figure(1, 1, panel_in)
    ax = axes[0, 0]
    im = ax.imshow(diff, cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=units)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def save_panel_png(
    path: str | PathLike,
    panels,
    ncols: int | None = None,
    shared_window: bool = True,
    suptitle: str | None = None,
    panel_in: float = 4.0,
    dpi: int = 150,
    diff_cmap: str = "RdBu_r",
    **kw,
) -> Path:
    """Side-by-side figure of ``[(title, image), ...]`` (matplotlib, Agg).

    Each image is rendered with :func:`display_image` (``**kw``: meta, params, mask, ...);
    with ``shared_window`` all use the window of the first one, so noisy and denoised images
    are compared on the same grey scale. An entry ``(title, image, "diff")`` is drawn as a
    zero-centred difference map, ``(title, image, "raw")`` as already in [0, 1].
    """
    panels = list(panels)
    if not panels:
        raise ValueError("save_panel_png needs at least one (title, image) panel")
    n = len(panels)
    ncols = ncols or n
    nrows = -(-n // ncols)
    window = kw.pop("window", None)
    if window is None and shared_window:
        first = next((p for p in panels if len(p) < 3 or p[2] == "image"), None)
        if first is not None:
            window = display_window(
                first[1],
                **{k: kw[k] for k in ("meta", "params", "mask", "percentiles", "linear", "equalize") if k in kw},
            )
    fig, axes = _figure(nrows, ncols, panel_in)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, panel in zip(axes.ravel(), panels):
        title, image = panel[0], panel[1]
        kind = panel[2] if len(panel) > 2 else "image"
        if kind == "diff":
            diff = np.asarray(image, np.float32)
            lim = _symmetric_limit(diff, None, 99.5)
            im = ax.imshow(diff, cmap=diff_cmap, vmin=-lim, vmax=lim, interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        elif kind == "raw":
            ax.imshow(np.asarray(image, np.float32), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(display_image(image, window=window, **kw), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
        ax.set_title(title)
    if suptitle:
        fig.suptitle(suptitle)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
