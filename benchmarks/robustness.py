"""The default model on detectors and data it was not trained on.

    python benchmarks/robustness.py --phantoms 4 --size 512

The input is an independent Poisson-Gaussian realisation at the dose (``Phantom.generate_noisy``);
the crop is chosen once per phantom at the training detector and kept for every setting, so
rows differ only in the detector (16-bit read-out, so that nothing clips and the scored
pixels are the same in every row). One factor at a time around the training detector (``make_phantom``'s defaults, read at run
time: offset 50 DN, gain 0.25 DN/quantum, sigma_e 3 DN, 3000 photons/pixel at full dose when
this was written): gain default, 1, 2, 4; offset 0, 50, 200; sigma_e 1, 3, 10; full-dose photons
1000, 3000, 6000; all at dose --dose (0.2). Noise parameters are
*estimated* from the whole low-dose image (``estimate_noise_params``, as ``denoise`` does when
none are given) and passed to ``denoise`` on the crop; the run with the true parameters is
reported beside it, so estimation error and model generalisation can be told apart.

FOR PRESENTATION: the low-dose raw image log-transformed and windowed like a processed
display image, ``v = 4095 * clip((log(hi) - log(z - offset)) / (log(hi) - log(lo)), 0, 1)``
rounded (12 bits, MONOCHROME2, calcifications bright; ``lo``/``hi`` the 0.5/99.5 percentiles
of the truth's signal in the breast), passed with a FOR PRESENTATION / LOG ``MammogramMeta`` and
no parameters: the documented fallback (warning; noise model fitted to the image itself,
Gaussian if degenerate). Scored against the truth put through the same transform.

Gains are metric(denoised) - metric(noisy) against the noise-free truth, mean +- std over phantoms.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

#: 16-bit read-out so that no setting clips inside the crop (gain 4 or 6000 photons would saturate
#: a 14-bit detector near the skin line even at 20 % dose): every row is scored on the same pixels.
BITS = 16


def _phantom_defaults() -> dict:
    """The detector of ``make_phantom``'s defaults: what phantom-trained models were trained on."""
    import inspect

    from mammo_denoise.physics.phantom import make_phantom

    sig = inspect.signature(make_phantom).parameters
    return {k: float(sig[k].default) for k in ("gain", "offset", "electronic_sigma", "photons")}


BASE = _phantom_defaults()
SWEEP = {"gain": tuple(sorted({BASE["gain"], 1.0, 2.0, 4.0})), "offset": (0.0, 50.0, 200.0),
         "electronic_sigma": (1.0, 3.0, 10.0), "photons": (1000.0, 3000.0, 6000.0)}


def configs():
    seen = []
    for key, values in SWEEP.items():
        for v in values:
            cfg = dict(BASE, **{key: v})
            if cfg not in seen:
                seen.append(cfg)
    return seen


def presentation(z, offset, lo, hi):
    s = np.maximum(np.asarray(z, np.float64) - offset, 1.0)
    v = (np.log(hi) - np.log(s)) / (np.log(hi) - np.log(lo))
    return np.rint(4095.0 * np.clip(v, 0.0, 1.0)).astype(np.float32)


def main(argv=None):
    ap = C.parser(__doc__, "allow_untrained", phantoms=4, size=512, phantom_shape=(1024, 1024),
                  dose=0.2, seed0=C.TEST_SEED0 + 500, model=None, threads=None, name="robustness")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    threads = C.set_threads(args.threads)
    spec, den = C.load_default_model(args.model, args.allow_untrained)
    from mammo_denoise.io.meta import FOR_PRESENTATION, MG_FOR_PRESENTATION_SOP
    from mammo_denoise.physics.noise import estimate_noise_params

    seeds = C.test_seeds(args)
    print(f"model {spec.label}; {len(seeds)} phantoms; threads {threads}")
    # The same anatomy (crop) for every detector setting: chosen once at the training detector.
    origins = {sd: C.make_case(sd, args.dose, args.phantom_shape, args.size).crop[:2] for sd in seeds}
    rows = []
    for cfg in configs() + ["FOR PRESENTATION"]:
        rec = {k: [] for k in ("psnr_noisy", "ssim_noisy", "psnr_gain", "ssim_gain", "psnr_gain_known",
                               "ssim_gain_known", "est_gain", "est_offset", "est_sigma_e", "est_failed")}
        warned = []
        for seed in seeds:
            kw = BASE if cfg == "FOR PRESENTATION" else cfg
            case = C.make_case(seed, args.dose, args.phantom_shape, args.size, input_mode="fresh",
                               crop_origin=origins[seed],
                               phantom_kw={"gain": kw["gain"], "offset": kw["offset"], "bits": BITS,
                                           "electronic_sigma": kw["electronic_sigma"], "photons": kw["photons"]})
            R, reg = case.data_range, case.region
            if cfg == "FOR PRESENTATION":
                sig = case.truth[reg] - case.params.offset
                lo, hi = np.percentile(sig, [0.5, 99.5])
                noisy = presentation(case.low, case.params.offset, lo, hi)
                truth = presentation(case.truth, case.params.offset, lo, hi).astype(np.float64)
                # the exact transform of the truth, not rounded
                s = np.maximum(case.truth.astype(np.float64) - case.params.offset, 1.0)
                truth = 4095.0 * np.clip((np.log(hi) - np.log(s)) / (np.log(hi) - np.log(lo)), 0, 1)
                R = float(truth[reg].max() - truth[reg].min())
                meta = replace(case.meta, presentation_intent=FOR_PRESENTATION, sop_class_uid=MG_FOR_PRESENTATION_SOP,
                               pixel_intensity_relationship="LOG", photometric_interpretation="MONOCHROME2")
                from mammo_denoise.inference import denoise

                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    out = np.asarray(denoise(noisy, model=den, params=None, meta=meta, device="cpu", tile=None))
                warned += [str(x.message)[:120] for x in w]
                out_known = None
            else:
                noisy, truth = case.low, case.truth
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        est = estimate_noise_params(case.low_whole)
                    rec["est_gain"].append(est.gain)
                    rec["est_offset"].append(est.offset)
                    rec["est_sigma_e"].append(est.electronic_sigma)
                    rec["est_failed"].append(0)
                    out = C.run_model(den, noisy, est)
                except Exception as exc:  # noqa: BLE001  (estimation failure is a result)
                    rec["est_failed"].append(1)
                    warned.append(f"estimation failed: {exc}"[:160])
                    out = None
                out_known = C.run_model(den, noisy, case.params)
            p0 = C.psnr(noisy, truth, R, reg)
            s0 = C.ssim(noisy, truth, R, reg)
            rec["psnr_noisy"].append(p0)
            rec["ssim_noisy"].append(s0)
            if out is not None:
                rec["psnr_gain"].append(C.psnr(out, truth, R, reg) - p0)
                rec["ssim_gain"].append(C.ssim(out, truth, R, reg) - s0)
            if out_known is not None:
                rec["psnr_gain_known"].append(C.psnr(out_known, truth, R, reg) - p0)
                rec["ssim_gain_known"].append(C.ssim(out_known, truth, R, reg) - s0)
        row = {"config": cfg if isinstance(cfg, str) else dict(cfg),
               "is_training_detector": cfg == BASE,
               **{k: C.mean_std(v) for k, v in rec.items()}, "warnings": sorted(set(warned))}
        rows.append(row)
        label = cfg if isinstance(cfg, str) else ", ".join(f"{k} {v:g}" for k, v in cfg.items())
        kg = row["psnr_gain_known"]["mean"]
        print(f"{label:60s} noisy {row['psnr_noisy']['mean']:.2f} dB  gain(est) "
              f"{row['psnr_gain']['mean'] if row['psnr_gain']['mean'] is not None else float('nan'):+.2f} dB / "
              f"{row['ssim_gain']['mean'] if row['ssim_gain']['mean'] is not None else float('nan'):+.3f}  "
              f"gain(known) {kg if kg is not None else float('nan'):+.2f} dB", flush=True)
    C.write_result(args.name, {
        "settings": {"phantoms": args.phantoms, "seeds": [seeds[0], seeds[-1]], "size": args.size,
                     "phantom_shape": list(args.phantom_shape), "dose": args.dose, "threads": threads,
                     "base": BASE, "bits": BITS, "sweep": {k: list(v) for k, v in SWEEP.items()},
                     "params": "estimated with estimate_noise_params on the whole low-dose image; "
                               "'known' = true NoiseParams",
                     "metrics_source": C.METRICS_SOURCE},
        "model": spec.describe(),
        "seed_disjoint": C.check_seed_disjoint([spec], seeds),
        "rows": rows,
    }, started)


if __name__ == "__main__":
    main()
