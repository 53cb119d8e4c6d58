"""Layer <-> MammogramMeta glue: how a mammogram looks in napari.

Display rules (one place, used by the reader, the sample data and every widget):

* ``scale`` is the pixel spacing in mm, so rulers and NPS frequencies are physical;
* the name is ``meta.layer_name`` (laterality + view), never patient data;
* contrast limits come from the VOI window when the header has one; raw (linear) data are
  windowed on the breast (``tissue_limits``) with a gamma fitted so that the grey level follows
  the log of the signal there (``log_gamma``), as a processed mammogram shows attenuation;
* MONOCHROME1 is shown with ``gray_r``, and so is raw data where more X-rays give higher values
  (PixelIntensityRelationshipSign +1, the default), whatever its photometric interpretation: the
  breast bright, the open field dark. The data stay untouched, only the colormap flips;
* ``metadata["mammo_meta"]`` carries the MammogramMeta, ``metadata["noise_params"]`` the
  NoiseParams once known, ``metadata["derivation"]`` what was done to derive the layer.
"""

from __future__ import annotations

import numpy as np

META_KEY = "mammo_meta"
PARAMS_KEY = "noise_params"
DERIVATION_KEY = "derivation"
RAW_GAMMA = 0.5


def _finite_sample(data) -> np.ndarray:
    """The finite values of every k-th pixel, about 250 000 of them: display ranges stay fast
    on full-field images."""
    arr = np.asarray(data)
    step = max(1, int(np.sqrt(arr.size / 250_000)))
    sample = arr[..., ::step, ::step]
    return sample[np.isfinite(sample)]


def robust_limits(data, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Percentile display range."""
    finite = _finite_sample(data)
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(finite, [low, high])
    if not hi > lo:
        hi = lo + 1.0
    return (float(lo), float(hi))


def tissue_limits(data, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Display range of the breast in a raw (linear) mammogram.

    Raw images hold two plateaus that are not anatomy: the direct-exposure field, an order of
    magnitude brighter than the breast, and the unexposed collimator shadow at the offset. Left
    in, they take the whole grey scale and the breast shows as a flat patch, so the window is
    taken from the values between them. Falls back to ``robust_limits`` when little is left.
    """
    sample = _finite_sample(data)
    if sample.size == 0:
        return (0.0, 1.0)
    bottom, top = np.percentile(sample, [0.1, 99.9])
    span = top - bottom
    tissue = sample[(sample > bottom + 0.02 * span) & (sample < bottom + 0.7 * span)]
    if tissue.size < 0.05 * sample.size:
        return robust_limits(data, low, high)
    lo, hi = np.percentile(tissue, [low, high])
    return (float(lo), float(hi)) if hi > lo else robust_limits(data, low, high)


def log_gamma(data, limits, offset: float = 0.0) -> float:
    """The gamma for which the windowed grey level ``v ** gamma`` best follows the log of the
    signal above ``offset`` over the values inside ``limits`` (least squares on a grid).

    With the inverted colormap, ``1 - v ** gamma`` is then close to the attenuation
    ``log(hi / z)`` scaled to the window: a log display without changing the data.
    """
    lo, hi = (float(v) for v in limits)
    low, high = lo - offset, hi - offset
    if not (low > 0 and high > low):
        return RAW_GAMMA
    sample = _finite_sample(data).astype(np.float64)
    sample = sample[(sample > lo) & (sample < hi)]
    if sample.size < 100:
        return RAW_GAMMA
    v = (sample - lo) / (hi - lo)
    target = np.log((sample - offset) / low) / np.log(high / low)
    gammas = np.linspace(0.1, 1.0, 91)
    errors = [np.mean((v**g - target) ** 2) for g in gammas]
    return float(gammas[int(np.argmin(errors))])


def colormap_for(meta) -> str:
    """``gray_r`` where higher values must look darker: MONOCHROME1, and raw data in which
    higher values mean more X-rays (the open field), so the breast shows bright as radiologists
    read it; else ``gray``."""
    if meta is None:
        return "gray"
    if meta.is_linear:
        return "gray" if meta.pixel_intensity_relationship_sign == -1 else "gray_r"
    return "gray_r" if meta.display_inverted else "gray"


def scale_for(meta, ndim: int = 2) -> tuple[float, ...]:
    spacing = getattr(meta, "pixel_spacing_mm", None) if meta is not None else None
    spacing = tuple(float(s) for s in spacing) if spacing else (1.0, 1.0)
    return (1.0,) * (ndim - 2) + spacing


def image_layer_kwargs(data, meta, name: str | None = None, params=None) -> dict:
    """napari ``add_image`` keyword arguments for a mammogram read with its meta."""
    kwargs = {
        "name": name or (meta.layer_name if meta is not None else "image"),
        "scale": scale_for(meta, np.ndim(data)),
        "colormap": colormap_for(meta),
        "metadata": {META_KEY: meta},
    }
    spacing = getattr(meta, "pixel_spacing_mm", None)
    if spacing:
        kwargs["units"] = "mm"
        kwargs["metadata"]["pixel_spacing"] = f"{spacing[0]:g} x {spacing[1]:g} mm"
    else:
        kwargs["metadata"]["pixel_spacing"] = "unknown (scale: 1 per pixel)"
    raw = meta is not None and meta.is_linear
    limits = meta.contrast_limits if meta is not None else None
    kwargs["contrast_limits"] = tuple(limits) if limits else (
        tissue_limits(data) if raw else robust_limits(data))
    if raw:
        # Raw data are linear in dose while readers see attenuation, its logarithm: a gamma
        # fitted to the log over the window stands in for it, so dense tissue keeps its contrast.
        offset = float(params.offset) if params is not None and not isinstance(params, list) else 0.0
        kwargs["gamma"] = log_gamma(data, kwargs["contrast_limits"], offset)
    if params is not None:
        kwargs["metadata"][PARAMS_KEY] = params
    return kwargs


def derived_kwargs(source, name: str, derivation: str, params=None, **overrides) -> dict:
    """Keyword arguments for a layer derived from ``source`` (same geometry and display)."""
    metadata = dict(source.metadata)
    previous = metadata.get(DERIVATION_KEY)
    metadata[DERIVATION_KEY] = f"{previous}; {derivation}" if previous else derivation
    metadata["source_layer"] = source.name
    if params is not None:
        metadata[PARAMS_KEY] = params
    kwargs = {
        "name": name,
        "scale": tuple(source.scale),
        "translate": tuple(source.translate),
        "contrast_limits": tuple(source.contrast_limits),
        "gamma": float(source.gamma),
        "colormap": source.colormap.name,
        "metadata": metadata,
    }
    units = getattr(source, "units", None)
    if units is not None:
        kwargs["units"] = tuple(str(u) for u in units)
    kwargs.update(overrides)
    return kwargs


def add_image(viewer, data, kwargs: dict):
    """``viewer.add_image`` tolerant of napari versions without ``units``."""
    try:
        return viewer.add_image(data, **kwargs)
    except TypeError:
        kwargs = {k: v for k, v in kwargs.items() if k != "units"}
        return viewer.add_image(data, **kwargs)
