"""Fine-tuning on a clinic's own raw images without clean references (issue #25).

    python benchmarks/finetune_real.py --mias ../shared/data/mias
    (default: 6 training images per case, 9 fine-tunes of 4 x 100 iterations of 16 patches of
    64 px from the shipped default, ~30 s each on an idle 2-core CPU, 2-3 min with the cores
    shared: 5 to 18 min in all; --quick: a smoke test, 1.5 min)

Every fine-tune starts from the shipped default (``mammo-unet``), draws doses 0.1-0.5 per
patch, uses the MSE without calcification weight (the same objective for every run) and the
same seed, budget and validation image; a run that does not beat its start on validation
keeps the start model (what ``train`` does), except the seed's protocol, measured as it ends.

Phantoms (truth known): ``--images`` phantoms (512 px, the training phantoms of
``TrainConfig``), fine-tuned (a) supervised, against their truth; (b) "noisier2noise" from
their noisy full-dose realisations alone, with noise parameters estimated from each image;
(c) the first seed's protocol ("seed") on the same noisy images. Scored on 4 held-out phantoms
at 20 % dose, with the true noise parameters, safeguard off (the network's own output): GAT
MSE against the noise-free signal, as dB of noise removed (10 log10(noise variance / MSE)),
PSNR in DN (breast range), and the fraction of the input noise the output keeps: the
regression slope of the output's error on the input's noise in the GAT domain (PHYSICS.md
section 7: a network trained on the seed's target keeps d of it on top of what it keeps anyway).

mini-MIAS anatomy (a clinic): one detector (gain 1.5 DN/quantum, offset 60 DN, electronic sigma
4 DN, 500-4000 quanta per pixel across the breast, films resampled to 100 um), white or with its
quantum noise correlated between neighbours (``physics.correlation.correlated_detector_image``,
neighbour correlation 0.3). Training: ``--images`` full-field films of "train" women, noisy at
full dose, noise parameters estimated from each image (as ``mammo-denoise train DIR`` does).
Test: ``--test`` regions (``--size`` px) of the "test" women (never read by training) at 20 %
dose, the models run as users run them (noise parameters estimated from the region,
``denoise``), safeguard off and, for the fine-tuned models, on. Scored in the GAT domain of
the true parameters against the noise-free anatomy. Residual NPS: the periodogram of the
removed part (input - output, GAT) over that of the true noise (input - truth), in three
radial bands (cycles/pixel: low 0.02-0.15, mid 0.15-0.3, high 0.3-0.5); 1 everywhere when
exactly the noise is removed. On the correlated detector a model that removes only white-like
noise leaves the low band short.

Recorrupted-to-recorrupted (Pang et al. 2021), measured beside noisier2noise on the mini-MIAS
cases with the same data and budget: from the same simulated dose-d input y, input
``y + a e`` and target ``y - e / a`` (``a = R2R_A``, ``e`` drawn with the measured detector
correlation; the input is noisier than inference's by ``1 + a^2``, the target's noise variance
is ``1 + 1/a^2``), validated like every run on noisier2noise-corrected patches and kept as it
ends (``R2R_A`` and the swap of the training batches are this file's; the product has no R2R).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

from mammo_denoise.physics.anscombe import anscombe, expected_anscombe  # noqa: E402
from mammo_denoise.physics.params import NoiseParams  # noqa: E402

START = "mammo-unet"
TEST_DOSE = 0.2
CLINIC = NoiseParams(offset=60.0, gain=1.5, electronic_sigma=4.0)
QUANTA = (500.0, 4000.0)
ZOOM = 2.0  # 200 um film -> 100 um
GRAIN = 0.5  # film pixels of smoothing before the mapping (less grain in the truth)
RHO = 0.3
BANDS = {"low": (0.02, 0.15), "mid": (0.15, 0.30), "high": (0.30, 0.51)}
CONTEXT = 48
R2R_A = 0.5


def r2r_batches():
    """A context in which training batches of real images are recorrupted pairs (module
    docstring); validation batches (``with_dn``) stay noisier2noise's."""
    import contextlib

    from mammo_denoise.physics.correlation import correlated_noise
    from mammo_denoise.training import data as D

    original = D.PatchSampler.batch

    def batch(self, rng, n, augment=True, with_dn=False):
        b = original(self, rng, n, augment, with_dn)
        if with_dn:
            return b
        src = next(s for s in self.sources if s.kind == "real")
        k = src.noise.kernel() if src.noise is not None and not src.noise.white else np.ones((1, 1))
        e = correlated_noise(b["y"].shape, k, rng).astype(np.float32)
        y = b["y"]
        b["y"], b["t"] = y + R2R_A * e, y - e / R2R_A
        return b

    @contextlib.contextmanager
    def swapped():
        D.PatchSampler.batch = batch
        try:
            yield
        finally:
            D.PatchSampler.batch = original

    return swapped()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mias", type=Path,
                   default=Path(__file__).resolve().parents[2] / "shared" / "data" / "mias")
    p.add_argument("--images", type=int, default=6, help="training images per case (default 6)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--iters", type=int, default=100, help="iterations per epoch (default 100)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--test", type=int, default=4, help="held-out test images per case (default 4)")
    p.add_argument("--size", type=int, default=384, help="test region size in px (default 384)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--work", type=Path, default=Path("/tmp/finetune_real"), help="scratch folder for models")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 images, 1 epoch of 3 iterations")
    p.add_argument("--only", choices=["phantoms", "mias"], default=None)
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    a = p.parse_args(argv)
    if a.quick:
        a.images, a.epochs, a.iters, a.test, a.size = 2, 1, 3, 1, 192
    return a


# ----------------------------------------------------------------------------- training
def finetune(args, name, **kw):
    """Fine-tune the shipped default; returns (path or None when not improved, card, seconds)."""
    import json

    from mammo_denoise.training import NotImproved, TrainConfig, train

    cfg = TrainConfig(init=START, patch=args.patch, batch_size=args.batch, epochs=args.epochs,
                      iters_per_epoch=args.iters, dose_range=(0.1, 0.5), loss="mse", calc_weight=0.0,
                      val_patches=64, patience=None, seed=0, device="cpu",
                      out=args.work / f"{name}.safetensors", command=f"benchmarks/finetune_real.py ({name})",
                      **kw)
    t0 = time.perf_counter()
    msgs = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = train(cfg, progress=msgs.append)
        card = json.loads(path.with_suffix(".json").read_text())
        note = "saved"
    except NotImproved as exc:
        path, card, note = None, None, str(exc)
    seconds = time.perf_counter() - t0
    start = next((m for m in msgs if type(m).__name__ == "Baseline"), None)
    epochs = [m for m in msgs if type(m).__name__ == "EpochEnd"]
    log = {"name": name, "objective": cfg.objective, "seconds": round(seconds, 1), "outcome": note,
           "val_start": None if start is None else start.val_loss,
           "val_epochs": [m.val_loss for m in epochs],
           "validation": None if card is None else card["metrics"].get("validation"),
           "real": None if card is None else card["training"]["data"].get("real")}
    print(f"  {name}: {cfg.objective}, {seconds:.0f} s, {note[:100]}", flush=True)
    return path, log


def load(path_or_name):
    from mammo_denoise.models import load_model

    return load_model(str(path_or_name))


def run(den, z, params, safeguard=False):
    from mammo_denoise.inference import denoise

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(denoise(z, model=den, params=params, device="cpu", safeguard=safeguard), np.float64)


def estimate(z):
    from mammo_denoise.physics.noise import fit_noise_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_noise_model(z, warn=False).params


# ----------------------------------------------------------------------------- scoring
def score(out, z, clean_mean, params, region, range_dn):
    """GAT-domain figures against the noise-free mean at the test dose (true parameters)."""
    y = anscombe(z, params).astype(np.float64)
    s = expected_anscombe(clean_mean, params).astype(np.float64)
    o = anscombe(out, params).astype(np.float64)
    n, e = (y - s)[region], (o - s)[region]
    mse = float(np.mean(e ** 2))
    dn_mse = float(np.mean((out - clean_mean)[region] ** 2))
    return {"mse_gat": mse, "noise_removed_db": 10 * np.log10(float(np.mean(n ** 2)) / mse),
            "psnr_dn": 10 * np.log10(range_dn ** 2 / dn_mse),
            "noise_kept": float(np.sum(n * e) / np.sum(n * n))}


def band_power(a: np.ndarray) -> dict:
    """Radially averaged periodogram of a square array (mean removed) in BANDS."""
    a = a - a.mean()
    p = np.abs(np.fft.fft2(a)) ** 2 / a.size
    fy = np.fft.fftfreq(a.shape[0])[:, None]
    fx = np.fft.fftfreq(a.shape[1])[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    return {b: float(p[(f >= lo) & (f < hi)].mean()) for b, (lo, hi) in BANDS.items()}


def residual_nps(out, z, clean_mean, params) -> dict:
    y = anscombe(z, params).astype(np.float64)
    r = y - anscombe(out, params)
    n = y - expected_anscombe(clean_mean, params)
    pr, pn = band_power(r), band_power(n)
    return {b: pr[b] / pn[b] for b in BANDS}


def noise_bands(z, clean_mean, params) -> dict:
    """The true noise's band power over its mean power (1 in every band when white)."""
    n = anscombe(z, params) - expected_anscombe(clean_mean, params)
    pn = band_power(np.asarray(n, np.float64))
    var = float(np.var(n))
    return {b: pn[b] / var for b in BANDS}


# ----------------------------------------------------------------------------- phantoms
def phantom_section(args) -> dict:
    from mammo_denoise.physics.phantom import detector_image, make_phantom
    from mammo_denoise.training import TrainConfig
    from mammo_denoise.training.data import _training_phantom

    shape = (512, 512) if not args.quick else (256, 256)
    ref = TrainConfig(phantoms=args.images, phantom_shape=shape, seed=0)
    noisy = []
    for i in range(args.images):
        ph, _ = _training_phantom(ref, i)
        noisy.append((ph.noisy.astype(np.float32), estimate(ph.noisy)))
    runs = {}
    paths = {"start (shipped)": START}
    for name, kw in (("supervised (truth)",
                      dict(phantoms=args.images, phantom_shape=shape, objective="supervised")),
                     ("noisier2noise (noisy only)", dict(images=noisy, objective="noisier2noise")),
                     ("seed protocol", dict(images=noisy, objective="seed", require_improvement=False))):
        path, log = finetune(args, f"phantom-{name.split()[0]}", **kw)
        runs[name] = log
        paths[name] = path if path is not None else START
    models = {k: load(v) for k, v in paths.items()}
    rows = {k: [] for k in models}
    for t in range(args.test):
        ph = make_phantom(seed=9100 + t, shape=shape, view="CC" if t % 2 == 0 else "MLO")
        counts = (ph.truth.astype(np.float64) - ph.params.offset) / ph.params.gain
        z, _ = detector_image(counts, ph.params, TEST_DOSE, rng=[9100, t])
        z = z.astype(np.float64)
        mean = ph.params.offset + TEST_DOSE * (ph.truth.astype(np.float64) - ph.params.offset)
        rng_dn = float(mean[ph.mask].max() - mean[ph.mask].min())
        for k, den in models.items():
            rows[k].append(score(run(den, z, ph.params), z, mean, ph.params, ph.mask, rng_dn))
    table = {k: {m: C.mean_std([r[m] for r in v]) for m in v[0]} for k, v in rows.items()}
    start = np.array([r["noise_removed_db"] for r in rows["start (shipped)"]])
    for k, v in rows.items():
        table[k]["gain_over_start_db"] = C.mean_std(np.array([r["noise_removed_db"] for r in v]) - start)
    sup = np.array([r["noise_removed_db"] for r in rows["supervised (truth)"]])
    n2n = np.array([r["noise_removed_db"] for r in rows["noisier2noise (noisy only)"]])
    kept0 = table["start (shipped)"]["noise_kept"]["mean"]
    return {"shape": list(shape), "test_phantoms": args.test, "runs": runs, "table": table,
            "noisier2noise_minus_supervised_db": C.mean_std(n2n - sup),
            "seed_theory": {
                "noise_kept_converged": kept0 + 0.3 * (1 - kept0),
                "note": "a network converged on the seed's target outputs d*y + (1-d)*E[s|y] with d "
                        "the training dose (0.1-0.5, mean 0.3): it keeps d of the input noise on top "
                        "of what the start keeps (kept0 + d (1 - kept0)); in variance d^2, i.e. d of "
                        "the standard deviation (PHYSICS.md section 7 says sqrt(d))"}}


# ----------------------------------------------------------------------------- mini-MIAS
def film_quanta(film):
    from mammo_denoise.physics.anatomy import film_breast_mask, film_to_quanta

    mask = film_breast_mask(film.film)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    m = 24
    box = (slice(max(rows[0] - m, 0), rows[-1] + m + 1), slice(max(cols[0] - m, 0), cols[-1] + m + 1))
    return film_to_quanta(film.film[box], mask[box], QUANTA, zoom=ZOOM, grain_sigma_px=GRAIN)


def test_region(q, mask, size):
    """The ``size`` square (plus CONTEXT) nearest the breast's centre that lies wholly in it."""
    from scipy import ndimage

    inside = ndimage.binary_erosion(mask, iterations=CONTEXT)
    full = size + 2 * CONTEXT
    ok = ndimage.minimum_filter(inside.astype(np.uint8), size=size, mode="constant", origin=-(size // 2)) > 0
    cand = np.argwhere(ok[: q.shape[0] - size, : q.shape[1] - size])
    if cand.size == 0:
        raise SystemExit("a test film has no region of that size inside the breast")
    cy, cx = np.argwhere(mask).mean(axis=0)
    r, c = cand[np.argmin((cand[:, 0] - cy + size / 2) ** 2 + (cand[:, 1] - cx + size / 2) ** 2)]
    r0, c0 = r - CONTEXT, c - CONTEXT
    win = (slice(r0, r0 + full), slice(c0, c0 + full))
    return q[win], (slice(CONTEXT, CONTEXT + size), slice(CONTEXT, CONTEXT + size))


def mias_section(args) -> dict:
    from mammo_denoise.physics.anatomy import read_film_folder
    from mammo_denoise.physics.correlation import correlated_detector_image, measure_noise_correlation

    train_films = read_film_folder(args.mias, split="train")
    step = max(1, len(train_films) // args.images)
    train_films = train_films[::step][: args.images]
    test_films = read_film_folder(args.mias, split="test")[: args.test]
    quanta = [film_quanta(f) for f in train_films]
    tests = []
    for f in test_films:
        q, mask = film_quanta(f)
        qr, inner = test_region(q, mask, args.size)
        tests.append((f.ref, qr, inner))
    out = {"train_films": [f.ref for f in train_films], "test_films": [t[0] for t in tests],
           "train_sizes": [list(q.shape) for q, _ in quanta], "detector": CLINIC._asdict()
           if hasattr(CLINIC, "_asdict") else {"offset": CLINIC.offset, "gain": CLINIC.gain,
                                               "electronic_sigma": CLINIC.electronic_sigma},
           "quanta_range": list(QUANTA), "pitch_um": 200 / ZOOM, "cases": {}}
    shipped = load(START)
    for case, rho in (("white", 0.0), ("correlated", RHO)):
        print(f" mini-MIAS, {case} detector", flush=True)
        imgs = []
        for i, (q, _) in enumerate(quanta):
            z = correlated_detector_image(q, CLINIC, 1.0, rng=[7, i, int(rho * 100)], rho1=rho)
            imgs.append((z, estimate(z)))
        measured = [measure_noise_correlation(z, CLINIC) for z, _ in imgs]
        runs, paths = {}, {}
        plans = [("noisier2noise", dict(images=imgs)),
                 (f"R2R (a = {R2R_A:g})", dict(images=imgs, require_improvement=False, r2r=True))]
        if case == "correlated":
            plans += [("noisier2noise, white added noise", dict(images=imgs, noise_correlation="white")),
                      ("seed protocol", dict(images=imgs, objective="seed", require_improvement=False))]
        for name, kw in plans:
            tag = f"mias-{case}-{name.split(',')[0].split()[0]}" + ("-white" if "white added" in name else "")
            if kw.pop("r2r", False):
                with r2r_batches():
                    path, log = finetune(args, tag, **kw)
            else:
                path, log = finetune(args, tag, **kw)
            runs[name] = log
            paths[name] = path
        models = {"start (shipped)": shipped}
        models.update({k: (load(v) if v is not None else shipped) for k, v in paths.items()})
        rows = {k: [] for k in models}
        rows["noisier2noise + safeguard"] = []
        rows["start (shipped), true parameters"] = []
        nps = {k: [] for k in rows}
        bands = []
        for t, (ref, q, inner) in enumerate(tests):
            z = correlated_detector_image(q, CLINIC, TEST_DOSE, rng=[8, t, int(rho * 100)], rho1=rho)
            z = z.astype(np.float64)
            mean = CLINIC.offset + CLINIC.gain * TEST_DOSE * q.astype(np.float64)
            region = np.zeros(z.shape, bool)
            region[inner] = True
            rng_dn = float(mean[inner].max() - mean[inner].min())
            est = estimate(z)
            outs = {k: run(den, z, est) for k, den in models.items()}
            outs["noisier2noise + safeguard"] = run(models["noisier2noise"], z, est, safeguard=True)
            outs["start (shipped), true parameters"] = run(shipped, z, CLINIC)
            for k, o in outs.items():
                rows[k].append(score(o, z, mean, CLINIC, region, rng_dn))
                nps[k].append(residual_nps(o[inner], z[inner], mean[inner], CLINIC))
            bands.append(noise_bands(z[inner], mean[inner], CLINIC))
        table = {k: {m: C.mean_std([r[m] for r in v]) for m in v[0]} for k, v in rows.items()}
        start = np.array([r["noise_removed_db"] for r in rows["start (shipped)"]])
        for k, v in rows.items():
            table[k]["gain_over_start_db"] = C.mean_std(np.array([r["noise_removed_db"] for r in v]) - start)
            table[k]["residual_nps_ratio"] = {b: float(np.mean([x[b] for x in nps[k]])) for b in BANDS}
        out["cases"][case] = {
            "rho1": rho, "runs": runs, "table": table,
            "noise_band_power": {b: float(np.mean([x[b] for x in bands])) for b in BANDS},
            "measured_with_true_parameters": [m.as_dict() for m in measured],
        }
    # "Flat within 10 % of white": the fine-tuned model's residual NPS ratio on the correlated
    # detector, band by band, against the shipped model's on the white detector.
    ref = out["cases"]["white"]["table"]["start (shipped)"]["residual_nps_ratio"]
    for k in ("start (shipped)", "noisier2noise", "noisier2noise, white added noise"):
        got = out["cases"]["correlated"]["table"].get(k, {}).get("residual_nps_ratio")
        if got:
            out["cases"]["correlated"]["table"][k]["residual_nps_vs_white"] = {
                b: got[b] / ref[b] - 1.0 for b in BANDS}
    return out


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    C.set_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    payload = {"settings": {"images": args.images, "epochs": args.epochs, "iters_per_epoch": args.iters,
                            "batch_size": args.batch, "patch": args.patch, "test": args.test,
                            "size": args.size, "dose_range": [0.1, 0.5], "test_dose": TEST_DOSE,
                            "start_model": START, "quick": args.quick}}
    if args.only in (None, "phantoms"):
        print("phantoms", flush=True)
        payload["phantoms"] = phantom_section(args)
    if args.only in (None, "mias"):
        print("mini-MIAS", flush=True)
        payload["mias"] = mias_section(args)
    name = "finetune_real" + ("_quick" if args.quick else "")
    C.write_result(name, payload, started, args.out)


if __name__ == "__main__":
    main()
