"""PSNR / SSIM gain over the noisy input across dose fractions: default model vs BM3D.

    python benchmarks/dose_sweep.py --phantoms 6 --size 512

Same protocol as quality.py (held-out seeds 10_000+, binomial thinning of the phantom's counts,
every method run as on the whole frame, crop inside the breast, scored against the noise-free truth at each dose, true NoiseParams).
Gain = metric(method) - metric(noisy) per phantom, mean +- std over phantoms. The Gaussian
filter in the Anscombe domain is included (it costs nothing). Writes results/<name>.json and
results/<name>.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

DEFAULT_FRACTIONS = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8)


def main(argv=None):
    ap = C.parser(__doc__, "no_bm3d", "allow_untrained", phantoms=6, size=512,
                  phantom_shape=(1024, 1024), seed0=C.TEST_SEED0, model=None, threads=None,
                  name="dose_sweep")
    ap.add_argument("--fractions", type=float, nargs="+", default=DEFAULT_FRACTIONS)
    ap.add_argument("--replot", action="store_true", help="redraw the PNG from results/<name>.json")
    args = ap.parse_args(argv)
    if args.replot:
        doc = C.load_result(args.name)
        print(plot(doc["rows"], doc["settings"]["fractions"], doc["methods"], args.name, doc["model"]["label"]))
        return
    started = time.perf_counter()
    threads = C.set_threads(args.threads)

    spec, den = C.load_default_model(args.model, args.allow_untrained)
    use_bm3d = C.use_bm3d(args)
    methods = [C.GAUSSIAN] + ([C.BM3D] if use_bm3d else []) + [spec.label]
    seeds = C.test_seeds(args)
    print(f"model {spec.label}; fractions {args.fractions}; {len(seeds)} phantoms; threads {threads}")

    rows = {}
    for d in args.fractions:
        rec = {m: {"psnr_gain": [], "ssim_gain": [], "psnr": [], "ssim": [], "time_s": []} for m in methods}
        rec["Noisy"] = {"psnr": [], "ssim": []}
        for seed in seeds:
            case = C.make_case(seed, d, args.phantom_shape, args.size)
            p0 = C.psnr(case.low, case.truth, case.data_range, case.region)
            s0 = C.ssim(case.low, case.truth, case.data_range, case.region)
            rec["Noisy"]["psnr"].append(p0)
            rec["Noisy"]["ssim"].append(s0)
            for m in methods:
                t = C.timer()
                out = C.denoise_case(m, case, den)
                rec[m]["time_s"].append(t())
                p = C.psnr(out, case.truth, case.data_range, case.region)
                s = C.ssim(out, case.truth, case.data_range, case.region)
                rec[m]["psnr"].append(p)
                rec[m]["ssim"].append(s)
                rec[m]["psnr_gain"].append(p - p0)
                rec[m]["ssim_gain"].append(s - s0)
        rows[str(d)] = {m: {k: C.mean_std(v) for k, v in r.items()} for m, r in rec.items()}
        if use_bm3d:
            rows[str(d)]["model_minus_bm3d"] = {
                k: C.mean_std([a - b for a, b in zip(rec[spec.label][k], rec[C.BM3D][k])])
                for k in ("psnr", "ssim")}
        rows[str(d)]["per_phantom"] = rec
        print(f"dose {d:g}: " + "  ".join(
            f"{m.split(' ')[0]} {rows[str(d)][m]['psnr_gain']['mean']:+.2f} dB / {rows[str(d)][m]['ssim_gain']['mean']:+.3f}"
            for m in methods), flush=True)

    png = plot(rows, args.fractions, methods, args.name, spec.label)
    C.write_result(args.name, {
        "settings": {"phantoms": args.phantoms, "seeds": [seeds[0], seeds[-1]], "size": args.size,
                     "phantom_shape": list(args.phantom_shape), "fractions": list(args.fractions),
                     "threads": threads, "params": "true NoiseParams", "reference": "noise-free truth at each dose",
                     "metrics_source": C.METRICS_SOURCE},
        "model": spec.describe(),
        "seed_disjoint": C.check_seed_disjoint([spec], seeds),
        "methods": methods,
        "rows": rows,
        "png": png,
    }, started)


def plot(rows, fractions, methods, name, model_label):
    from matplotlib.ticker import NullLocator

    fig, axes = C.figure(1, 2, figsize=(10, 4))
    for ax, key, unit in ((axes[0], "psnr_gain", "PSNR gain over noisy [dB]"),
                          (axes[1], "ssim_gain", "SSIM gain over noisy")):
        for m in methods:
            mu = np.array([rows[str(d)][m][key]["mean"] for d in fractions])
            sd = np.array([rows[str(d)][m][key]["std"] for d in fractions])
            ax.errorbar(fractions, mu, yerr=sd, marker="o", capsize=3, label=m)
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(fractions)
        ax.set_xticklabels([f"{d:g}" for d in fractions])
        ax.set_xlabel("dose fraction")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Dose sweep: {model_label} vs BM3D (mean ± std over phantoms)", fontsize=10)
    fig.tight_layout()
    return C.save_figure(fig, name)


if __name__ == "__main__":
    main()
