"""Real breast anatomy behind a simulated detector.

Digitised screen-film mammograms (mini-MIAS: 200 um pixels, 8 bits) carry real anatomy but no
detector noise of their own. The film value is roughly linear in the logarithm of exposure, with
bright film = dense tissue = few x-ray quanta. :func:`film_to_quanta` inverts that: with ``v``
the film value normalised to [0, 1] between the breast's 1st and 99th percentiles,

    q = q_max * (q_min / q_max) ** v = q_max * exp(-ln(q_max / q_min) * v)

expected quanta per pixel at full dose, so the breast spans ``q_min..q_max`` (500-4000 by
default, a digital mammogram's range for 70-100 um pixels). Outside the breast ``v`` is
clipped at ``-1``: the directly exposed background gets up to ``q_max**2 / q_min`` quanta, 8x the
breast's brightest at the default, as in a raw image (the phantom's background is ~17x).

The result is the noise-free expected signal of a Poisson-Gaussian detector
(``offset + gain * dose * q``), recorded with :func:`mammo_denoise.physics.phantom.detector_image`
or drawn patch by patch in training. Film grain and scanner noise stay part of this "truth": at
200 um they are small against 20 %-dose quantum noise, and ``grain_sigma_px`` smooths them away
where a grain-free truth is wanted (the benchmark reports both).

Women, not images, are the unit of a split: mini-MIAS numbers a woman's left and right views
consecutively (mdb001/mdb002 = woman 1). :func:`woman_split` assigns each woman to "train",
"val" or "test" by her number, the same on every machine.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MammoDenoiseError

__all__ = ["FilmImage", "film_paths", "read_film_folder", "film_breast_mask", "film_to_quanta", "woman_split",
           "QUANTA_RANGE", "SPLITS"]

QUANTA_RANGE = (500.0, 4000.0)  #: default full-dose quanta per pixel across the breast
SPLITS = ("train", "val", "test")
_REF = re.compile(r"mdb(\d{3})", re.IGNORECASE)


@dataclass
class FilmImage:
    """One digitised film: ``film`` (H, W) float32 in 0..255, bright = dense."""

    ref: str  #: e.g. "mdb011"
    woman: int  #: 1-based woman number (two views each)
    film: np.ndarray
    pixel_mm: float = 0.2
    #: annotated abnormalities: (class, x, y, radius) in the database's pixel coordinates,
    #: origin at the bottom-left corner
    findings: list = field(default_factory=list)

    def calc_clusters(self) -> list[tuple[int, int, float]]:
        """Microcalcification clusters as ``(row, col, radius_px)`` in array coordinates."""
        h = self.film.shape[0]
        return [(h - 1 - int(y), int(x), float(r)) for cls, x, y, r in self.findings
                if cls == "CALC" and x is not None]


def woman_split(woman: int) -> str:
    """"test" for every fifth woman (never trained on), "val" for the next, "train" otherwise."""
    return {0: "test", 1: "val"}.get(int(woman) % 5, "train")


def _annotations(folder: Path) -> dict[str, list]:
    found: dict[str, list] = {}
    path = folder / "annotations.txt"
    if not path.is_file():
        return found
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts or line.startswith("#"):
            continue
        ref, rest = parts[0].lower(), parts[2:]
        entries = found.setdefault(ref, [])
        if rest and rest[0] != "NORM":
            try:
                x, y, r = (float(v) for v in rest[2:5])
            except (ValueError, IndexError):
                x = y = r = None  # the database gives some clusters no position
            entries.append((rest[0], x, y, r))
    return found


def film_paths(folder, split: str | None = None) -> list[tuple[Path, int]]:
    """``(path, woman)`` of the ``mdbNNN.png`` films of a folder, sorted, optionally only those
    of one :func:`woman_split` ("train", "val" or "test"); no pixels are read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MammoDenoiseError("no such folder of film mammograms", path=folder)
    if split is not None and split not in SPLITS:
        raise MammoDenoiseError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    found = []
    for path in sorted(folder.glob("*.png")):
        m = _REF.fullmatch(path.stem)
        if m is None:
            continue
        woman = (int(m.group(1)) + 1) // 2
        if split is None or woman_split(woman) == split:
            found.append((path, woman))
    if not found:
        raise MammoDenoiseError("no mdbNNN.png film scans" + (f" of the {split} women" if split
                                                               else ""), path=folder)
    return found


def read_film_folder(folder, split: str | None = None, pixel_mm: float = 0.2) -> list[FilmImage]:
    """The films of :func:`film_paths` with their ``annotations.txt`` findings."""
    from skimage.io import imread

    notes = _annotations(Path(folder))
    films = []
    for path, woman in film_paths(folder, split):
        film = imread(path)
        if film.ndim != 2:
            raise MammoDenoiseError(f"expected a grey-level film scan, got shape {film.shape}",
                                    path=path)
        ref = path.stem.lower()
        films.append(FilmImage(ref, woman, film.astype(np.float32), pixel_mm, notes.get(ref, [])))
    return films


def film_breast_mask(film: np.ndarray) -> np.ndarray:
    """The breast of a film scan: the largest bright connected region above Otsu's threshold
    (the background is the clear, dark film; labels are small and separate), holes filled."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    smooth = ndimage.uniform_filter(np.asarray(film, np.float32), 5)
    bright = smooth > threshold_otsu(smooth)
    labels, n = ndimage.label(bright)
    if n == 0:
        return np.ones(film.shape, bool)
    sizes = ndimage.sum_labels(bright, labels, np.arange(1, n + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def film_to_quanta(film, mask=None, quanta_range=QUANTA_RANGE, *, zoom: float = 1.0,
                   grain_sigma_px: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Expected full-dose quanta per pixel, and the breast mask, from a film scan.

    ``zoom`` > 1 resamples to a finer pitch (cubic spline; 2 turns 200 um into 100 um) before
    the mapping; ``grain_sigma_px`` (film pixels) smooths the film first. See the module
    docstring for the mapping and why.
    """
    from scipy import ndimage

    q_min, q_max = (float(v) for v in quanta_range)
    if not 0 < q_min < q_max:
        raise MammoDenoiseError(f"quanta_range must satisfy 0 < min < max, got {quanta_range!r}")
    film = np.asarray(film, np.float32)
    if grain_sigma_px > 0:
        film = ndimage.gaussian_filter(film, grain_sigma_px)
    mask = film_breast_mask(film) if mask is None else np.asarray(mask, bool)
    lo, hi = np.percentile(film[mask], [1.0, 99.0]) if mask.any() else (0.0, 255.0)
    v = np.clip((film - lo) / max(float(hi - lo), 1.0), -1.0, None)
    if zoom != 1.0:
        v = ndimage.zoom(v, zoom, order=3, mode="reflect", grid_mode=True)
        mask = ndimage.zoom(mask.astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True) > 0.5
    q = q_max * np.exp(-math.log(q_max / q_min) * v)
    return q.astype(np.float32), mask
