"""Regenerate BENCHMARKS.md from benchmarks/results/*.json (and benchmarks/readings/*.md).

    python benchmarks/report.py

Every table comes from a result JSON; a benchmark without one is listed as pending with its
command. The short readings of the numbers are hand-written in ``benchmarks/readings/<name>.md``
and included verbatim (they are only valid for the JSON they were written against: each
reading names the date of the run it discusses).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

READINGS = Path(__file__).resolve().parent / "readings"
OUT = C.ROOT / "BENCHMARKS.md"

#: Rough wall time of each benchmark on the 2-core CPU.
SIZES = {
    "real_anatomy": "~25 min (BM3D; `--cache` keeps its outputs)",
    "noise_real_anatomy": "~1 min",
    "quality": "~10 min",
    "dose_sweep": "~14 min",
    "nps": "~2 min",
    "speed": "~15 min, quiet machine",
    "robustness": "~3 min",
    "field_edge": "~2 min",
    "cuda_check_agreement": "~8 min on a GPU",
    "finetune_real": "~5 min idle, ~18 min shared",
}

COMMANDS = {
    "real_anatomy": "python benchmarks/real_anatomy.py --models default --true-params",
    "noise_real_anatomy": "python benchmarks/noise_real_anatomy.py",
    "quality": "python benchmarks/quality.py --phantoms 20 --size 512",
    "dose_sweep": "python benchmarks/dose_sweep.py --phantoms 6 --size 512",
    "nps": "python benchmarks/nps.py --slab 1024 --phantoms 3 --size 256 --realisations 4",
    "speed": "python benchmarks/speed.py --models mammo-unet=default --timing-architectures dncnn eckert-resnet cae",
    "robustness": "python benchmarks/robustness.py --phantoms 4 --size 512",
    "field_edge": "python benchmarks/field_edge.py --phantoms 6",
    "finetune_real": "python benchmarks/finetune_real.py",
    "cuda_check_agreement": "python benchmarks/cuda_check.py --part speed; python benchmarks/cuda_check.py --part agreement; python benchmarks/cuda_check.py --part layout",
}


PREFIX = ""
#: real_anatomy.py's label for BM3D given the true detector parameters.
BM3D_TRUE = "BM3D (GAT, true parameters)"


def load(name):
    p = C.RESULTS / f"{PREFIX}{name}.json"
    if not p.exists():
        return None
    return json.loads(p.read_text())


def v(d, k="mean", digits=2, signed=False):
    if d is None:
        return "n/a"
    x = d.get(k) if isinstance(d, dict) else d
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def ms(d, digits=2, signed=False):
    if not d or d.get("mean") is None:
        return "n/a"
    m = f"{d['mean']:+.{digits}f}" if signed else f"{d['mean']:.{digits}f}"
    return f"{m} ± {d['std']:.{digits}f}"


def header(doc):
    m = doc["machine"]
    load_ = m.get("loadavg_at_start")
    return (f"_Run {doc['date'][:10]}, {doc['wall_s'] / 60:.0f} min on {m.get('cpu')} ({m.get('usable_cores')} cores), "
            f"torch {m.get('torch')}" + (f", load {load_[0]:.1f} at start" if load_ else "")
            + f": `{doc['command']}`_\n\n")


def reading(name):
    p = READINGS / f"{name}.md"
    return ("\n" + p.read_text().strip() + "\n") if p.exists() else "\n_Reading: to be written after the full run._\n"


def pending(name):
    return f"**Pending**: run `{COMMANDS[name]}`, then `python benchmarks/report.py`.\n"


def model_line(m) -> str:
    """One line per model: what it is and how much training it had."""
    span = lambda t: f"{t / 3600:.1f} h" if t >= 3600 else f"{t / 60:.0f} min"  # noqa: E731
    by_device = m.get("training_s_by_device") or {}
    budget = " + ".join(f"{span(t)} {d}" for d, t in by_device.items()) or span(m.get("training_s") or 0.0)
    return (f"`{m['label']}` ({m['architecture']}, sha256 `{(m.get('sha256') or '')[:10]}`): dose "
            f"{m.get('dose_range')}, {m.get('patches_seen') or 0:,} patches, {budget}")


def model_label(doc) -> str:
    m = doc["model"]
    return f"`{m['label']}` (sha256 `{(m.get('sha256') or '')[:10]}`)"


# ----------------------------------------------------------------------------- sections
def sec_real_anatomy(doc) -> str:
    st = doc["settings"]
    table = doc["table"]
    # Rows "<model>, true parameters" are summed up in the reading, not tabled.
    models = [k for k in next(iter(table.values())) if k not in ("Noisy", BM3D_TRUE) and "true param" not in k]
    default, others = models[0], models[1:]
    out = [header(doc),
           f"Held-out mini-MIAS women (every fifth woman; never read by training), {st['regions']} regions of "
           f"{st['size']}² inside the breast, each recorded by its own simulated detector. PSNR/SSIM against the "
           "noise-free anatomy at that dose; the models run as a user runs them (noise estimated by the "
           "product, safeguard on), BM3D with the true parameters. *worse*: regions below the noisy input; "
           "*flagged*: the safeguard reported a mismatch; calc.: contrast at the annotated CALC clusters over "
           "the truth's (6 regions).\n\n"
           f"| truth, dose | noisy | BM3D | {default} | − BM3D [dB] | SSIM − BM3D | worse | flagged | calc. "
           f"{default} / BM3D | " + " | ".join(f"{o} − BM3D" for o in others) + " |\n"
           "|---|---|---|---|---|---|---|---|---|" + "---|" * len(others) + "\n"]
    for name, e in table.items():
        truth, dose = name.split(" @ ")
        d, b = e[default], e[BM3D_TRUE]
        out.append(f"| {'grain-free' if truth == 'smoothed' else 'film'}, {100 * float(dose):g} % | "
                   f"{v(e['Noisy']['psnr'])} | {v(b['psnr'])} | {v(d['psnr'])} | "
                   f"**{ms(d['minus_bm3d_db'], signed=True)}** | {v(d['ssim_minus_bm3d'], digits=4, signed=True)} | "
                   f"{d['worse_than_input']}/{d['regions']} | {d.get('flagged', '-')} | "
                   f"{v(d['calc_contrast'])} / {v(b['calc_contrast'])} | "
                   + " | ".join(ms(e[o]["minus_bm3d_db"], signed=True) for o in others) + " |\n")
    return "".join(out)


def sec_noise_real(doc) -> str:
    out = [header(doc), "`estimate_noise_params` on the noisy region alone; targets: gain within 5 %, GAT noise "
           "sigma within 3 % of 1, no error.\n\n"
           "| truth, region, dark strip | errors | gain within 5 % | median gain error | "
           "GAT sigma within 3 % | GAT sigma range |\n|---|---|---|---|---|---|\n"]
    for name, e in doc["table"].items():
        n = e["regions"] - e["errors"]
        lo, hi = e["gat_sigma_range"]
        out.append(f"| {name} | {e['errors']} | {e['gain_within_5pct']}/{n} | "
                   f"{100 * e['median_abs_gain_error']:.1f} % | {e['gat_sigma_within_3pct']}/{n} | "
                   f"{lo:.3f}-{hi:.3f} |\n")
    return "".join(out)


def sec_quality(doc):
    s = doc["settings"]
    summ = doc["summary"]
    small = next(iter(summ["Truth (noise-free)"].get("calc_by_size") or {}), None)
    out = [header(doc),
           f"{s['phantoms']} held-out phantoms (seeds {s['seeds'][0]}–{s['seeds'][1]}), {s['size']}² crops "
           f"holding the most calcifications, scored in the compressed breast; dose {s['dose']:g}, binomial "
           "thinning (exact Poisson-Gaussian), true parameters for every method. *calc.*: mean contrast at the "
           "known calcifications over the truth's; *seed protocol*: PSNR against the full-dose noisy image, "
           "as the first seed scores.\n\n"]
    out += [f"- {model_line(m)}\n" for m in doc.get("models") or []]
    out.append(f"\n| method | PSNR [dB] | SSIM | σ_image | calc. | calc. {small} | PSNR, seed protocol | s / image |\n"
               "|---|---|---|---|---|---|---|---|\n")
    for m in doc["references"][1:] + doc["methods"]:
        r = summ[m]
        by = (r.get("calc_by_size") or {}).get(small, {})
        out.append(f"| {m} | {ms(r['psnr'])} | {v(r['ssim'], digits=3)} | {v(r['sigma_image'], digits=4)} | "
                   f"{v(r['calc_contrast_ratio'])} | {v(by.get('ratio'))} | {v(r['psnr_full'])} | "
                   f"{v(r.get('time_s'))} |\n")
    bar = doc.get("bar")
    if bar:
        out.append(f"\nTargets for `{bar['model']}`: PSNR ≥ BM3D + {C.PHANTOM_PSNR_BAR_DB:g} dB: "
                   f"{'met' if bar['psnr_minus_bm3d']['mean'] >= C.PHANTOM_PSNR_BAR_DB else 'not met'} "
                   f"({ms(bar['psnr_minus_bm3d'], signed=True)} dB, paired); SSIM ≥ BM3D: "
                   f"{'met' if bar['ssim_pass'] else 'not met'} ({v(bar['ssim_minus_bm3d'], digits=4, signed=True)}); "
                   f"calcification contrast ≥ 0.90: {'met' if bar['calc_pass'] else 'not met'} "
                   f"({v(bar['calc_contrast_ratio'], digits=3)}).\n")
    pairs = [("Noisy", "Noisy"), ("BM3D", C.BM3D)]
    arch_of = {m["label"]: m["architecture"] for m in doc.get("models", [])}
    ours = [k for k, a in arch_of.items() if a == "eckert-resnet"]
    pairs.append(("ResNet (seed, proposed)", ours[0] if ours else None))
    out.append("\nBeside the seed's Table 1 (125 real FFDMs, their own normalisation: the gaps compare, not "
               "the absolute values): " + "; ".join(
                   f"{lbl} {doc['seed_table1'][lbl][0]} dB (ours {v(summ[o]['psnr_full']) if o else '—'})"
                   for lbl, o in pairs) + ".\n")
    for png in doc.get("png") or []:
        out.append(f"\n![example]({png})\n")
    return "".join(out)


def equal_quality_dose(doses, psnrs, target: float) -> float | None:
    """The dose at which a method whose mean PSNR is ``psnrs`` at ``doses`` reaches ``target``:
    linear in log dose between the two measured doses around it; None outside the measured range
    (PSNR rises monotonically with dose, which the interpolation assumes)."""
    d = np.log(np.asarray(doses, np.float64))
    q = np.asarray(psnrs, np.float64)
    if not (q[0] <= target <= q[-1]) or np.any(np.diff(q) <= 0):
        return None
    return float(np.exp(np.interp(target, q, d)))


def sec_dose(doc):
    s = doc["settings"]
    model = doc["model"]["label"]
    out = [header(doc), f"{s['phantoms']} phantoms, {s['size']}² crops, model {model_label(doc)}, true parameters, "
           "against the truth at each dose.\n\n"
           f"| dose | noisy PSNR | BM3D ΔPSNR | {model} ΔPSNR | {model} − BM3D (paired) | "
           f"BM3D's dose for {model}'s PSNR |\n|---|---|---|---|---|---|\n"]
    doses = list(s["fractions"])
    bm3d_psnr = [doc["rows"][str(d)][C.BM3D]["psnr"]["mean"] for d in doses]
    for d in doses:
        row = doc["rows"][str(d)]
        pp = row["per_phantom"]
        dp = C.mean_std([a - b for a, b in zip(pp[model]["psnr"], pp[C.BM3D]["psnr"])])
        eq = equal_quality_dose(doses, bm3d_psnr, row[model]["psnr"]["mean"])
        out.append(f"| {d:g} | {v(row['Noisy']['psnr'])} | {v(row[C.BM3D]['psnr_gain'], signed=True)} | "
                   f"{v(row[model]['psnr_gain'], signed=True)} | {ms(dp, signed=True)} | "
                   + ("beyond the doses run" if eq is None else f"{eq:.3g} ({eq / d:.2f}×)") + " |\n")
    out.append(f"\n![dose sweep]({doc['png']})\n")
    return "".join(out)


def sec_nps(doc):
    s = doc["settings"]
    slab = doc["slab"]
    p = slab["params"]
    curves = slab["curves"]
    freqs = [0.5, 2.0, 6.5]
    spot = "0.15 mm, 3.5 %"
    out = [header(doc),
           f"A flat {slab['size']}² slab, {slab['photons_full_dose']:g} photons/px at full dose (gain {p['gain']:g}, "
           f"σe {p['electronic_sigma']:g}), dose {s['dose']:g}, model {model_label(doc)}. NNPS = NPS / "
           "(mean − offset)²; *false spots*: calcification-like dots per cm² on the flat slab (0.15 mm, "
           "3.5 % contrast).\n\n"
           "| image | variance / noisy's | " + " | ".join(f"NNPS @ {f:g} mm⁻¹" for f in freqs)
           + " | false spots / cm² |\n|---|---|" + "---|" * len(freqs) + "---|\n"]
    for label, c in curves.items():
        f = np.array(c["f"])
        nn = np.array(c["nnps"])
        vals = [nn[int(np.argmin(np.abs(f - q)))] for q in freqs]
        spots = (c.get("false_spots_per_cm2") or {}).get(spot)
        out.append(f"| {label} | {c['relative_variance_ratio_to_noisy']:.4f} | "
                   + " | ".join(f"{x:.2e}" for x in vals) + f" | {v(spots)} |\n")
    st = doc.get("structure")
    if st:
        out.append(f"\nStructure removed with the noise ({s['phantoms']} phantoms × {s['realisations']} "
                   "realisations): share of the removed image's power that is systematic, all pixels: "
                   + ", ".join(f"{m} {r['structure_fraction_pixels']:.3f}" for m, r in st["methods"].items())
                   + ".\n")
    out.append(f"\n![NPS]({doc['png']})\n")
    return "".join(out)


def sec_speed(doc):
    s = doc["settings"]
    mm = doc["matmul"]
    b = doc.get("bm3d") or {}
    out = [header(doc), f"{s['size'][0]}×{s['size'][1]} phantom, tile {s['tile']}, {s['threads']} threads. "
           f"Matrix-multiply peak in the same run: {mm['gflops']:.1f} GFLOP/s.\n\n"
           "| method | MAC/px | 512² s | full image s | GFLOP/s | % matmul peak | × BM3D (full) |\n"
           "|---|---|---|---|---|---|---|\n"]
    for label, r in doc["models"].items():
        star = " (default)" if label == doc.get("default_model") else ""
        out.append(f"| {label}{star} | {r['macs_per_pixel']:.0f} | {r['crop_512_s']:.2f} | {r['full_s']:.1f} | "
                   f"{r['gflops']:.1f} | {100 * r['fraction_of_matmul_peak']:.0f} % | "
                   f"{v(r.get('speedup_vs_bm3d_full'), digits=0)}× |\n")
    if b:
        out.append(f"| BM3D (GAT) | — | {b['crop_512_s']:.1f} | {v(b.get('full_s'), digits=1)} | — | — | 1× |\n")
    mem = [r for r in doc.get("memory") or [] if "error" not in r]
    if mem:
        out.append("\nPeak memory of `denoise` (default model, fresh process): "
                   + "; ".join(f"{r['shape'][0]}×{r['shape'][1]} +{r['peak_increase_mb']:.0f} MB "
                               f"({r['increase_over_image_size']:.1f}× the float32 image)" for r in mem) + ".\n")
    d = doc.get("dose")
    if d:
        out.append(f"Dose simulation of the full field: {d['full_moments_s'] * 1000:.0f} ms; slider preview "
                   f"{d['preview_s'] * 1000:.1f} ms.\n")
    return "".join(out)


def sec_robust(doc):
    s = doc["settings"]
    out = [header(doc), f"{s['phantoms']} phantoms, {s['size']}² crops, dose {s['dose']:g}, model "
           f"{model_label(doc)}.\n\n| detector | estimated gain / offset / σe | noisy PSNR | ΔPSNR (estimated) "
           "| ΔPSNR (true parameters) |\n|---|---|---|---|---|\n"]
    for r in doc["rows"]:
        c = r["config"]
        if isinstance(c, dict):
            label = f"gain {c['gain']:g}, offset {c['offset']:g}, σe {c['electronic_sigma']:g}, photons {c['photons']:g}"
            est = f"{v(r['est_gain'], digits=3)} / {v(r['est_offset'], digits=1)} / {v(r['est_sigma_e'], digits=2)}"
            if r["est_failed"]["mean"]:
                est += f" ({r['est_failed']['mean'] * 100:.0f} % failed)"
        else:
            label, est = c + " (log, windowed)", "fallback fit"
        out.append(f"| {label} | {est} | {v(r['psnr_noisy'])} | {ms(r['psnr_gain'], signed=True)} | "
                   f"{ms(r['psnr_gain_known'], signed=True)} |\n")
    return "".join(out)


def sec_field_edge(doc):
    s = doc["settings"]
    out = [header(doc), f"{s['phantoms']} phantoms, {s['corners']} convex corners of the exposed field, "
           f"{s['crop']}² crops, dose {s['dose']:g}; errors in units of the noisy input's own sigma, open field "
           "only.\n\n| method | worst pixel within 3 px of the shadow (worst corner) | mean error 1 / 2 / 3 px "
           "| open field: std / worst |\n|---|---|---|---|\n"]
    for m, r in doc["summary"].items():
        band = " / ".join(f"{r[f'edge_mean_z_d{d}']['mean']:+.2f}" for d in (1, 2, 3))
        out.append(f"| {m} | {r['edge_max_abs_z']['mean']:.2f} σ ({r['edge_max_abs_z_worst']:.2f} σ) | {band} σ | "
                   f"{r['interior_std_z']['mean']:.2f} / {r['interior_max_abs_z']['mean']:.2f} σ |\n")
    return "".join(out)


def sec_cuda(doc):
    a = doc["agreement"]
    out = [header(doc), "Largest difference over the image as a fraction of the data range; PSNR inside the "
           "breast at 20 % dose.\n\n| model | PSNR CPU / CUDA fp32 / CUDA amp | CUDA fp32 vs CPU | CUDA amp vs CPU | "
           "whole vs tiled |\n|---|---|---|---|---|\n"]
    for model in doc["models"]:
        rows = a[model]
        mean = lambda k: float(np.mean([r[k] for r in rows]))  # noqa: E731
        worst = lambda k: max(r[k] for r in rows)  # noqa: E731
        out.append(f"| {model} | {mean('psnr_cpu_fp32'):.3f} / {mean('psnr_cuda_fp32'):.3f} / "
                   f"{mean('psnr_cuda_amp'):.3f} dB | {worst('maxdiff_cuda_fp32_vs_cpu'):.1e} | "
                   f"{worst('maxdiff_cuda_amp_vs_cpu'):.1e} | {worst('maxdiff_whole_vs_tiled_cuda'):.1e} |\n")
    sp = load("cuda_check_speed")
    if sp:
        s = sp["speed"]
        out.append(f"\n{s['field'][0]}×{s['field'][1]} on the GPU ({s['gpu']}), median of 5: "
                   + "; ".join(f"{m} {s[f'{m} fp32 batch 2']['median_s']:.2f} s fp32, "
                               f"{s[f'{m} amp batch 2']['median_s']:.2f} s amp" for m in sp["models"]) + ".\n")
    pr = load("precision")
    if pr:
        out.append(f"Half precision on section 1's crops (CPU autocast standing in for the GPU's, "
                   f"`{pr['command']}`, {pr['date'][:10]}): PSNR lost "
                   + "; ".join(f"{m} fp16 {r['fp16']['mean']:.3f} dB (worst {r['fp16']['max']:.2f}), bf16 "
                               f"{r['bf16']['mean']:.2f} dB (worst {r['bf16']['max']:.2f})"
                               for m, r in pr["summary"].items()) + ".\n")
    return "".join(out)


def sec_finetune(doc) -> str:
    st = doc["settings"]
    out = [header(doc),
           f"The shipped default fine-tuned on {st['images']} images ({st['epochs']} × {st['iters_per_epoch']} "
           f"iterations of {st['batch_size']} patches of {st['patch']}², doses {st['dose_range'][0]:g}-"
           f"{st['dose_range'][1]:g}) by each objective, scored at {100 * st['test_dose']:g} % dose on "
           f"{st['test']} held-out images against the noise-free truth (safeguard off unless said). *noise "
           "kept*: the share of the input's noise left in the output; *NPS*: power removed over the true "
           "noise's, low / mid / high band (1: exactly the noise removed).\n\n"
           "| data | model | dB over start | noise kept | NPS low / mid / high |\n|---|---|---|---|---|\n"]
    label = lambda name, c: "white" if not c["rho1"] else f"correlated {c['rho1']:g}"  # noqa: E731
    cases = [("phantoms", doc["phantoms"]["table"])] + [
        (f"mini-MIAS, {label(name, c)} detector", c["table"]) for name, c in doc["mias"]["cases"].items()]
    for data, table in cases:
        for model, r in table.items():
            nps = r.get("residual_nps_ratio")
            out.append(f"| {data} | {model} | {ms(r['gain_over_start_db'], signed=True)} | "
                       f"{v(r['noise_kept'])} | "
                       + (" / ".join(f"{nps[b]:.2f}" for b in ("low", "mid", "high")) if nps else "—") + " |\n")
            data = ""
    return "".join(out)


SECTIONS = [
    ("real_anatomy", "0. Real anatomy: held-out mini-MIAS women against BM3D", sec_real_anatomy),
    ("noise_real_anatomy", "0b. Noise estimation on real anatomy", sec_noise_real),
    ("quality", "1. Quality: the first seed's Table 1 on held-out phantoms", sec_quality),
    ("dose_sweep", "2. Dose sweep", sec_dose),
    ("nps", "3. Noise power spectrum and structure removed", sec_nps),
    ("speed", "4. Speed and memory", sec_speed),
    ("robustness", "5. Robustness to detector settings and FOR PRESENTATION input", sec_robust),
    ("field_edge", "6. Artefacts at the edge of the exposed field", sec_field_edge),
    ("cuda_check_agreement", "7. The CUDA path on a lent GPU", sec_cuda),
    ("finetune_real", "8. Fine-tuning on raw images without clean truth", sec_finetune),
]


def main(argv=None):
    import argparse

    global OUT, PREFIX
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prefix", default="", help="read results/<prefix><name>.json (e.g. smoke_)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    PREFIX, OUT = args.prefix, Path(args.out)
    parts = ["# Benchmarks\n\n"
             "_Generated by `python benchmarks/report.py` from `benchmarks/results/*.json` (each records "
             "machine, date and exact command) and the hand-written readings in `benchmarks/readings/`._\n\n"
             "Is it better than BM3D, and how fast? On real anatomy: section 0; on the phantom, where the "
             "calcifications are known: section 1; speed: section 4. Sections 0-6 run on CPU on a shared 2-core "
             "machine and are sized for it; section 7 ran on a lent GPU. Test phantoms use seeds 10 000+, "
             "disjoint from training's (checked against each model card); held-out MIAS women are never read by "
             "training. BM3D (`bm3d` 4.0.3, non-commercial licence) is used by the benchmarks only. After the "
             "default's weights change, `bash benchmarks/rerun_default.sh PREVIOUS.safetensors LABEL` reruns "
             "every CPU benchmark and regenerates this file.\n\n"
             "| section | rerun | status |\n|---|---|---|\n"]
    docs = {name: load(name) for name, _, _ in SECTIONS}
    for name, title, _ in SECTIONS:
        doc = docs[name]
        parts.append(f"| {title} | {SIZES[name]} | {doc['date'][:10] if doc else 'pending'} |\n")
    for name, title, fn in SECTIONS:
        parts.append(f"\n## {title}\n\n")
        doc = docs[name]
        if doc is None:
            parts.append(pending(name))
        else:
            parts.append(fn(doc))
        parts.append(reading(name))
    parts.append("\n## What we tried and what it showed\n" + reading("tried"))
    OUT.write_text("".join(parts))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
