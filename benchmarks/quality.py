"""Table 1 of the first seed (Eckert et al. 2019) redone on held-out phantoms.

    python benchmarks/quality.py --phantoms 20 --size 512

Each test phantom (seeds 10_000 + i, never used in training) is generated at full dose; the
input at ``--dose`` (default 0.2, the seed's 80 % reduction) is the same image with photons
removed by binomial thinning of its known counts. Every method runs as on the whole frame
(networks with the frame's Anscombe shift, all with 64 px of real image around the crop:
``common.denoise_case``). Scored inside a ``--size`` crop that lies
wholly inside the breast (unsaturated, no pectoral muscle) and holds as many calcifications as
possible, or over the eroded breast of whole phantoms with ``--size 0``:

(a) against the noise-free truth at that dose;
(b) against the full-dose noisy image mapped to the low-dose signal level,
    ``offset + dose * (z_full - offset)`` (the seed's protocol, in the same units).

Columns: PSNR and SSIM (data range = range of the truth in the scored region, the same for
every method), sigma_image (std in the flattest fatty 32x32 window, divided by the same range),
calcification contrast ratio (mean contrast at the known positions over the truth's) and CNR;
and the contrast ratio and CNR pooled over all phantoms' calcifications by size
(``CALC_SIZE_CLASSES``): small calcifications carry the detectability limit that the per-phantom
mean hides, and their CNR says whether a method that shrinks their contrast still leaves them
more visible than the noisy input does.
sigma_image is measured after removing a least-squares plane from the window
(``metrics.flat_region_sigma``), so it is the noise, not the slow anatomy.

(c) The strength trade-off: the default model and BM3D at ``--strengths`` below 1
(``inference.apply_strength``: ``noisy + s * (denoised - noisy)``), computed from the same
outputs, to show what calcification contrast costs in PSNR for each.

``--carry LABEL ...`` copies those models' rows from the previous ``results/<name>.json`` instead
of running them (weights that are no longer on this machine, or that are too slow to rerun for a
new row). The rows are only comparable if nothing that scores them changed, so carrying is refused
unless every method the two runs share (the noisy input, BM3D, and each model with the same
weights sha256) scores the same on every phantom, within ``CARRY_TOLERANCE_DB``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

from mammo_denoise.inference import apply_strength  # noqa: E402


CARRY_TOLERANCE_DB = 1e-6
SETTINGS_THAT_SCORE = ("phantoms", "seeds", "size", "phantom_shape", "dose", "tile")
CALC_SIZE_CLASSES = {"0.1-0.2 mm": (0.0, 0.2), "0.2-0.5 mm": (0.2, np.inf)}


def strength_label(method: str, strength: float) -> str:
    return f"{method} at strength {strength:g}"


def calc_by_size(rows_method, rows_truth) -> dict:
    """Mean contrast over the truth's, pooled over phantoms, per calcification size class."""
    d = np.concatenate([r["calc_diameters_mm"] for r in rows_truth]) if rows_truth else np.array([])
    t = np.concatenate([r["calc_contrasts"] for r in rows_truth]) if rows_truth else np.array([])
    c = np.concatenate([r["calc_contrasts"] for r in rows_method]) if rows_method else np.array([])
    k = np.concatenate([r["calc_cnrs"] for r in rows_method]) if rows_method else np.array([])
    out = {}
    for label, (lo, hi) in CALC_SIZE_CLASSES.items():
        sel = (d >= lo) & (d < hi)
        out[label] = {"n": int(sel.sum()),
                      "ratio": float(c[sel].mean() / t[sel].mean()) if sel.any() else None,
                      "cnr": float(np.nanmean(k[sel])) if sel.any() and np.isfinite(k[sel]).any() else None}
    return out


def _where(previous: dict) -> str:
    return f"results/{previous.get('benchmark', 'quality')}.json of {previous.get('date')}"


def check_carry(previous: dict, labels: list[str], settings: dict, run_labels: list[str]) -> None:
    """Before any work: the previous run was scored the same way and has the rows asked for."""
    where = _where(previous)
    for key in SETTINGS_THAT_SCORE:
        if previous["settings"].get(key) != settings[key]:
            raise SystemExit(f"--carry: {where} was run with {key}={previous['settings'].get(key)}, "
                             f"this run with {settings[key]}")
    prev_models = {m["label"]: m for m in previous.get("models", [])}
    missing = [lab for lab in labels if lab not in previous["per_phantom"] or lab not in prev_models]
    if missing:
        raise SystemExit(f"--carry: {where} has no model row {', '.join(missing)}")
    clash = [lab for lab in labels if lab in run_labels]
    if clash:
        raise SystemExit(f"--carry: {', '.join(clash)} also run in this run; rename it or drop it from --carry")


def carry_rows(previous: dict, labels: list[str], per: dict, settings: dict, models: list[dict]) -> list[dict]:
    """The previous run's rows for ``labels``, verified comparable with this run (module docstring).

    Returns their model descriptions, each with ``carried_from``; adds their per-phantom rows to
    ``per``. Raises SystemExit naming what differs.
    """
    where = _where(previous)
    prev_models = {m["label"]: m for m in previous.get("models", [])}

    # Pair this run's methods with the previous run's: by name for the model-free methods, by
    # weights for the models (a label may now name other weights).
    prev_by_sha = {m["sha256"]: m["label"] for m in prev_models.values() if m.get("sha256")}
    pairs = [(m, m) for m in ("Noisy", C.GAUSSIAN, C.BM3D) if m in per and m in previous["per_phantom"]]
    pairs += [(m["label"], prev_by_sha[m["sha256"]]) for m in models if m.get("sha256") in prev_by_sha]
    if not any(now in {m["label"] for m in models} for now, _ in pairs):
        raise SystemExit(f"--carry: no model of this run has the same weights as one in {where}, so "
                         "nothing shows the inference path scores as it did; add one of its models")
    for now, before in pairs:
        for a, b in zip(per[now], previous["per_phantom"][before]):
            if abs(a["psnr"] - b["psnr"]) > CARRY_TOLERANCE_DB:
                raise SystemExit(f"--carry: {now} scores {a['psnr']:.6f} dB on phantom {a['seed']} against "
                                 f"{b['psnr']:.6f} dB in {where} (as {before}); what scores the rows changed, "
                                 "so rerun the carried models instead")
    verified = [now if now == before else f"{now} (was {before})" for now, before in pairs]
    print(f"--carry: {len(pairs)} shared methods score identically on {settings['phantoms']} phantoms: "
          f"{', '.join(verified)}")
    carried = []
    for lab in labels:
        per[lab] = previous["per_phantom"][lab]
        # A row carried twice keeps the date of the run that computed it.
        origin = prev_models[lab].get("carried_from") or {"date": previous.get("date"),
                                                          "git_head": previous.get("git_head")}
        carried.append(dict(prev_models[lab], carried_from={
            "date": origin["date"], "git_head": origin["git_head"], "verified_by": verified}))
    return carried


def score(img, case: C.Case, truth_contrast, full_contrast) -> dict:
    r = case.region
    R = case.data_range
    out = {
        "psnr": C.psnr(img, case.truth, R, r),
        "ssim": C.ssim(img, case.truth, R, r),
        "psnr_full": C.psnr(img, case.full_mapped, R, r),
        "ssim_full": C.ssim(img, case.full_mapped, R, r),
        "sigma_image": C.flat_sigma(img, case.flat) / R,
    }
    if case.calcs:
        c = C.calc_contrast(img, case)
        out["calc_contrast"] = float(np.mean(c))
        out["calc_contrast_ratio"] = float(np.mean(c) / np.mean(truth_contrast))
        out["calc_contrast_ratio_full"] = float(np.mean(c) / np.mean(full_contrast))
        cnrs = C.calc_cnr(img, case)
        out["cnr"] = float(np.mean(cnrs))
        out["calc_cnrs"] = cnrs.tolist()
        out["calc_contrasts"] = c.tolist()
        out["calc_diameters_mm"] = [k.diameter_mm for k in case.calcs]
    return out


def main(argv=None):
    ap = C.parser(__doc__, "no_bm3d", "allow_untrained", phantoms=20, size=512,
                  phantom_shape=(1024, 1024), dose=0.2, seed0=C.TEST_SEED0, models=None, threads=None,
                  name="quality")
    ap.add_argument("--default-model", help="label of the model the bar applies to")
    ap.add_argument("--tile", type=int, default=0, help="inference tile (0 = whole crop in one pass)")
    ap.add_argument("--examples", type=int, default=1, help="phantoms drawn as PNG panels")
    ap.add_argument("--carry", nargs="*", default=[], metavar="LABEL",
                    help="model rows copied from the previous results/<name>.json, not run (see above)")
    ap.add_argument("--strengths", type=float, nargs="*", default=[0.9, 0.8, 0.7],
                    help="strengths below 1 scored for the default model and BM3D (section (c))")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    threads = C.set_threads(args.threads)
    previous = C.load_result(args.name) if args.carry else None

    specs = C.parse_models(args.models, args.allow_untrained)
    default = C.default_model_spec(specs, args.default_model) if specs else None
    use_bm3d = C.use_bm3d(args)
    seeds = C.test_seeds(args)
    print(f"{len(seeds)} phantoms {args.phantom_shape}, crop {args.size}, dose {args.dose}; "
          f"models: {[s.label for s in specs]}; default: {default.label if default else None}; "
          f"threads {threads}")
    tile = args.tile or None
    settings = {"phantoms": args.phantoms, "seeds": [seeds[0], seeds[-1]], "size": args.size,
                "phantom_shape": list(args.phantom_shape), "dose": args.dose, "tile": tile,
                "threads": threads, "views": "CC for even seeds, MLO for odd",
                "input": "binomial thinning of the phantom's full-dose photon counts (exact Poisson-Gaussian)",
                "params": "true detector NoiseParams passed to every method",
                "reference_b": "offset + dose * (z_full - offset)",
                "metrics_source": C.METRICS_SOURCE}
    if args.carry:
        check_carry(previous, args.carry, settings, [s.label for s in specs])
    denoisers = C.load_all(specs)

    methods = ["Noisy", C.GAUSSIAN] + ([C.BM3D] if use_bm3d else []) + list(denoisers)
    refs = ["Truth (noise-free)", "Full dose (mapped to low-dose level)"]
    blend_bases = [m for m in (default.label if default else None, C.BM3D if use_bm3d else None) if m]
    blends = [strength_label(m, st) for m in blend_bases for st in args.strengths]
    per = {m: [] for m in refs + methods + blends}
    times = {m: [] for m in methods}
    examples = []
    for i, seed in enumerate(seeds):
        case = C.make_case(seed, args.dose, args.phantom_shape, args.size)
        tc = C.calc_contrast(case.truth, case) if case.calcs else None
        fc = C.calc_contrast(case.full_mapped, case) if case.calcs else None
        outs = {"Truth (noise-free)": case.truth, "Full dose (mapped to low-dose level)": case.full_mapped}
        for m in methods:
            t = C.timer()
            out = C.denoise_case(m, case, denoisers.get(m), tile=tile)
            times[m].append(t())
            outs[m] = out
        scored = dict(outs)
        for m in blend_bases:
            for st in args.strengths:
                scored[strength_label(m, st)] = apply_strength(outs["Noisy"], outs[m], st)
        for m, out in scored.items():
            s = score(out, case, tc, fc)
            s["seed"] = seed
            s["n_calcs"] = len(case.calcs)
            s["region_fraction"] = float(case.region.mean())
            per[m].append(s)
        if i < args.examples:
            examples.append((case, {k: outs[k] for k in ["Truth (noise-free)", "Full dose (mapped to low-dose level)"] + methods}))
        line = "  ".join(f"{m.split(' ')[0]} {per[m][-1]['psnr']:.2f}/{per[m][-1]['ssim']:.3f}" for m in methods)
        print(f"[{i + 1}/{len(seeds)}] seed {seed} crop {case.crop} calcs {len(case.calcs)}: {line}", flush=True)

    models = [s.describe() for s in specs]
    if args.carry:
        models += carry_rows(previous, args.carry, per, settings, models)
        methods += args.carry

    keys = ["psnr", "ssim", "sigma_image", "calc_contrast_ratio", "cnr", "psnr_full", "ssim_full",
            "calc_contrast_ratio_full"]
    summary = {m: {k: C.mean_std([r.get(k) for r in per[m]]) for k in keys} for m in per}
    for m in methods:
        # A carried row's time came from another run, on a machine that may have run faster or
        # slower: times compare only within one run, so it gets none.
        summary[m]["time_s"] = C.mean_std(times.get(m, []))
    with_calcs = [i for i, r in enumerate(per["Truth (noise-free)"]) if "calc_contrasts" in r]
    for m in per:
        summary[m]["calc_by_size"] = calc_by_size([per[m][i] for i in with_calcs],
                                                  [per["Truth (noise-free)"][i] for i in with_calcs])

    bar = None
    if default is not None and use_bm3d:
        d, b = per[default.label], per[C.BM3D]
        dpsnr = [x["psnr"] - y["psnr"] for x, y in zip(d, b)]
        dssim = [x["ssim"] - y["ssim"] for x, y in zip(d, b)]
        ratio = summary[default.label]["calc_contrast_ratio"]["mean"]
        bar = {
            "model": default.label,
            "psnr_minus_bm3d": C.mean_std(dpsnr),
            "ssim_minus_bm3d": C.mean_std(dssim),
            "psnr_pass": float(np.mean(dpsnr)) >= C.PHANTOM_PSNR_BAR_DB,
            "ssim_pass": summary[default.label]["ssim"]["mean"] >= summary[C.BM3D]["ssim"]["mean"],
            "calc_contrast_ratio": ratio,
            "calc_pass": ratio is not None and ratio >= 0.9,
        }
        for k, label in (("psnr_pass", f"PSNR >= BM3D + {C.PHANTOM_PSNR_BAR_DB:g} dB"), ("ssim_pass", "SSIM >= BM3D"),
                         ("calc_pass", "calcification contrast >= 90 % of truth")):
            print(f"{'PASS' if bar[k] else 'FAIL'}: {label} ({default.label})")

    png = plot_examples(examples, args.name) if examples else None
    seed_check = C.check_seed_disjoint(specs, seeds)
    C.write_result(args.name, {
        "settings": settings,
        "models": models,
        "default_model": default.label if default else None,
        "seed_disjoint": seed_check,
        "methods": methods,
        "references": refs,
        "strengths": {"values": list(args.strengths), "methods": blend_bases, "labels": blends},
        "summary": summary,
        "bar": bar,
        "seed_table1": {k: list(v) for k, v in C.SEED_TABLE1.items()},
        "seed_table1_notes": C.SEED_TABLE1_NOTES,
        "per_phantom": per,
        "png": png,
    }, started)
    print_table(summary, methods, refs)


def print_table(summary, methods, refs):
    def f(d, k, digits=2):
        v = d[k]["mean"] if isinstance(d.get(k), dict) else None
        return "n/a" if v is None else f"{v:.{digits}f}"

    print(f"{'method':42s} {'PSNR':>14s} {'SSIM':>14s} {'sigma':>8s} {'calcC':>6s} {'PSNRfull':>9s} {'t[s]':>7s}")
    for m in refs + methods:
        s = summary[m]
        print(f"{m[:42]:42s} {C.fmt_ms(s['psnr']):>14s} {C.fmt_ms(s['ssim'], 3):>14s} "
              f"{f(s, 'sigma_image', 4):>8s} {f(s, 'calc_contrast_ratio'):>6s} "
              f"{f(s, 'psnr_full'):>9s} {f(s, 'time_s'):>7s}")


def plot_examples(examples, name):
    paths = []
    for case, outs in examples:
        # Zoom on the calcification cluster if there is one, else the centre.
        h, w = case.truth.shape
        if case.calcs:
            rc = np.median([[k.row, k.col] for k in case.calcs], axis=0)
        else:
            rc = np.array([h / 2, w / 2])
        z = min(128, h, w)
        r0 = int(np.clip(rc[0] - z / 2, 0, h - z))
        c0 = int(np.clip(rc[1] - z / 2, 0, w - z))
        sl = (slice(r0, r0 + z), slice(c0, c0 + z))
        lo, hi = np.percentile(case.truth[sl], [0.5, 99.5])
        n = len(outs)
        cols = min(n, 4)
        rows = -(-n // cols)
        fig, axes = C.figure(rows, cols, figsize=(3.2 * cols, 3.7 * rows))
        for ax in np.atleast_1d(axes).ravel():
            ax.axis("off")
        for ax, (label, img) in zip(np.atleast_1d(axes).ravel(), outs.items()):
            # MONOCHROME1 phantom data: high values (less attenuation) displayed dark.
            ax.imshow(img[sl], cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(label[:30], fontsize=8)
            if label.startswith("Truth"):  # mark the calcifications once, leave the others clean
                for k in case.calcs:
                    if r0 <= k.row < r0 + z and c0 <= k.col < c0 + z:
                        ax.plot(k.col - c0, k.row - r0, "o", mfc="none", mec="orange", ms=14, mew=0.6)
        fig.suptitle(f"phantom seed {case.seed}, dose {case.dose:g}, crop {case.crop}, zoom {z}px", fontsize=9)
        fig.tight_layout(h_pad=1.5)
        paths.append(C.save_figure(fig, f"{name}_example_{case.seed}"))
    return paths


if __name__ == "__main__":
    main()
