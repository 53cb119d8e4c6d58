"""Physics-based digital mammography phantom (PHYSICS.md sections 1 and 4).

A compressed breast is built as a map of X-ray path lengths through skin, adipose and
fibroglandular tissue (plus pectoral muscle, masses and hydroxyapatite microcalcifications),
turned into expected primary photon counts by Beer-Lambert attenuation, optionally blurred
by the detector, and read out as ``z = offset + gain * N + e`` with ``N ~ Poisson``.

Geometry is built with the chest wall at column 0 (a left breast as displayed: LCC/LMLO) and
mirrored for ``laterality="R"``. Shapes scale with the image so that a 64 x 64 test image is
still a whole breast; tissue-scale lengths (skin 1.5 mm, edge fall-off 10 mm, texture, lesion
sizes) are physical and are only shrunk when the image is too small to hold them.

What is and is not modelled (primary-only, monoenergetic):
- no scatter, no heel effect, no detector noise correlation (white noise, PHYSICS.md s.1);
- the direct-exposure region is about ``exp(mu*T)`` (~17x at 5 cm) brighter than the breast.
  The default gain (0.25 DN/quantum) keeps it inside 14 bits; with a larger gain or more
  photons it saturates at 16383 DN, as on a real detector driven this hard: ``noisy`` is
  clipped there, while ``truth`` keeps the unclipped expected signal so that
  ``truth_at(dose)`` stays exact. ``Phantom.saturated`` marks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import MammoDenoiseError
from ..io.meta import FOR_PROCESSING, MG_FOR_PROCESSING_SOP, MammogramMeta
from ._attenuation import attenuation_coefficients
from ._texture import (
    lobule_septa,
    oriented_power_law_noise,
    power_law_noise,
    smoothstep,
    strand_ridges,
)
from .params import NoiseParams

__all__ = [
    "Calcification",
    "Mass",
    "Phantom",
    "make_phantom",
    "detector_image",
    "calcification_primary_contrast",
    "attenuation_coefficients",
]

MANUFACTURER = "mammo-denoise phantom"


@dataclass(frozen=True)
class Calcification:
    """One inserted microcalcification (a hydroxyapatite sphere).

    ``row``/``col`` are pixel-index coordinates of its centre in the phantom image.
    ``contrast`` is the primary contrast 1 - I/I_background of the pixel containing the centre
    in the pixel-integrated expected signal *before* detector blur (full dose, no scatter).
    ``contrast_truth`` is the same dip as it appears in ``Phantom.truth`` (after blur).
    """

    row: float
    col: float
    diameter_mm: float
    contrast: float
    cluster: int
    contrast_truth: float


@dataclass(frozen=True)
class Mass:
    """One inserted mass: centre (pixels), radius (mm) and ``kind`` ("round"/"spiculated")."""

    row: float
    col: float
    radius_mm: float
    kind: str


@dataclass
class Phantom:
    """A phantom mammogram and its ground truth (arrays are ``(H, W)``, modality units, DN).

    ``truth`` is the noise-free expected detector signal at full dose (offset included, after
    blur, not clipped); ``noisy`` one realisation at ``dose``, rounded and clipped to 14 bits;
    ``counts`` the photon counts behind ``noisy``. ``glandular`` is the fibroglandular
    fraction of the path through breast tissue (0..1), ``pectoral`` the pectoral-muscle region
    (all False for CC), ``mask`` the tissue in the exposed field (breast incl. muscle).
    """

    truth: np.ndarray
    noisy: np.ndarray
    counts: np.ndarray
    dose: float
    params: NoiseParams
    meta: MammogramMeta
    mask: np.ndarray
    calcifications: list[Calcification]
    masses: list[Mass]
    glandular: np.ndarray
    pectoral: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def max_value(self) -> int:
        return int(self.info.get("max_value", 2**14 - 1))

    @property
    def expected_counts(self) -> np.ndarray:
        """Expected photon counts per pixel at full dose, ``(truth - offset) / gain``."""
        return ((self.truth - np.float32(self.params.offset)) / np.float32(self.params.gain)).astype(
            np.float32
        )

    @property
    def saturated(self) -> np.ndarray:
        """Pixels whose expected signal at the phantom's dose exceeds the detector range."""
        return self.truth_at() >= self.max_value

    def truth_at(self, dose: float | None = None) -> np.ndarray:
        """Noise-free image at ``dose``: ``offset + dose * (truth - offset)`` (float32)."""
        dose = self.dose if dose is None else float(dose)
        off = np.float32(self.params.offset)
        return (off + np.float32(dose) * (self.truth - off)).astype(np.float32)

    def generate_noisy(self, dose: float | None = None, rng=None) -> np.ndarray:
        """A fresh noisy realisation of the same breast at ``dose`` (default: ``self.dose``)."""
        dose = self.dose if dose is None else float(dose)
        noisy, _ = detector_image(
            self.expected_counts, self.params, dose, rng, bits=int(self.meta.bits_stored)
        )
        return noisy


def detector_image(expected_counts, params: NoiseParams, dose: float = 1.0, rng=None, bits: int = 14):
    """Read out ``z = offset + gain * N + e`` (PHYSICS.md s.1) and return ``(noisy, counts)``.

    ``N ~ Poisson(dose * expected_counts)``, ``e ~ Normal(0, electronic_sigma^2)``; ``z`` is
    rounded to integer DN and clipped to ``[0, 2**bits - 1]``. ``noisy`` is float32, ``counts``
    int32. Rounding adds 1/12 DN^2 of variance, negligible next to sigma_e^2 = 9.
    """
    if dose < 0:
        raise MammoDenoiseError(f"dose must be >= 0, got {dose}")
    rng = np.random.default_rng(rng)
    lam = np.asarray(expected_counts, dtype=np.float64) * float(dose)
    counts = rng.poisson(np.maximum(lam, 0.0)).astype(np.int32)
    z = rng.standard_normal(lam.shape, dtype=np.float32)
    z *= np.float32(params.electronic_sigma)
    z += np.float32(params.offset)
    z += np.float32(params.gain) * counts.astype(np.float32)
    np.rint(z, out=z)
    np.clip(z, 0, 2**bits - 1, out=z)
    return z, counts


def calcification_primary_contrast(
    diameter_mm: float,
    energy_kev: float = 20.0,
    pixel_mm: float = 0.07,
    offset_px: tuple[float, float] = (0.0, 0.0),
    supersample: int = 9,
) -> float:
    """Primary contrast of a hydroxyapatite sphere in glandular tissue, integrated over a pixel.

    Beer-Lambert along each ray: the sphere replaces glandular tissue over a chord
    ``2 sqrt(R^2 - r^2)``, so ``I/I0 = exp(-(mu_HA - mu_gland) * chord)``. The detector
    integrates photons over the pixel area, so the pixel's contrast is ``1 - mean(I/I0)`` over
    the pixel. For 200 um at 20 keV the central ray gives 33 % (PHYSICS.md s.4); a 70 um pixel
    centred on it about 31 %. ``offset_px`` moves the centre within the pixel.
    """
    mu = attenuation_coefficients(energy_kev)
    factor = _sphere_factor(
        diameter_mm / 2.0 / pixel_mm, offset_px[0], offset_px[1], pixel_mm,
        mu["hydroxyapatite"] - mu["glandular"], supersample,
    )
    half = factor.shape[0] // 2
    return float(1.0 - factor[half, half])


def _sphere_factor(radius_px, frac_r, frac_c, pixel_mm, dmu_cm, ss):
    """Pixel-averaged transmission factor of a sphere centred at (half+frac_r, half+frac_c)."""
    half = int(np.ceil(radius_px + abs(frac_r) + abs(frac_c))) + 1
    n = 2 * half + 1
    sub = (np.arange(n * ss, dtype=np.float64) + 0.5) / ss - 0.5  # subpixel centres in px
    yr = sub[:, None] - (half + frac_r)
    xc = sub[None, :] - (half + frac_c)
    chord_px = 2.0 * np.sqrt(np.maximum(radius_px**2 - yr * yr - xc * xc, 0.0))
    trans = np.exp(-dmu_cm * chord_px * pixel_mm / 10.0)
    return trans.reshape(n, ss, n, ss).mean(axis=(1, 3))


def _thickness_profile(t):
    """Fraction of full thickness at normalised distance ``t = d/L`` inside the skin line.

    The uncompressed rim of a compressed breast is roughly a half-ellipse in cross-section,
    so the path length falls as sqrt(1 - (1 - d/L)^2) over the last L mm (PHYSICS.md s.4).
    """
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt(np.maximum(1.0 - (1.0 - t) ** 2, 0.0))


def _upsample(coarse: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling by an integer factor, coarse pixels covering factor x factor blocks."""
    if factor == 1:
        return coarse[: shape[0], : shape[1]].astype(np.float32, copy=False)
    out = ndimage.zoom(coarse, factor, order=1, mode="nearest", grid_mode=True, prefilter=False)
    return out[: shape[0], : shape[1]].astype(np.float32, copy=False)


def _outline(rng, view, H, W):
    """Draw the breast outline: a superellipse from the chest wall with a wavy perimeter.

    Returns a dict with the centre row on the chest wall ``cy``, depth to the nipple, upper and
    lower semi-axes, exponent and perimeter harmonics (all in pixels), plus pectoral-muscle
    corner lengths for MLO.
    """
    g = {"view": view}
    g["p"] = rng.uniform(2.0, 2.6)
    if view == "CC":
        g["cy"] = H * (0.5 + rng.uniform(-0.04, 0.04))
        g["depth"] = W * rng.uniform(0.62, 0.80)
        g["ry_up"] = g["cy"] * rng.uniform(0.80, 0.92)
        g["ry_dn"] = (H - g["cy"]) * rng.uniform(0.80, 0.92)
    else:
        # MLO: the axillary tail runs off the top edge behind a triangular pectoral muscle.
        g["cy"] = H * rng.uniform(0.50, 0.58)
        g["depth"] = W * rng.uniform(0.62, 0.78)
        g["pec_top"] = W * rng.uniform(0.22, 0.36)
        g["pec_side"] = H * rng.uniform(0.42, 0.62)
        g["pec_q"] = rng.uniform(1.05, 1.3)
        x_top = min(g["pec_top"] + W * rng.uniform(0.05, 0.12), 0.8 * g["depth"])
        g["ry_up"] = g["cy"] / (1.0 - (x_top / g["depth"]) ** g["p"]) ** (1.0 / g["p"])
        g["ry_dn"] = (H - g["cy"]) * rng.uniform(0.78, 0.9)
    k = np.arange(2, 6)
    g["harm_amp"] = rng.normal(0.0, 0.012, size=k.size) / np.sqrt(k - 1)
    g["harm_phase"] = rng.uniform(0, 2 * np.pi, size=k.size)
    return g


def _radius_table(g, n=2049):
    """r(theta) of the outline on theta in [-pi/2, pi/2] (0 points at the nipple)."""
    theta = np.linspace(-np.pi / 2, np.pi / 2, n)
    ry = np.where(theta < 0, g["ry_up"], g["ry_dn"])
    p = g["p"]
    r = 1.0 / ((np.abs(np.cos(theta)) / g["depth"]) ** p + (np.abs(np.sin(theta)) / ry) ** p) ** (
        1.0 / p
    )
    k = np.arange(2, 6)[:, None]
    wave = (g["harm_amp"][:, None] * np.sin(k * theta[None, :] + g["harm_phase"][:, None])).sum(0)
    r = r * (1.0 + wave)
    return theta, r, np.gradient(r, theta)


def _skin_distance(rows, cols, g):
    """Approximate signed distance (px) to the skin line, positive inside.

    With F = r(theta) - rho in polar coordinates about the chest-wall centre, F / |grad F| is
    the first-order distance to the zero set, |grad F| = sqrt(1 + (r'(theta)/rho)^2).
    """
    theta_t, r_t, dr_t = _radius_table(g)
    dy = rows - g["cy"]
    rho = np.hypot(dy, cols)
    theta = np.arctan2(dy, np.maximum(cols, 0.0))
    r = np.interp(theta, theta_t, r_t)
    dr = np.interp(theta, theta_t, dr_t)
    return (r - rho) / np.sqrt(1.0 + (dr / np.maximum(rho, 1.0)) ** 2)


def _pectoral_distance(rows, cols, g):
    """Signed distance (px, positive inside) to the pectoral edge (x/a)^q + (y/b)^q = 1."""
    a, b, q = g["pec_top"], g["pec_side"], g["pec_q"]
    x = np.maximum(cols, 0.0) / a
    y = np.maximum(rows, 0.0) / b
    P = x**q + y**q
    gx = q * x ** (q - 1) / a
    gy = q * y ** (q - 1) / b
    return (1.0 - P) / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-6)


def _mass_path(shape, center, radius_px, kind, rng, pixel_mm):
    """Path length (mm) through a mass on a local grid: lobulated ellipsoid +- spicules."""
    rows, cols = np.indices(shape, dtype=np.float32)
    dy = rows - center[0]
    dx = cols - center[1]
    r = np.hypot(dy, dx)
    phi = np.arctan2(dy, dx)
    k = np.arange(2, 7)[:, None, None]
    amp = rng.normal(0, 0.06, size=(5, 1, 1)) / np.sqrt(k - 1)
    ph = rng.uniform(0, 2 * np.pi, size=(5, 1, 1))
    core = radius_px * (0.6 if kind == "spiculated" else 1.0)
    rad = core * (1.0 + (amp * np.sin(k * phi[None] + ph)).sum(0))
    # Compressed: the mass is flattened to ~80 % of its in-plane size along the beam.
    path = 2.0 * 0.8 * rad * pixel_mm * np.sqrt(np.clip(1.0 - (r / rad) ** 2, 0.0, 1.0))
    if kind == "spiculated":
        for _ in range(int(rng.integers(10, 22))):
            ang = rng.uniform(0, 2 * np.pi)
            length = core * rng.uniform(1.2, 3.0)
            along = dx * np.cos(ang) + dy * np.sin(ang) - 0.8 * core
            perp = -dx * np.sin(ang) + dy * np.cos(ang)
            t = np.clip(along / length, 0.0, 1.0)
            width = (0.35 * (1.0 - t) + 0.08) / pixel_mm  # mm -> px, tapering
            inside = (along > 0) & (along < length)
            spic = (1.5 * (1.0 - t)) * np.exp(-0.5 * (perp / width) ** 2) * inside
            path = np.maximum(path, spic.astype(np.float32))
    return path.astype(np.float32)


def _skip_former_streak_draw(rng, shape, pixel_mm, center_rc) -> None:
    """Take from ``rng`` what the removed nipple streaks drew: a (0.4 degree x 5 mm) polar grid
    of normals reaching the grid corner farthest from ``center_rc``."""
    corners = np.array([0, shape[0] - 1], np.float32)[:, None], np.array([0, shape[1] - 1], np.float32)[None, :]
    reach = float((np.hypot(corners[0] - center_rc[0], corners[1] - center_rc[1]) * pixel_mm).max())
    rng.standard_normal((int(np.ceil(360.0 / 0.4)) + 1, int(np.ceil(reach / 5.0)) + 3), dtype=np.float32)


def _pick(rng, candidates_rc, taken, min_dist):
    """Random candidate (row, col) at least ``min_dist`` (px) from every point in ``taken``."""
    if len(candidates_rc) == 0:
        return None
    for _ in range(60):
        rc = candidates_rc[rng.integers(len(candidates_rc))]
        if all(np.hypot(rc[0] - t[0], rc[1] - t[1]) >= md for t, md in zip(taken, min_dist)):
            return rc
    return None


def make_phantom(
    seed: int | None = 0,
    shape: tuple[int, int] = (512, 512),
    view: str = "CC",
    laterality: str = "L",
    dose: float = 1.0,
    pixel_mm: float = 0.07,
    photons: float = 3000.0,
    gain: float = 0.25,
    offset: float = 50.0,
    electronic_sigma: float = 3.0,
    energy_kev: float = 20.0,
    thickness_mm: float = 50.0,
    blur_sigma_px: float = 0.6,
    n_clusters: int = 2,
    n_masses: int = 1,
    collimator_border: bool = True,
    density: float | None = None,
    beta: float = 3.0,
    calc_diameter_mm: tuple[float, float] = (0.1, 0.5),
    bits: int = 14,
) -> Phantom:
    """Build a seeded phantom mammogram; see the module docstring for the physics.

    ``gain`` defaults to 0.25 DN per quantum so that the open field (about 50 000 quanta per
    pixel at 3000 behind the breast) stays inside 14 bits instead of clipping near the skin line.
    ``photons`` is the mean expected photon count per pixel at full dose behind the compressed
    breast (where it is ``thickness_mm`` thick); the open field gets ``photons / mean
    transmission`` there. ``density`` (0..1, default drawn from the seed in 0.2..0.6) is the
    approximate fraction of the breast covered by fibroglandular tissue; ``beta`` the exponent
    of its 1/f^beta power spectrum. Lesions that do not fit (small images) are left out:
    ``len(phantom.calcifications)`` may be smaller than asked. Same seed and arguments give
    identical arrays; the noise comes from its own seed stream, so changing ``dose`` leaves
    ``truth`` unchanged.
    """
    view = str(view).upper()
    laterality = str(laterality).upper()
    if view not in ("CC", "MLO"):
        raise MammoDenoiseError(f"view must be 'CC' or 'MLO', got {view!r}")
    if laterality not in ("L", "R"):
        raise MammoDenoiseError(f"laterality must be 'L' or 'R', got {laterality!r}")
    H, W = (int(s) for s in shape)
    if H < 32 or W < 32:
        raise MammoDenoiseError(f"phantom shape must be at least 32 x 32, got {shape}")
    if not (pixel_mm > 0 and photons > 0 and thickness_mm > 0 and dose >= 0):
        raise MammoDenoiseError("pixel_mm, photons and thickness_mm must be > 0 and dose >= 0")
    lo_d, hi_d = calc_diameter_mm
    if not 0 < lo_d <= hi_d:
        raise MammoDenoiseError(f"calc_diameter_mm must be (min, max) > 0, got {calc_diameter_mm}")
    params = NoiseParams(float(offset), float(gain), float(electronic_sigma))
    mu = attenuation_coefficients(energy_kev)
    px = float(pixel_mm)

    ss_anatomy, ss_noise = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(ss_anatomy)
    geo = _outline(rng, view, H, W)
    if density is None:
        density = float(rng.uniform(0.2, 0.6))
    density = float(np.clip(density, 0.02, 0.98))

    # ---- smooth fields on a coarse grid (texture at <= ~0.3 mm is all beta=3 noise needs) ----
    f = max(1, int(max(H, W) // 800))
    hc, wc = -(-H // f), -(-W // f)
    pxc = px * f
    rc = ((np.arange(hc, dtype=np.float32) + 0.5) * f - 0.5)[:, None]
    cc = ((np.arange(wc, dtype=np.float32) + 0.5) * f - 0.5)[None, :]
    rows_c = np.broadcast_to(rc, (hc, wc))
    cols_c = np.broadcast_to(cc, (hc, wc))
    d_c = (_skin_distance(rows_c, cols_c, geo) * px).astype(np.float32)  # mm
    inside_c = d_c > 0
    if inside_c.any():
        # The first-order distance is accurate near the skin line but not deep inside (it is
        # singular at the chest-wall centre); the exact Euclidean distance takes over there.
        edt = ndimage.distance_transform_edt(inside_c).astype(np.float32) * pxc
        w = smoothstep(edt, 3.0, 6.0)
        d_c = np.where(inside_c, (1.0 - w) * d_c + w * edt, d_c)
    dmax = float(d_c.max()) if inside_c.any() else 1.0
    if view == "MLO":
        pec_c = (_pectoral_distance(rows_c, cols_c, geo) * px).astype(np.float32)
    else:
        pec_c = np.full((hc, wc), -1e3, np.float32)

    # Polar coordinates about the nipple: ducts, trabeculae and Cooper's ligaments run along
    # the lines from the nipple back to the chest wall; the fibroglandular cone opens along them.
    nipple_col = geo["depth"] * (1.0 + float(geo["harm_amp"] @ np.sin(geo["harm_phase"])))
    nipple = ((geo["cy"] + 0.5) / f - 0.5, (nipple_col + 0.5) / f - 0.5)  # coarse indices
    ndr = rows_c - np.float32(geo["cy"])  # rows_c/cols_c are full-resolution pixel coordinates
    ndc = cols_c - np.float32(nipple_col)
    n_dist = np.hypot(ndr, ndc) * px  # mm from the nipple
    n_ang = np.arctan2(ndr, -ndc)  # 0 points from the nipple straight to the chest wall
    # Orientation of the trabecular flow lines (mod pi): radial near the nipple, bending toward
    # the nipple-chest wall axis in the upper and lower breast as they reach the chest wall.
    ray_dir = np.arctan2(0.55 * ndr, ndc)

    # Where fibroglandular tissue may be: not in the subcutaneous fat under the skin, in a
    # cone/fan whose apex is behind the nipple (retroareolar ducts) and which opens toward the
    # chest wall, densest in the central third of the nipple-chest wall axis, and (MLO) with
    # retromammary fat in front of the pectoral muscle.
    sub_fat = min(5.0, 0.08 * dmax)
    u = cols_c / geo["depth"]
    half_open = np.float32(0.55 + 0.25 * rng.random())  # cone half-angle, rad (~32-46 deg)
    cone = np.exp(-((n_ang / half_open) ** 2))
    env = smoothstep(d_c, sub_fat, sub_fat + 0.45 * dmax) * (
        0.45 + 0.55 * np.exp(-(((u - 0.35) / 0.38) ** 2))
    )
    env *= 1.0 - 0.6 * smoothstep(u, 0.75, 1.05)
    env = env * (0.35 + 0.65 * cone) + 0.35 * cone * (1.0 - smoothstep(n_dist, 0.15 * dmax, 0.6 * dmax)) * smoothstep(
        d_c, 0.5 * sub_fat, 2.0 * sub_fat
    )
    if view == "MLO":
        env *= smoothstep(-pec_c, 0.0, min(12.0, 0.2 * dmax))

    # 1/f^beta texture elongated along the nipple lines (trabecular/ductal anisotropy).
    texture = oriented_power_law_noise(
        (hc, wc), rng, ray_dir, beta=beta, pixel_mm=pxc, f_min=1.0 / 60.0, stretch=2.2
    )
    drive = texture + 2.2 * env
    interior = inside_c & (d_c > sub_fat)
    if interior.sum() < 16:
        interior = inside_c if inside_c.sum() >= 16 else np.ones_like(inside_c)
    thr = float(np.quantile(drive[interior], 1.0 - density))
    # Dense tissue (up to 75 % glandular along the ray) with fuzzy margins, plus faint
    # scattered fibroglandular strands in the fat.
    dense = smoothstep(drive, thr - 0.8, thr + 1.0)
    gland = (
        dense * (0.45 + 0.3 * smoothstep(texture, -1.5, 1.5))  # texture survives inside dense areas
        + 0.07 * smoothstep(drive, thr - 2.5, thr)
    )
    # No streaks converging on the nipple: drawn on a polar grid about it, they made a regular
    # starburst behind the nipple that no mammogram shows (the oriented texture above already
    # runs along the nipple lines). Their draw is still taken from rng, so that every later
    # structure of a seed (lobules, ligaments, masses, calcifications) stays the one the
    # benchmarks were measured on.
    _skip_former_streak_draw(rng, (hc, wc), pxc, nipple)

    fat = np.clip(1.0 - gland / 0.77, 0.0, 1.0)
    patchy = smoothstep(power_law_noise((hc, wc), rng, beta=3.0, pixel_mm=pxc, f_min=0.05), -0.5, 1.0)
    # Fat lobules: rounded lucencies bounded by thin septa (two overlapping layers in projection).
    lob = np.zeros((hc, wc), np.float32)
    for size_mm, amp in ((min(7.0, 0.12 * dmax), 1.0), (min(4.5, 0.08 * dmax), 0.6)):
        sep, rim = lobule_septa((hc, wc), rng, pxc, size_mm=max(size_mm, 2 * pxc), width_mm=0.12)
        lob += amp * (0.022 * sep + 0.02 * rim)
    gland = gland + lob * fat * smoothstep(d_c, 0.5, 3.0)
    # Cooper's ligaments: thin, gently curved fibrous strands running from the chest wall
    # toward the nipple and the skin, seen in the fat (mostly around the fibroglandular cone and
    # toward the periphery), and scalloped arcs under the skin where they insert. They fade in
    # and out along their length.
    width_px = max(0.18 / pxc, 0.5)
    r_ref = 0.5 * dmax  # angular separations are set at this distance from the nipple
    radial = strand_ridges(n_dist, n_ang * r_ref, rng, len_mm=min(40.0, 0.5 * dmax),
                           sep_mm=min(7.0, 0.12 * dmax), width_px=width_px)
    arcs = strand_ridges(n_ang * r_ref, d_c, rng, len_mm=min(22.0, 0.3 * dmax),
                         sep_mm=min(5.0, 0.1 * dmax), width_px=width_px)
    periph = smoothstep(d_c, 0.3, 2.0) * (1.0 - smoothstep(d_c, 0.25 * dmax, 0.45 * dmax))
    lig = (
        radial * (0.5 + 0.5 * smoothstep(n_dist, 0.1 * dmax, 0.35 * dmax)) * smoothstep(d_c, 0.3, 2.0)
        + 0.8 * arcs * periph
    )
    lig_w = 0.15 * (0.3 + 0.7 * patchy) * fat * (0.6 + 0.4 * (1.0 - cone))
    gland = np.clip(gland + lig_w * np.minimum(lig, 1.0), 0.0, 1.0)
    if view == "MLO":
        gland *= 1.0 - 0.6 * smoothstep(pec_c, -0.5, 1.0)
    gland = np.where(inside_c, gland, 0.0).astype(np.float32)

    # ---- full resolution ----
    d = _upsample(d_c, f, (H, W))
    g = _upsample(gland, f, (H, W))
    mask = d > 0
    L = min(10.0, 0.2 * dmax)  # edge fall-off width (mm)
    s = min(1.5, 0.2 * L)  # skin thickness (mm)
    T0 = float(thickness_mm)
    t_out = T0 * _thickness_profile(d / L)
    t_in = max(T0 - 2.0 * s, 0.0) * _thickness_profile((d - s) / (L - s))
    mu_mix = np.float32(mu["adipose"]) + g * np.float32(mu["glandular"] - mu["adipose"])
    mul = 0.1 * ((t_out - t_in) * np.float32(mu["skin"]) + t_in * mu_mix)  # cm * cm^-1
    if view == "MLO":
        pec = _upsample(pec_c, f, (H, W))
        # Muscle replaces a growing share of the path toward the corner (glandular-like mu).
        share = smoothstep(pec, -0.2, 0.8) * (0.3 + 0.25 * smoothstep(pec, 0.0, 0.5 * dmax))
        mul += 0.1 * t_in * share * (np.float32(mu["glandular"]) - mu_mix)
        pectoral = mask & (pec > 0)
    else:
        pectoral = np.zeros((H, W), bool)

    # ---- masses (added path of mass tissue, glandular attenuation, displacing the mixture) ----
    masses: list[Mass] = []
    taken, taken_d = [], []
    rr_c, cc_c = np.nonzero(inside_c & (pec_c < -3.0))
    for _ in range(int(n_masses)):
        radius_mm = min(rng.uniform(3.5, 8.0), 0.2 * dmax)
        kind = "spiculated" if rng.random() < 0.5 else "round"
        ok = d_c[rr_c, cc_c] > radius_mm * (2.5 if kind == "spiculated" else 1.3) + min(5.0, 0.1 * dmax)
        cand = np.stack([rc[rr_c[ok], 0], cc[0, cc_c[ok]]], 1)
        pos = _pick(rng, cand, taken, [t for t in taken_d])
        if pos is None:
            continue
        r_px = radius_mm / px
        half = int(np.ceil(r_px * (3.6 if kind == "spiculated" else 1.3))) + 2
        r0, c0 = int(round(pos[0])), int(round(pos[1]))
        sl = (slice(max(r0 - half, 0), min(r0 + half + 1, H)), slice(max(c0 - half, 0), min(c0 + half + 1, W)))
        local = (sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
        path = _mass_path(local, (pos[0] - sl[0].start, pos[1] - sl[1].start), r_px, kind, rng, px)
        path = np.minimum(path, t_in[sl])
        mul[sl] += 0.1 * path * (np.float32(mu["glandular"]) - mu_mix[sl])
        masses.append(Mass(float(pos[0]), float(pos[1]), float(radius_mm), kind))
        taken.append(pos)
        taken_d.append((radius_mm * 2.5 + min(5.0, 0.1 * dmax)) / px)

    transmission = np.exp(-mul)
    compressed = mask & (d >= L) & ~pectoral
    if compressed.sum() < 16:
        compressed = mask if mask.sum() >= 16 else np.ones((H, W), bool)
    open_field = float(photons) / float(transmission[compressed].mean(dtype=np.float64))
    lam = (transmission * np.float32(open_field)).astype(np.float32)

    # ---- microcalcification clusters (pixel-integrated Beer-Lambert factors) ----
    calc_factor = np.ones((H, W), np.float32)
    calcs_raw = []
    dmu = mu["hydroxyapatite"] - mu["glandular"]
    clear = min(10.0, 0.25 * dmax)
    cand_mask = inside_c & (d_c > clear) & (pec_c < -3.0)
    if cand_mask.any():
        gthr = np.quantile(gland[cand_mask], 0.5)
        cand_mask &= gland >= gthr
    rr_k, cc_k = np.nonzero(cand_mask)
    cand_k = np.stack([rc[rr_k, 0], cc[0, cc_k]], 1)
    for cid in range(int(n_clusters)):
        spread_mm = min(rng.uniform(2.0, 4.5), 0.15 * dmax)
        center = _pick(rng, cand_k, taken, taken_d)
        if center is None:
            continue
        taken.append(center)
        taken_d.append((2 * spread_mm + min(8.0, 0.2 * dmax)) / px)
        n = int(rng.integers(3, 11))
        placed: list[tuple[float, float, float]] = []
        for _ in range(n * 20):
            if len(placed) == n:
                break
            dia = float(np.exp(rng.uniform(np.log(lo_d), np.log(hi_d))))
            rad_pos = spread_mm * np.sqrt(rng.random()) / px
            ang = rng.uniform(0, 2 * np.pi)
            pr, pc = center[0] + rad_pos * np.sin(ang), center[1] + rad_pos * np.cos(ang)
            rad_px = dia / 2 / px
            if not (rad_px + 2 <= pr <= H - 3 - rad_px and rad_px + 2 <= pc <= W - 3 - rad_px):
                continue
            if any(np.hypot(pr - q[0], pc - q[1]) < rad_px + q[2] / 2 / px + 2 for q in placed):
                continue
            placed.append((pr, pc, dia))
        for pr, pc, dia in placed:
            r0, c0 = int(round(pr)), int(round(pc))
            fac = _sphere_factor(dia / 2 / px, pr - r0, pc - c0, px, dmu, 7)
            h = fac.shape[0] // 2
            sl = (slice(r0 - h, r0 + h + 1), slice(c0 - h, c0 + h + 1))
            if sl[0].start < 0 or sl[1].start < 0 or sl[0].stop > H or sl[1].stop > W:
                continue
            calc_factor[sl] *= fac
            calcs_raw.append((pr, pc, dia, cid))
    lam *= calc_factor

    sigma = float(blur_sigma_px)
    if sigma > 0:
        # The detector's MTF acts on the expected signal; quantum noise is added after it.
        lam = ndimage.gaussian_filter(lam, sigma, mode="nearest", truncate=4.0)
    calcifications = []
    for pr, pc, dia, cid in calcs_raw:
        r0, c0 = int(round(pr)), int(round(pc))
        primary = 1.0 - float(calc_factor[r0, c0])
        if sigma > 0:
            h = int(np.ceil(4 * sigma + dia / 2 / px)) + 2
            sl = (slice(max(r0 - h, 0), r0 + h + 1), slice(max(c0 - h, 0), c0 + h + 1))
            blurred = ndimage.gaussian_filter(calc_factor[sl], sigma, mode="nearest", truncate=4.0)
            seen = 1.0 - float(blurred[r0 - sl[0].start, c0 - sl[1].start])
        else:
            seen = primary
        calcifications.append(Calcification(float(pr), float(pc), float(dia), primary, cid, seen))

    if collimator_border:
        # Collimator shadow on the three sides away from the chest wall: no primary photons
        # arrive, so the detector there reads offset + electronic noise only.
        bw = int(np.clip(round(0.01 * min(H, W)), 3, 24))
        lam[:bw] = 0
        lam[H - bw:] = 0
        lam[:, W - bw:] = 0
        mask[:bw] = mask[H - bw:] = False
        mask[:, W - bw:] = False
        pectoral &= mask
    else:
        bw = 0

    truth = (np.float32(params.offset) + np.float32(params.gain) * lam).astype(np.float32)
    noisy, counts = detector_image(lam, params, dose, np.random.default_rng(ss_noise), bits=bits)

    if laterality == "R":
        truth, noisy, counts, mask, g, pectoral = (
            np.ascontiguousarray(a[:, ::-1]) for a in (truth, noisy, counts, mask, g, pectoral)
        )
        calcifications = [
            Calcification(c.row, W - 1 - c.col, c.diameter_mm, c.contrast, c.cluster, c.contrast_truth)
            for c in calcifications
        ]
        masses = [Mass(m.row, W - 1 - m.col, m.radius_mm, m.kind) for m in masses]

    max_value = 2**bits - 1
    vals = noisy[mask & (noisy < max_value)]
    if vals.size > 100:
        lo, hi = np.percentile(vals[:: max(1, vals.size // 200_000)], [1.0, 99.0])
    else:
        lo, hi = float(noisy.min()), float(noisy.max())
    meta = MammogramMeta(
        modality="MG",
        sop_class_uid=MG_FOR_PROCESSING_SOP,
        presentation_intent=FOR_PROCESSING,
        photometric_interpretation="MONOCHROME1",
        pixel_intensity_relationship="LIN",
        bits_stored=int(bits),
        bits_allocated=16,
        pixel_spacing_mm=(px, px),
        laterality=laterality,
        view_position=view,
        manufacturer=MANUFACTURER,
        window_center=float((lo + hi) / 2),
        window_width=float(max(hi - lo, 1.0)),
        shape=(H, W),
    )
    info = {
        "seed": seed,
        "energy_kev": float(energy_kev),
        "mu_cm": mu,
        "thickness_mm": T0,
        "density": density,
        "open_field_counts": open_field,
        "edge_falloff_mm": L,
        "skin_mm": s,
        "collimator_px": bw,
        "blur_sigma_px": sigma,
        "texture_step_px": f,
        "max_value": max_value,
        # (row, column) in pixels, as displayed: where ducts and nipple lines converge
        "nipple_rc": (float(geo["cy"]), float(nipple_col if laterality == "L" else W - 1 - nipple_col)),
    }
    return Phantom(
        truth=truth,
        noisy=noisy,
        counts=counts,
        dose=float(dose),
        params=params,
        meta=meta,
        mask=mask,
        calcifications=calcifications,
        masses=masses,
        glandular=g,
        pectoral=pectoral,
        info=info,
    )
