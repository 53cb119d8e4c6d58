"""Noise estimation on real anatomy: the estimated gain and the GAT noise it gives.

    python benchmarks/noise_real_anatomy.py --mias ../shared/data/mias   (about a minute)

Regions of ``--size`` (256 and 512 by default) wholly inside the breasts of the held-out
mini-MIAS women (``physics.anatomy``), half at the film's 200 um and half resampled to 100 um,
each recorded by its own detector (gain 0.5-5 DN per quantum, offset 0-200 DN, electronic
sigma 0-10 DN, dose 10-100 %, all drawn from the region's seed), without and with an unexposed
strip (24 rows of offset + electronic noise, a collimator shadow). ``estimate_noise_params`` is
given the noisy region alone. Scored: the gain's relative error and the standard deviation, over
the region, of ``GAT_est(z) - GAT_est(E[z])`` (1 when the estimate is right), on two truths:
the film as scanned ("film": its grain is white, like quantum noise, and no single-image
estimator can tell the two apart) and the film smoothed by 1 px before the detector ("smoothed").
Targets (issue 27): gain within 5 %, GAT noise within 3 % of 1, no error.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

from mammo_denoise.errors import MammoDenoiseError  # noqa: E402
from mammo_denoise.physics.anatomy import film_to_quanta, read_film_folder  # noqa: E402
from mammo_denoise.physics.anscombe import anscombe, expected_anscombe  # noqa: E402
from mammo_denoise.physics.noise import estimate_noise_params  # noqa: E402
from mammo_denoise.physics.params import NoiseParams  # noqa: E402

DARK_ROWS = 24


def one_region(film, k, size, grain, dark, seed):
    rng = np.random.default_rng([seed, k, size])
    zoom = 1.0 if k % 2 == 0 else 2.0
    q, mask = film_to_quanta(film.film, grain_sigma_px=grain, zoom=zoom)
    inside = np.argwhere(ndimage.binary_erosion(mask, iterations=size // 2 + 2))
    if not len(inside):
        return None
    r, c = inside[rng.integers(len(inside))]
    qc = q[r - size // 2:r + size // 2, c - size // 2:c + size // 2].astype(np.float64)
    p = NoiseParams(offset=float(rng.uniform(0, 200)), gain=float(np.exp(rng.uniform(np.log(0.5), np.log(5)))),
                    electronic_sigma=float(rng.uniform(0, 10)))
    lam = float(np.exp(rng.uniform(np.log(0.1), 0.0))) * qc
    if dark:
        lam[:DARK_ROWS] = 0.0
    z = p.offset + p.gain * rng.poisson(lam) + p.electronic_sigma * rng.standard_normal(lam.shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = estimate_noise_params(z)
    except MammoDenoiseError as exc:
        return {"ref": film.ref, "error": str(exc)}
    exposed = lam > 0
    resid = anscombe(z, est) - expected_anscombe(p.offset + p.gain * lam, est)
    return {"ref": film.ref, "zoom": zoom, "gain_error": est.gain / p.gain - 1.0,
            "gat_sigma": float(np.std(resid[exposed]))}


def main(argv=None):
    ap = C.parser(__doc__, mias=C.MIAS, regions=40, seed=27)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    args = ap.parse_args(argv)
    started = time.perf_counter()
    films = read_film_folder(args.mias, split="test")
    table = {}
    for truth, grain in (("film", 0.0), ("smoothed", 1.0)):
        for size in args.sizes:
            for dark in (False, True):
                rows = [one_region(films[k % len(films)], k, size, grain, dark, args.seed)
                        for k in range(args.regions)]
                rows = [r for r in rows if r is not None]
                ok = [r for r in rows if "error" not in r]
                g = np.abs([r["gain_error"] for r in ok])
                s = np.abs(np.array([r["gat_sigma"] for r in ok]) - 1.0)
                key = f"{truth}, {size} px, {'with' if dark else 'no'} dark strip"
                table[key] = {"regions": len(rows), "errors": len(rows) - len(ok),
                              "gain_within_5pct": int(np.sum(g <= 0.05)),
                              "median_abs_gain_error": float(np.median(g)),
                              "gat_sigma_within_3pct": int(np.sum(s <= 0.03)),
                              "gat_sigma_range": [float(1 + min(r["gat_sigma"] - 1 for r in ok)),
                                                  float(1 + max(r["gat_sigma"] - 1 for r in ok))],
                              "rows": rows}
                e = table[key]
                print(f"{key:38s} errors {e['errors']}  gain within 5 %: {e['gain_within_5pct']}/{len(ok)} "
                      f"(median |err| {100 * e['median_abs_gain_error']:.1f} %)  GAT sigma within 3 %: "
                      f"{e['gat_sigma_within_3pct']}/{len(ok)} ({e['gat_sigma_range'][0]:.3f}-{e['gat_sigma_range'][1]:.3f})")
    C.write_result("noise_real_anatomy", {"settings": {k: str(v) for k, v in vars(args).items()},
                                          "table": table}, started)


if __name__ == "__main__":
    main()
