"""Artefacts at the edge of the exposed field (the collimator shadow).

    python benchmarks/field_edge.py --phantoms 6 --models mammo-unet

The sharpest step a raw mammogram has: from the open field (thousands of DN) to the shadow
of the collimator (offset + electronic noise) in one pixel, ~100 noise sigma at 20 % dose.
A denoiser that has rarely seen it can ring or dip there, and a dark dot next to the field
corner is the kind of artefact a reader must never have to think about.

Phantoms (1024², CC and MLO alternating, seeds 10 700+) at ``--dose``: each network runs on the
whole image as ``denoise`` does for a user (exposed field and collimator strips apart,
``inference.field_parts``) and, for comparison, with field and shadow as one image (marked
so), as ``denoise`` did before; BM3D (GAT) on a 256² crop around each convex
corner of the exposed field (BM3D is local: the GAT is pointwise and its search window is
small). Every pixel's error is in units of the noisy input's own noise sigma at that level,
``z = (out - truth) / sqrt(gain * (truth - offset) + sigma_e^2)``.

Scored on the open field next to the shadow (exposed, more than 30 px from the breast),
within the corner crops:

- ``edge_max_abs_z``: worst pixel within 3 px of the shadow (the corner pixel, in practice);
- ``edge_mean_z_d1..d3``: mean error 1, 2, 3 px from the shadow (a bright or dark band);
- ``interior_std_z`` / ``interior_max_abs_z``: the open field more than 20 px from the shadow,
  i.e. what the same image does where nothing happens (the scale the edge numbers compare to).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

CROP = 256
JOINT = " (field and shadow as one image)"


def run_joint(denoiser, z, params):
    """The network across the field edge: the whole frame as one part, as ``denoise`` ran it
    before it split field and shadow (``inference.field_parts``)."""
    from mammo_denoise.inference import DEFAULT_TILE, _Transform  # noqa: PLC2701

    return C.denoise_part(denoiser, z, _Transform(z, denoiser.domain, params, True), tile=DEFAULT_TILE)


def convex_corners(exposed: np.ndarray) -> list[tuple[int, int]]:
    """Corners of the exposed field's bounding box that are not on the image border."""
    rows = np.flatnonzero(exposed.any(axis=1))
    cols = np.flatnonzero(exposed.any(axis=0))
    h, w = exposed.shape
    out = []
    for r in (rows[0], rows[-1]):
        for c in (cols[0], cols[-1]):
            if 0 < r < h - 1 and 0 < c < w - 1 and exposed[r, c]:
                out.append((int(r), int(c)))
    return out


def crop_around(shape, r, c, size=CROP):
    h, w = shape
    r0 = min(max(r - size // 2, 0), h - size)
    c0 = min(max(c - size // 2, 0), w - size)
    return (slice(r0, r0 + size), slice(c0, c0 + size))


def edge_scores(out, truth, sigma, open_field, dist) -> dict:
    z = (np.asarray(out, np.float64) - truth) / sigma
    band = open_field & (dist <= 3)
    inner = open_field & (dist > 20)
    return {
        "edge_max_abs_z": float(np.abs(z[band]).max()),
        **{f"edge_mean_z_d{d}": float(z[open_field & (dist == d)].mean()) for d in (1, 2, 3)},
        "interior_std_z": float(z[inner].std()),
        "interior_max_abs_z": float(np.abs(z[inner]).max()),
    }


def main(argv=None):
    from scipy import ndimage

    from mammo_denoise.physics.phantom import make_phantom

    ap = C.parser(__doc__, "no_bm3d", "allow_untrained", phantoms=6, phantom_shape=(1024, 1024),
                  dose=0.2, seed0=C.TEST_SEED0 + 700, models=None, threads=None, name="field_edge")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    threads = C.set_threads(args.threads)
    specs = C.parse_models(args.models, args.allow_untrained)
    denoisers = C.load_all(specs)
    use_bm3d = C.use_bm3d(args)
    methods = ["Noisy"] + ([C.BM3D] if use_bm3d else []) + [m + x for m in denoisers for x in ("", JOINT)]
    seeds = C.test_seeds(args)
    print(f"{len(seeds)} phantoms {tuple(args.phantom_shape)}, dose {args.dose}; methods {methods}; threads {threads}")

    per = {m: [] for m in methods}
    n_corners = 0
    for i, seed in enumerate(seeds):
        ph = make_phantom(seed=seed, shape=tuple(args.phantom_shape), dose=args.dose,
                          view="CC" if i % 2 == 0 else "MLO")
        p = ph.params
        truth = ph.truth_at(args.dose).astype(np.float64)
        exposed = truth > p.offset
        sigma = np.sqrt(np.maximum(p.gain * (truth - p.offset), 0.0) + p.electronic_sigma**2)
        dist = ndimage.distance_transform_edt(exposed)
        open_field = exposed & ~ndimage.binary_dilation(ph.mask, iterations=30)
        whole = {}
        for m, den in denoisers.items():
            whole[m] = C.run_model(den, ph.noisy, p)
            whole[m + JOINT] = run_joint(den, ph.noisy, p)
        for r, c in convex_corners(exposed):
            sl = crop_around(truth.shape, r, c)
            n_corners += 1
            for m in methods:
                if m == "Noisy":
                    out = ph.noisy[sl]
                elif m.startswith("BM3D"):
                    out = C.bm3d_anscombe(ph.noisy[sl], p)
                else:
                    out = whole[m][sl]
                s = edge_scores(out, truth[sl], sigma[sl], open_field[sl], dist[sl])
                s.update(seed=seed, corner=[r, c])
                per[m].append(s)
        print(f"[{i + 1}/{len(seeds)}] seed {seed}: " + "  ".join(
            f"{m.split(' ')[0]} {per[m][-1]['edge_max_abs_z']:.1f}/{per[m][-1]['interior_max_abs_z']:.1f}"
            for m in methods), flush=True)

    keys = [k for k in per[methods[0]][0] if k not in ("seed", "corner")]
    summary = {m: {k: C.mean_std([r[k] for r in per[m]]) for k in keys} for m in methods}
    for m in methods:
        summary[m]["edge_max_abs_z_worst"] = float(max(r["edge_max_abs_z"] for r in per[m]))
    for m in methods:
        s = summary[m]
        print(f"{m[:40]:40s} edge max|z| {s['edge_max_abs_z']['mean']:5.2f} (worst {s['edge_max_abs_z_worst']:.2f})  "
              f"mean z d1-3 " + " ".join(f"{s[f'edge_mean_z_d{d}']['mean']:+.2f}" for d in (1, 2, 3)) +
              f"  interior std {s['interior_std_z']['mean']:.2f} max {s['interior_max_abs_z']['mean']:.2f}")
    C.write_result(args.name, {
        "settings": {"phantoms": args.phantoms, "seeds": [seeds[0], seeds[-1]], "corners": n_corners,
                     "phantom_shape": list(args.phantom_shape), "dose": args.dose, "crop": CROP,
                     "threads": threads},
        "models": [s.describe() for s in specs],
        "seed_disjoint": C.check_seed_disjoint(specs, seeds),
        "summary": summary,
        "per_corner": per,
    }, started)


if __name__ == "__main__":
    main()
