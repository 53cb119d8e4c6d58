"""Denoising real breast anatomy: the models against BM3D on held-out mini-MIAS women.

    python benchmarks/real_anatomy.py --mias ../shared/data/mias --models default
    (--regions 40 --size 256 --doses 0.1 0.2 0.5; about 25 min on 2 CPU cores, BM3D most of it)

Anatomy: the films of the "test" women (``physics.anatomy.woman_split``: every fifth woman,
never read by training), mapped to full-dose expected quanta (500-4000 per pixel across the
breast, ``physics.anatomy.film_to_quanta``), half of the regions at the film's 200 um and half
resampled to 100 um. Each region (``--size`` square inside the breast, plus 40 px of real image
around it for every method's context) gets its own detector, drawn from the region's seed:
gain 0.5-5 DN per quantum (log-uniform), offset 0-200 DN, electronic sigma 0-10 DN. At each
dose the noisy region is recorded from the same quanta (Poisson-Gaussian).

Methods: the noisy input; BM3D in the GAT domain with the *true* detector parameters and the
exact unbiased inverse; each model as a user runs it (``denoise`` with the noise parameters
the product estimates from the noisy region itself, safeguard on) and, with ``--true-params``,
with the true parameters as BM3D gets them (which separates estimation from denoising). PSNR and SSIM against the
noise-free anatomy at that dose, with the data range of the truth in the region (the same for
every method); "worse" counts regions where a method's PSNR is below the noisy input's.

Truths: film grain and scanner noise are part of mini-MIAS's anatomy, so a denoiser that takes
grain for noise is penalised. The table is given twice: "film" (the anatomy as scanned) and
"smoothed" (the film smoothed by a 1 px Gaussian before the detector: a truth without grain).

Calcifications: regions centred on the annotated CALC clusters of the test women; inside the
cluster radius the truth's most contrasted spots (``metrics.spot_contrast_map``, 2 px, at least
3 px apart, the 8 strongest) are the calcifications; contrast ratio = a method's contrast there
(``metrics.calcification_contrast``) over the truth's, averaged over spots.

``--cache DIR`` keeps BM3D's outputs per case, so that rerunning with another model skips it.
"""

from __future__ import annotations

import hashlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

from mammo_denoise.metrics import calcification_contrast, spot_contrast_map  # noqa: E402
from mammo_denoise.physics.anatomy import film_breast_mask, film_to_quanta, read_film_folder  # noqa: E402
from mammo_denoise.physics.params import NoiseParams  # noqa: E402
from mammo_denoise.safeguard import NoiseModelMismatch  # noqa: E402

CONTEXT = 40  # px of real image around each region: BM3D's reach (39 px) and the U-Net's (26)
TRUTHS = {"film": 0.0, "smoothed": 1.0}  # grain smoothing (film pixels) before the mapping
BM3D = "BM3D (GAT, true parameters)"


def detector(seed: int) -> NoiseParams:
    rng = np.random.default_rng([seed, 0x444554])
    return NoiseParams(offset=float(rng.uniform(0, 200)),
                       gain=float(np.exp(rng.uniform(np.log(0.5), np.log(5.0)))),
                       electronic_sigma=float(rng.uniform(0, 10)))


def regions(films, n: int, size: int, seed: int):
    """``n`` regions: first one centred on each annotated CALC cluster, then one per film in
    turn at a seeded position wholly inside the breast; each ``(film, zoom, row, col, calc)``."""
    from scipy import ndimage

    rng = np.random.default_rng([seed, 0x524547])
    out = []
    for f in films:
        for row, col, radius in f.calc_clusters():
            out.append((f, 1.0, row, col, (row, col, radius)))
    k = 0
    while len(out) < n and k < 10 * n:
        f = films[k % len(films)]
        zoom = 1.0 if k % 2 == 0 else 2.0
        mask = film_breast_mask(f.film)
        inside = ndimage.binary_erosion(mask, iterations=int((size / 2 + CONTEXT) / zoom) + 2)
        cand = np.argwhere(inside)
        if len(cand):
            r, c = cand[rng.integers(len(cand))]
            out.append((f, zoom, int(r), int(c), None))
        k += 1
    return out[:n]


def quanta_window(film, zoom, row, col, size, grain):
    """Full-dose quanta of the region with its context, and the region inside it; a CALC
    region too near the film's edge is shifted inside."""
    q, _ = film_to_quanta(film.film, film_breast_mask(film.film), grain_sigma_px=grain, zoom=zoom)
    half = size // 2 + CONTEXT
    r, c = int(round(row * zoom)), int(round(col * zoom))
    r = min(max(r, half), q.shape[0] - half)
    c = min(max(c, half), q.shape[1] - half)
    return q[r - half:r + half, c - half:c + half].astype(np.float64), (r - half, c - half)


def calc_spots(truth, centre_rc, radius, n=8):
    """The truth's ``n`` most contrasted 2 px spots within ``radius`` of ``centre_rc``."""
    cmap = spot_contrast_map(truth, 2.0, polarity=-1)
    rr, cc = np.indices(truth.shape)
    near = (rr - centre_rc[0]) ** 2 + (cc - centre_rc[1]) ** 2 <= radius ** 2
    near[:4], near[-4:], near[:, :4], near[:, -4:] = False, False, False, False
    order = np.argsort(np.where(near, np.nan_to_num(cmap, nan=-np.inf), -np.inf), axis=None)[::-1]
    spots = []
    for idx in order:
        p = np.unravel_index(idx, truth.shape)
        if not near[p]:
            break
        if all((p[0] - s[0]) ** 2 + (p[1] - s[1]) ** 2 >= 9 for s in spots):
            spots.append(p)
        if len(spots) == n:
            break
    return np.array(spots, float)


_WORKER: dict = {}


def _start_worker(args, specs, threads):
    """Each process loads the models once (and runs single-threaded beside the others)."""
    C.set_threads(threads)
    _WORKER.update(args=args, films=read_film_folder(args.mias, split="test"),
                   denoisers=C.load_all(specs))


def score_region(i: int, region) -> list[dict]:
    """Every truth and dose of region ``i``: one row each."""
    from mammo_denoise import denoise, estimate_noise_params

    args, denoisers = _WORKER["args"], _WORKER["denoisers"]
    film_ref, zoom, row, col, calc = region
    film = next(f for f in _WORKER["films"] if f.ref == film_ref)
    cache = Path(args.cache) if args.cache else None
    inner = (slice(CONTEXT, CONTEXT + args.size), slice(CONTEXT, CONTEXT + args.size))
    params = detector(args.seed * 100_000 + i)
    rows = []
    for truth_name, grain in TRUTHS.items():
        q, origin = quanta_window(film, zoom, row, col, args.size, grain)
        for dose in args.doses:
            rng = np.random.default_rng([args.seed, i, int(round(1000 * dose))])
            lam = dose * q
            truth = params.offset + params.gain * lam
            z = (params.offset + params.gain * rng.poisson(lam)
                 + params.electronic_sigma * rng.standard_normal(lam.shape))
            t_in = truth[inner]
            rng_dn = float(t_in.max() - t_in.min())
            outs = {"Noisy": z}
            key = hashlib.sha256(z.tobytes()).hexdigest()[:20]
            hit = cache / f"bm3d_{key}.npy" if cache else None
            if hit is not None and hit.exists():
                outs[BM3D] = np.load(hit)
            elif C.have_bm3d():
                outs[BM3D] = C.bm3d_anscombe(z, params)
                if hit is not None:
                    np.save(hit, outs[BM3D])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est = estimate_noise_params(z)
            runs = {label: (den, est) for label, den in denoisers.items()}
            if args.true_params:
                runs.update({f"{label}, true parameters": (den, params)
                             for label, den in denoisers.items()})
            flagged = {}
            for label, (den, p) in runs.items():
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    outs[label] = denoise(z, model=den, params=p, device="cpu")
                flagged[label] = [str(w.message) for w in caught
                                  if issubclass(w.category, NoiseModelMismatch)]
            rec = {"region": i, "ref": film.ref, "zoom": zoom, "truth": truth_name, "dose": dose,
                   "params": [params.offset, params.gain, params.electronic_sigma],
                   "estimated_gain": est.gain, "calc": calc is not None,
                   "safeguard_notes": flagged, "psnr": {}, "ssim": {}}
            for label, img in outs.items():
                rec["psnr"][label] = C.psnr(img[inner], t_in, rng_dn)
                rec["ssim"][label] = C.ssim(img[inner], t_in, rng_dn)
            if calc is not None:
                centre = (calc[0] * zoom - origin[0] - CONTEXT, calc[1] * zoom - origin[1] - CONTEXT)
                spots = calc_spots(t_in, centre, calc[2] * zoom)
                if len(spots):
                    ref = calcification_contrast(t_in, spots, 2.0)
                    rec["calc_contrast"] = {
                        label: float(np.mean(calcification_contrast(img[inner], spots, 2.0) / ref))
                        for label, img in outs.items()}
            rows.append(rec)
    return rows


def run(args):
    films = read_film_folder(args.mias, split="test")
    specs = C.parse_models(args.models)
    if args.cache:
        Path(args.cache).mkdir(parents=True, exist_ok=True)
    regs = [(f.ref, zoom, row, col, calc)
            for f, zoom, row, col, calc in regions(films, args.regions, args.size, args.seed)]
    rows = []
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, initializer=_start_worker,
                                 initargs=(args, specs, 1)) as pool:
            for i, part in enumerate(pool.map(score_region, range(len(regs)), regs)):
                rows += part
                _report(i, regs, part)
    else:
        _start_worker(args, specs, args.threads)
        for i, region in enumerate(regs):
            part = score_region(i, region)
            rows += part
            _report(i, regs, part)
    return rows, [s.label for s in specs], specs


def _report(i, regs, part):
    last = part[-1]
    print(f"region {i + 1}/{len(regs)} {last['ref']} x{last['zoom']:g}: " + ", ".join(
        f"{lab} {last['psnr'][lab] - last['psnr']['Noisy']:+.2f}" for lab in last["psnr"]
        if lab != "Noisy") + f" dB ({last['truth']} truth, dose {last['dose']:g})", flush=True)


def summarise(rows, methods):
    table = {}
    for truth in TRUTHS:
        for dose in sorted({r["dose"] for r in rows}):
            sel = [r for r in rows if r["truth"] == truth and r["dose"] == dose]
            entry = {}
            for m in sel[0]["psnr"]:
                if m not in sel[0]["psnr"]:
                    continue
                ps = [r["psnr"][m] for r in sel]
                entry[m] = {
                    "psnr": C.mean_std(ps), "ssim": C.mean_std([r["ssim"][m] for r in sel]),
                    "worse_than_input": int(sum(r["psnr"][m] < r["psnr"]["Noisy"] for r in sel)),
                    "regions": len(sel),
                    "calc_contrast": C.mean_std([r["calc_contrast"][m] for r in sel
                                                 if "calc_contrast" in r]),
                }
                if m != BM3D and BM3D in sel[0]["psnr"] and m != "Noisy":
                    d = [r["psnr"][m] - r["psnr"][BM3D] for r in sel]
                    entry[m]["minus_bm3d_db"] = C.mean_std(d)
                    entry[m]["ssim_minus_bm3d"] = C.mean_std(
                        [r["ssim"][m] - r["ssim"][BM3D] for r in sel])
                    entry[m]["flagged"] = int(sum(bool(r["safeguard_notes"].get(m)) for r in sel))
            table[f"{truth} @ {dose:g}"] = entry
    return table


def main(argv=None):
    p = C.parser(__doc__, mias=C.MIAS, models=["default"], regions=40, size=256, seed=27,
                 threads=None, name="real_anatomy")
    p.add_argument("--doses", type=float, nargs="+", default=[0.1, 0.2, 0.5])
    p.add_argument("--true-params", action="store_true",
                   help="also run each model with the true detector parameters (as BM3D is)")
    p.add_argument("--cache", type=Path, default=None, help="folder for BM3D outputs per case")
    p.add_argument("--jobs", type=int, default=1, help="processes, one region each at a time")
    args = p.parse_args(argv)
    started = time.perf_counter()
    rows, methods, specs = run(args)
    table = summarise(rows, methods)
    for name, entry in table.items():
        print(name)
        for m, e in entry.items():
            extra = (f"  vs BM3D {C.fmt_ms(e['minus_bm3d_db'])} dB  worse {e['worse_than_input']}"
                     f"/{e['regions']}" if "minus_bm3d_db" in e else "")
            print(f"  {m:40s} PSNR {C.fmt_ms(e['psnr'])}  SSIM {C.fmt_ms(e['ssim'], 4)}{extra}")
    C.write_result(args.name, {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("cache",)},
        "models": [{"label": s.label, "path": str(s.path)} for s in specs],
        "table": table, "rows": rows}, started)


if __name__ == "__main__":
    main()
