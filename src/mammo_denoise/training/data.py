"""Training data: noisy/clean patch pairs drawn fresh at every iteration.

Every batch is a pure function of the generator it is given, and the loop seeds one generator
per batch from ``(seed, rank, epoch, iteration)``: results do not depend on ``num_workers``,
and a resumed run draws exactly the batches an uninterrupted one would have drawn.

Domains (docs/ARCHITECTURE.md):

- ``poisson-gaussian``: network input ``y = anscombe(z_d, params)`` with ``z_d`` a detector
  realisation at dose ``d``; target ``expected_anscombe(offset + d * (clean - offset), params)``.
  Phantoms have a noise-free ``clean`` (their truth), so ``z_d`` is drawn exactly:
  ``offset + gain * Poisson(d * counts) + Normal(0, sigma_e^2)``. For real images ``clean`` is
  the full-dose image itself (the first seed's protocol) and ``z_d = simulate_dose(z, d,
  "moments")``. With the "noisier2noise" objective (TrainConfig) the added noise has the
  detector's measured neighbour correlation (``Source.noise``) and the target is corrected,
  ``t' = (t - rho y) / (1 - rho)``, ``rho = d^2 v(z) / v_d(z)`` per pixel (the share of the
  input's noise variance the scaled full-dose target carries; ``v``, ``v_d`` the noise line at
  full dose and at dose ``d``); the batch's ``tvar`` is the mean of ``R0 rho / (1 - rho)``, the
  variance of ``t' - s``, independent of ``y``: the corrected MSE minus it is the true MSE.
- ``gaussian-saltpepper`` (the second seed, the Denoiser's ``"intensity"`` domain): ``clean``
  is the image scaled to [0, 1] by its global min/max, input ``clip(clean + sigma * n, 0, 1)``
  with salt-and-pepper pixels (0 or 1), target ``clean``; ``sigma`` and the density are drawn
  from the seed's levels, given on its 0-255 scale (sigma 40..70 -> 0.16..0.27); no dose.

``shift`` (the Denoiser's per-image level) in the Anscombe domain is the median of the *whole
source image's* GAT at the patch's dose, as inference computes it for a whole image; in the
intensity domain it is 0, as inference passes (models/denoiser.py). It is taken
from the noise-free image (the transform is monotone, so this is ``expected_anscombe`` of the
median): one scalar per patch instead of transforming a whole noisy image per iteration. The
noisy image's median, which inference sees, differs from it by a small fraction of the unit
noise standard deviation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.physics.params import NoiseParams

PG, GS = "poisson-gaussian", "gaussian-saltpepper"
NOISE_FREE = ("phantom", "anatomy")

#: What a film anatomy source's simulated detector varies, drawn once per film (physics.anatomy):
#: gain log-uniform (DN per quantum), offset and electronic sigma uniform (DN), the breast's
#: full-dose quanta range (the brightest log-uniform, the darkest that divided by a uniform
#: ratio), the resampling from the film's 200 um to a finer pitch, and the film-grain smoothing.
ANATOMY_DETECTOR = {
    "gain": (0.5, 5.0),
    "offset": (0.0, 200.0),
    "electronic_sigma": (0.0, 10.0),
    "quanta_max": (2000.0, 8000.0),
    "quanta_ratio": (4.0, 12.0),
    "zoom": (1.0, 1.5, 2.0),
    "grain_sigma_px": (0.0, 1.0),
}


@dataclass
class Source:
    """One training image, cached once: a float32 ``clean`` reference and what sampling needs."""

    clean: np.ndarray  # (H, W) float32: DN (poisson-gaussian) or 0..1 (gaussian-saltpepper)
    params: NoiseParams
    mask: np.ndarray  # (H, W) bool, breast
    kind: str  # "phantom"/"anatomy" (noise-free clean) or "real" (a full-dose acquisition)
    label: str
    calc_mask: np.ndarray | None = None  # (H, W) bool: known microcalcifications (phantoms)
    boundary: np.ndarray | None = None  # flat indices of exposed pixels next to unexposed ones
    median: float = 0.0  # of the whole image
    low: float = 0.0  # min and max inside the breast mask
    high: float = 0.0
    split: str | None = None  # "train"/"val" when fixed by the data (film anatomy: by woman)
    noise: object = None  # physics.correlation.NoiseCorrelation of a real image (noisier2noise)
    measured: object = None  # the measurement behind it (None: not measured)

    def __post_init__(self):
        self.clean = np.ascontiguousarray(self.clean, dtype=np.float32)
        self.mask = np.asarray(self.mask, dtype=bool)
        # The shift follows inference: median of the whole image. The data range (PSNR, SSIM)
        # is the breast's: an unattenuated (or, on a phantom, unclipped) background would
        # inflate PSNR without saying anything about the tissue.
        self.median = float(np.median(self.clean))
        region = self.clean[self.mask] if self.mask.any() else self.clean
        self.low = float(region.min())
        self.high = float(region.max())

    @property
    def weight(self) -> float:
        """Sampling weight: breast area, so every breast pixel is about equally likely."""
        return float(max(self.mask.sum(), 1))


def estimate_breast_mask(image: np.ndarray, params: NoiseParams) -> np.ndarray:
    """Breast pixels of a raw (linear) mammogram: below the Otsu threshold of log counts.

    In linear data the unattenuated background is the brightest region. When the histogram
    shows no clear background class (a crop inside the breast), every pixel counts as breast.
    """
    from skimage.filters import threshold_otsu

    counts = np.maximum((np.asarray(image, np.float64) - params.offset) / params.gain, 0.0)
    logc = np.log1p(counts)
    step = max(1, int(np.sqrt(logc.size / 250_000)))  # Otsu on a subsample: a histogram suffices
    sub = logc[::step, ::step]
    if float(sub.max() - sub.min()) < 1e-6:
        return np.ones(image.shape, bool)
    t = threshold_otsu(sub)
    bright = sub > t
    frac = bright.mean()
    separated = bright.any() and (~bright).any() and (
        sub[bright].mean() - sub[~bright].mean() > np.log(1.5)
    )
    if not (0.05 <= frac <= 0.8 and separated):
        return np.ones(image.shape, bool)
    # Collimated or dead pixels (near zero counts) are not breast either.
    return (logc <= t) & (counts > 0.02 * float(np.median(counts[logc <= t]) or 1.0))


def exposure_boundary(clean: np.ndarray, params: NoiseParams) -> np.ndarray:
    """Flat indices of the exposed pixels that touch unexposed ones (collimator shadow, dead
    rows): the field edge, where the signal drops ~100 noise sigma to the offset in one pixel.

    Unexposed: below 2 % of the median positive count, the breast mask's criterion; in a
    full-dose image that is many electronic-noise sigma above the shadow's zero counts.
    """
    from scipy import ndimage

    counts = (np.asarray(clean, np.float64) - params.offset) / params.gain
    positive = counts[counts > 0]
    if positive.size == 0:
        return np.empty(0, np.int64)
    unexposed = counts < 0.02 * float(np.median(positive))
    edge = ~unexposed & ndimage.binary_dilation(unexposed, np.ones((3, 3), bool))
    return np.flatnonzero(edge)


def calcification_mask(shape, calcifications, pixel_mm: float, margin_px: float = 1.0) -> np.ndarray:
    """Pixels within ``margin_px`` of a calcification's disk (``row``, ``col``,
    ``diameter_mm``): the disk itself plus the rim the detector blur spreads it into."""
    mask = np.zeros(shape, bool)
    for c in calcifications:
        r = 0.5 * float(c.diameter_mm) / float(pixel_mm) + margin_px
        r0, r1 = max(int(np.floor(c.row - r)), 0), min(int(np.ceil(c.row + r)) + 1, shape[0])
        c0, c1 = max(int(np.floor(c.col - r)), 0), min(int(np.ceil(c.col + r)) + 1, shape[1])
        if r0 >= r1 or c0 >= c1:
            continue
        rr, cc = np.ogrid[r0:r1, c0:c1]
        mask[r0:r1, c0:c1] |= (rr - c.row) ** 2 + (cc - c.col) ** 2 <= r * r
    return mask


def _orient(patch: np.ndarray, k_rot: int, flip: bool) -> np.ndarray:
    """The augmentation: ``k_rot`` quarter turns, then a left-right flip."""
    patch = np.rot90(patch, k_rot)
    return patch[:, ::-1] if flip else patch


def _to_intensity(clean: np.ndarray) -> np.ndarray:
    # The Denoiser's "intensity" domain: global min/max to [0, 1] (models/denoiser.py).
    lo, hi = float(clean.min()), float(clean.max())
    return ((clean - lo) * (1.0 / max(hi - lo, 1e-12))).astype(np.float32)


def _phantom_seed(seed: int, i: int) -> int:
    return int(np.random.SeedSequence([seed, 0x50484E, i]).generate_state(1)[0])


def _training_phantom(config, i: int):
    from mammo_denoise.physics.phantom import make_phantom

    ph = make_phantom(seed=_phantom_seed(config.seed, i), shape=tuple(config.phantom_shape),
                      view="CC" if i % 2 == 0 else "MLO", dose=1.0)
    calc_mask = None
    if config.calc_weight:
        calc_mask = calcification_mask(ph.truth.shape, ph.calcifications,
                                       float(ph.meta.pixel_spacing_mm[0]))
    return ph, calc_mask


def _training_phantoms(config):
    """Yield ``(phantom, calcification mask)`` in index order.

    Each phantom is seeded by its index alone, so with ``num_workers`` processes (~3 s per
    1024x1024 phantom: a minute for 20 on one core) the phantoms are the same as without.
    """
    if config.num_workers <= 0 or config.phantoms < 2:
        for i in range(config.phantoms):
            yield _training_phantom(config, i)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: forking a process that already runs torch's thread pools can deadlock.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(config.num_workers, config.phantoms), mp_context=ctx) as pool:
        futures = [pool.submit(_training_phantom, config, i) for i in range(config.phantoms)]
        try:
            for f in futures:
                yield f.result()
        finally:
            for f in futures:
                f.cancel()


def build_sources(config, cancel=None) -> list[Source]:
    """Generate/read every training image once (phantoms, DICOM paths, in-memory images).

    ``cancel()`` is polled between images: reading a curated set can take minutes.
    """
    sources: list[Source] = []
    gs = config.noise_model == GS

    def add(clean, params, mask, kind, label, calc_mask=None):
        if cancel is not None and cancel():
            from mammo_denoise.errors import Cancelled

            raise Cancelled("training cancelled while preparing the data")
        clean = np.asarray(clean, np.float32)
        if min(clean.shape) < config.patch:
            raise MammoDenoiseError(
                f"training image {label} ({clean.shape[0]}x{clean.shape[1]}) is smaller than "
                f"the patch size {config.patch}"
            )
        if mask is None:
            mask = estimate_breast_mask(clean, params)
        boundary = None
        if gs:
            clean = _to_intensity(clean)
        elif config.boundary_fraction:
            boundary = exposure_boundary(clean, params)
        sources.append(Source(clean, params, mask, kind, label, calc_mask, boundary))

    if config.phantoms:
        for i, (ph, calc_mask) in enumerate(_training_phantoms(config)):
            add(ph.truth, ph.params, ph.mask, "phantom", f"phantom {i}", calc_mask)
    for path in _expand_paths(config.paths):
        from mammo_denoise.io import read_mammogram

        from mammo_denoise.physics.noise import fit_noise_model

        array, meta = read_mammogram(path)
        if not getattr(meta, "is_linear", True) and not gs:
            raise MammoDenoiseError(
                "not a linear FOR PROCESSING image: the Poisson-Gaussian training model does "
                "not hold for processed (FOR PRESENTATION) data",
                path=path,
            )
        frames = array[None] if array.ndim == 2 else array
        for k, frame in enumerate(frames):
            frame = np.asarray(frame, np.float32)
            label = f"{Path(path).name}" + (f"[{k}]" if k else "")
            params = config.detector
            if params is None:
                fit = fit_noise_model(frame, warn=False)
                params = fit.params
                for note in fit.warnings:  # one per file, naming it
                    warnings.warn(f"{label}: {note}", UserWarning, stacklevel=2)
            add(frame, params, None, "real", label)
    for i, item in enumerate(config.images):
        mask = None if len(item) < 3 or item[2] is None else np.asarray(item[2], bool)
        add(np.asarray(item[0], np.float32), item[1], mask, "real", f"image {i}")
    if config.anatomy is not None:
        from mammo_denoise.physics.anatomy import read_film_folder

        for split in ("train", "val"):
            for film in read_film_folder(config.anatomy, split=split):
                clean, params, mask = anatomy_source(film, config.seed)
                add(clean, params, mask, "anatomy", film.ref)
                sources[-1].split = split
    if getattr(config, "objective", None) == "noisier2noise":
        assign_noise_correlation(sources, config.noise_correlation)
    return sources


#: Below this neighbour correlation the measurement cannot tell a detector's correlation from
#: anatomy's fine texture (0.00-0.08 measured on white noise over 512 px phantoms and
#: mini-MIAS films, 0.12 over two 256 px phantoms).
CORRELATION_MIN = 0.15
#: Fewer exposed pixels than this (a 512 x 512 image's, with a collimator border) over all the
#: images measure a phantom's texture as much as its noise (neighbour correlation 0.3-0.4 on
#: white noise over 128 px phantoms): the noise is then taken as white.
CORRELATION_MIN_PIXELS = 200_000


def assign_noise_correlation(sources, mode: str = "measured"):
    """Give each real source the noise the noisier2noise objective adds: white with the noise
    line's variance, or, when the images' pooled neighbour correlation exceeds
    ``CORRELATION_MIN`` (one detector), that correlation with each image's measured variance
    in GAT units. Returns ``(pooled, per-image)`` measurements (None with ``mode`` "white")."""
    from mammo_denoise.physics.correlation import NoiseCorrelation, measure_noise_correlation, pooled

    real = [s for s in sources if s.kind == "real"]
    if mode == "white" or not real:
        for s in real:
            s.noise = NoiseCorrelation()
        return None, []
    each = [measure_noise_correlation(s.clean, s.params) for s in real]
    both = pooled(each)
    correlated = (max(abs(both.rho_x), abs(both.rho_y)) >= CORRELATION_MIN
                  and both.pixels >= CORRELATION_MIN_PIXELS)
    for s, m in zip(real, each):
        s.measured = m
        s.noise = (NoiseCorrelation(_noise_variance(s, both), both.rho_x, both.rho_y, m.pixels)
                   if correlated else NoiseCorrelation())
    return both, each


def _noise_variance(src: Source, corr) -> float:
    """The pixel noise variance of a correlated detector's image over its noise line, in GAT
    units: the robust noise fit (``physics.noise``, flat blocks) reads the variance from a
    separable second difference, which correlated noise passes ``second_difference_factor``
    times; its line over the source's own line (1 when the parameters were fitted) at the breast
    median, divided by that factor. Less swayed by texture than a variance measured over blocks."""
    from mammo_denoise.physics.correlation import second_difference_factor
    from mammo_denoise.physics.noise import fit_noise_model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_noise_model(src.clean, warn=False).params
    except MammoDenoiseError:  # too few flat blocks: the variance measured over blocks
        return float(src.measured.variance) if src.measured is not None else 1.0
    m = float(np.median(src.clean[src.mask])) if src.mask.any() else src.median

    def line(p):
        return max(p.gain * max(m - p.offset, 0.0) + p.electronic_sigma ** 2, 1e-12)

    return line(fit) / line(src.params) / second_difference_factor(corr.rho_x, corr.rho_y)


def anatomy_source(film, seed: int):
    """A film's anatomy behind its own simulated detector (``ANATOMY_DETECTOR``), drawn from
    ``(seed, film)``: the full-dose expected signal in DN, its NoiseParams and breast mask.
    The film is cropped to the breast with a margin first (background beyond it adds nothing)."""
    from mammo_denoise.physics.anatomy import film_breast_mask, film_to_quanta

    rng = np.random.default_rng([seed, 0x46494C, int(film.ref[3:])])
    r = ANATOMY_DETECTOR
    gain = float(np.exp(rng.uniform(*np.log(r["gain"]))))
    params = NoiseParams(offset=float(rng.uniform(*r["offset"])), gain=gain,
                         electronic_sigma=float(rng.uniform(*r["electronic_sigma"])))
    q_max = float(np.exp(rng.uniform(*np.log(r["quanta_max"]))))
    q_range = (q_max / float(rng.uniform(*r["quanta_ratio"])), q_max)
    zoom = float(rng.choice(r["zoom"]))
    grain = float(rng.uniform(*r["grain_sigma_px"]))
    mask = film_breast_mask(film.film)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    m = 32
    box = (slice(max(rows[0] - m, 0), rows[-1] + m + 1), slice(max(cols[0] - m, 0), cols[-1] + m + 1))
    q, mask = film_to_quanta(film.film[box], mask[box], q_range, zoom=zoom, grain_sigma_px=grain)
    return params.offset + params.gain * q, params, mask


def _expand_paths(paths) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            # Hidden files and the DICOMDIR index are not images.
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                           and f.name.upper() != "DICOMDIR")
            if not files:
                raise MammoDenoiseError("folder holds no files", path=p)
            out.extend(files)
        elif p.is_file():
            out.append(p)
        else:
            raise MammoDenoiseError("no such file or folder", path=p)
    return out


def split_sources(sources: list[Source], val_fraction: float, seed: int):
    """Hold out whole images for validation. With a single image (or ``val_fraction`` 0) the
    validation patches come from the training images, still with their own fixed noise.
    Sources whose ``split`` the data fixed (film anatomy, by woman) keep it."""
    fixed_train = [s for s in sources if s.split == "train"]
    fixed_val = [s for s in sources if s.split == "val"]
    sources = [s for s in sources if s.split is None]
    if not sources:
        return fixed_train, (fixed_val or fixed_train), bool(fixed_val)
    train, val, held_out = _random_split(sources, val_fraction, seed)
    if not held_out:
        val = []
    return train + fixed_train, (val + fixed_val) or train + fixed_train, bool(val + fixed_val)


def _random_split(sources: list[Source], val_fraction: float, seed: int):
    n = len(sources)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    order = np.random.default_rng([seed, 0x53504C]).permutation(n)
    val = [sources[i] for i in sorted(order[:n_val])]
    train = [sources[i] for i in sorted(order[n_val:])]
    return train, (val if val else train), bool(val)


class PatchSampler:
    """Draws batches of (input, target) patches from cached sources."""

    def __init__(self, sources, config):
        if not sources:
            raise MammoDenoiseError("no training images")
        self.sources = sources
        self.patch = config.patch
        self.noise_model = config.noise_model
        self.doses = config.doses
        self.edge_fraction = config.edge_fraction
        self.boundary_fraction = config.boundary_fraction
        self.calc_weight = config.calc_weight
        self.gs_sigmas = np.asarray(config.gs_sigmas, np.float64) / 255.0
        self.gs_densities = np.asarray(config.gs_densities, np.float64)
        self.dose_distribution = config.dose_distribution
        self.objective = getattr(config, "objective", "supervised")
        w = np.array([s.weight for s in sources])
        is_anatomy = np.array([s.kind == "anatomy" for s in sources])
        if is_anatomy.any() and not is_anatomy.all():
            # Film anatomy would otherwise outweigh the phantoms by its number of images.
            share = config.anatomy_fraction
            w = np.where(is_anatomy, share * w / w[is_anatomy].sum(),
                         (1.0 - share) * w / w[~is_anatomy].sum())
        self.p = w / w.sum()

    # -- positions --------------------------------------------------------------------------
    def _position(self, src: Source, rng) -> tuple[int, int]:
        """Top-left corner of a patch: on the field edge, anywhere, or centred in the breast."""
        u = rng.random()
        if self.boundary_fraction and u < self.boundary_fraction:
            if src.boundary is not None and src.boundary.size:
                return self._on_boundary(src, rng)
            return self._corner(src, rng, anywhere=True)
        return self._corner(src, rng, anywhere=u < self.boundary_fraction + self.edge_fraction)

    def _on_boundary(self, src: Source, rng) -> tuple[int, int]:
        # The centre within a quarter patch of a field-edge pixel, clamped to the image: a
        # collimator shadow along the image border stays at the patch border, as in a tile.
        p = self.patch
        h, w = src.clean.shape
        r, c = np.unravel_index(int(src.boundary[rng.integers(src.boundary.size)]), (h, w))
        r += int(rng.integers(-(p // 4), p // 4 + 1)) - p // 2
        c += int(rng.integers(-(p // 4), p // 4 + 1)) - p // 2
        return min(max(r, 0), h - p), min(max(c, 0), w - p)

    def _corner(self, src: Source, rng, anywhere: bool) -> tuple[int, int]:
        p = self.patch
        h, w = src.clean.shape
        # Rejection sampling on the patch centre: cheap for any image size, no index tables.
        for _ in range(1 if anywhere else 32):
            i = int(rng.integers(0, h - p + 1))
            j = int(rng.integers(0, w - p + 1))
            if anywhere or src.mask[i + p // 2, j + p // 2]:
                break
        return i, j

    # -- noise ----------------------------------------------------------------------------------
    def _detector(self, clean, src: Source, d: float, rng, k_rot: int = 0) -> np.ndarray:
        prm = src.params
        if src.kind in NOISE_FREE:
            lam = np.maximum(clean.astype(np.float64) - prm.offset, 0.0) * (d / prm.gain)
            z = prm.offset + prm.gain * rng.poisson(lam)
            if prm.electronic_sigma > 0:
                z = z + prm.electronic_sigma * rng.standard_normal(clean.shape)
            return z
        from mammo_denoise.physics.dose import simulate_dose

        kernel = None
        noise = src.noise
        if self.objective == "noisier2noise" and noise is not None and not (
                noise.white and noise.variance == 1.0):
            kernel = noise.kernel()
            if k_rot % 2:  # the patch was turned a quarter: its rows were the image's columns
                kernel = kernel.T
        return np.asarray(simulate_dose(clean, d, prm, method="moments", rng=rng,
                                        noise_kernel=kernel), np.float64)

    @staticmethod
    def target_share(full, params: NoiseParams, d: float) -> np.ndarray:
        """``rho``: the share of a dose-``d`` input's noise variance that the full-dose image
        ``full`` scaled to dose ``d`` carries, per pixel (``d`` without electronic noise)."""
        q = params.gain * np.maximum(np.asarray(full, np.float64) - params.offset, 0.0)
        e2 = float(params.electronic_sigma) ** 2
        return d * d * (q + e2) / np.maximum(d * q + e2, 1e-12)

    def _saltpepper(self, clean, rng) -> np.ndarray:
        sigma = float(rng.choice(self.gs_sigmas))
        density = float(rng.choice(self.gs_densities))
        noisy = np.clip(clean + sigma * rng.standard_normal(clean.shape), 0.0, 1.0)
        hit = rng.random(clean.shape) < density
        salt = rng.random(clean.shape) < 0.5
        noisy[hit] = np.where(salt[hit], 1.0, 0.0)
        return noisy

    def _dose(self, rng, lo: float, hi: float) -> float:
        if not hi > lo:
            return lo
        if self.dose_distribution == "log-uniform":
            return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        return float(rng.uniform(lo, hi))

    # -- batches --------------------------------------------------------------------------
    def batch(self, rng: np.random.Generator, n: int, augment: bool = True, with_dn: bool = False):
        """``n`` patches as float32 arrays: ``y``/``t`` (n, 1, p, p) in the network's domain,
        ``shift``/``data_range`` (n,) in that domain; with a calcification weight also ``w``
        (n, 1, p, p), the loss weight per pixel; with ``with_dn`` also the noisy input and
        target in DN (poisson-gaussian) or 0..1 (gaussian-saltpepper), the DN data range, the
        dose and the source index, for PSNR."""
        from mammo_denoise.physics.anscombe import anscombe, expected_anscombe

        p = self.patch
        ys = np.empty((n, 1, p, p), np.float32)
        ts = np.empty((n, 1, p, p), np.float32)
        shift = np.empty(n, np.float32)
        rng_ = np.empty(n, np.float32)
        ws = np.ones((n, 1, p, p), np.float32) if self.calc_weight else None
        n2n = self.objective == "noisier2noise"
        tvar = np.zeros(n, np.float32) if n2n else None
        extra = {"noisy_dn": np.empty((n, p, p), np.float32), "target_dn": np.empty((n, p, p), np.float32),
                 "range_dn": np.empty(n, np.float32), "dose": np.empty(n, np.float32),
                 "source": np.empty(n, np.int64)} if with_dn else None
        lo_d, hi_d = self.doses
        for k in range(n):
            si = int(rng.choice(len(self.sources), p=self.p))
            src = self.sources[si]
            i, j = self._position(src, rng)
            k_rot, flip = (int(rng.integers(4)), rng.random() < 0.5) if augment else (0, False)
            clean = _orient(src.clean[i:i + p, j:j + p], k_rot, flip)
            if ws is not None and src.calc_mask is not None:
                ws[k, 0][_orient(src.calc_mask[i:i + p, j:j + p], k_rot, flip)] += self.calc_weight
            d = self._dose(rng, lo_d, hi_d)
            if self.noise_model == GS:
                noisy = self._saltpepper(clean.astype(np.float64), rng)
                ys[k, 0] = noisy
                ts[k, 0] = clean
                shift[k] = 0.0
                rng_[k] = 1.0
                target_dn, range_dn = clean, 1.0
            else:
                prm = src.params
                z = self._detector(clean, src, d, rng, k_rot)
                mean = prm.offset + d * (clean.astype(np.float64) - prm.offset)
                ys[k, 0] = anscombe(z, prm)
                # 4 Newton steps already reach machine precision from the asymptotic start
                # (checked against 30 over 0..1e6 counts); the default 8 doubles batch time.
                ts[k, 0] = expected_anscombe(mean, prm, iterations=4)
                if n2n and src.kind == "real":
                    rho = self.target_share(clean, prm, d)
                    ts[k, 0] = (ts[k, 0] - rho * ys[k, 0]) / (1.0 - rho)
                    r0 = 1.0 if src.noise is None else float(src.noise.variance)
                    tvar[k] = r0 * float(np.mean(rho / (1.0 - rho)))
                level = np.array([src.median, src.low, src.high], np.float64)
                e = expected_anscombe(prm.offset + d * (level - prm.offset), prm)
                shift[k] = e[0]
                rng_[k] = max(float(e[2] - e[1]), 1.0)
                noisy, target_dn, range_dn = z, mean, d * (src.high - src.low)
            if with_dn:
                extra["noisy_dn"][k] = noisy
                extra["target_dn"][k] = target_dn
                extra["range_dn"][k] = max(range_dn, 1e-6)
                extra["dose"][k] = d
                extra["source"][k] = si
        out = {"y": ys, "t": ts, "shift": shift, "data_range": rng_}
        if ws is not None:
            out["w"] = ws
        if tvar is not None:
            out["tvar"] = tvar
        if with_dn:
            out.update(extra)
        return out


def batch_rng(seed: int, rank: int, epoch: int, iteration: int) -> np.random.Generator:
    """The generator of one training batch; see the module docstring."""
    return np.random.default_rng([seed, 0x545241, rank, epoch, iteration])


def validation_set(sources, config) -> dict:
    """Fixed validation patches: noise drawn once from a fixed seed, so epochs are comparable.

    With a dose range the doses are spread evenly over it rather than drawn, so that every
    epoch is scored on the same mix of easy and hard doses.
    """
    sampler = PatchSampler(sources, config)
    rng = np.random.default_rng([config.seed, 0x56414C])
    n = config.val_patches
    lo, hi = config.doses
    if hi > lo:
        spread = np.geomspace if config.dose_distribution == "log-uniform" else np.linspace
        doses = spread(lo, hi, n)
        parts = []
        for d in doses:  # one dose at a time: the sampler draws doses from its own range
            sampler.doses = (float(d), float(d))
            parts.append(sampler.batch(rng, 1, augment=False, with_dn=True))
        sampler.doses = (lo, hi)
        return {k: np.concatenate([b[k] for b in parts]) for k in parts[0]}
    return sampler.batch(rng, n, augment=False, with_dn=True)
