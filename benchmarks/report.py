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

#: Sizes and rough wall time on the 2-core shared CPU (BM3D dominates).
SIZES = {
    "real_anatomy": "40 regions of 256² (+40 px context) from 28 held-out women, 3 doses × 2 truths; "
                    "~25 min, BM3D most of it (--cache keeps its outputs for reruns)",
    "noise_real_anatomy": "40 regions × 2 sizes × 2 truths × with/without a dark strip; ~1 min",
    "quality": "20 phantoms 1024², 512² crops scored, each method run on the crop + 64 px (as on the whole "
               "frame), dose 0.2; 8 min with three networks run and the other rows carried (BM3D 10-17 s/window, "
               "the Eckert ResNet 11-20 s, DnCNN ~4 s, each U-Net 0.15-0.3 s, by machine speed)",
    "dose_sweep": "6 phantoms × 6 doses, 512² crops; ~14 min (BM3D)",
    "nps": "1024² slab; 3 phantoms × 4 realisations, 256² crops; ~2–4 min",
    "speed": "3328×2560 per model, BM3D full field once, memory at 2048², 3328×2560, 4096×3328; ~14 min "
             "(quiet machine)",
    "robustness": "10 detector settings + FOR PRESENTATION × 4 phantoms, 512² crops; ~2–4 min",
    "field_edge": "6 phantoms 1024², 2 corner crops of 256² each, each network with and without field_parts; ~1.5 min",
    "cuda_check_agreement": "a lent GPU: 3328×2560 × 2 models × 4 settings × 6 runs (~1.5 min); 4 phantoms 1024² × "
                            "2 models × 4 runs, the CPU reference included (~5-7 min)",
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
    "cuda_check_agreement": "python benchmarks/cuda_check.py --part speed; python benchmarks/cuda_check.py --part agreement; python benchmarks/cuda_check.py --part layout",
}


PREFIX = ""


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
    return (f"- Run: {doc['date']} (UTC), wall time {doc['wall_s'] / 60:.1f} min, git HEAD "
            f"`{(doc.get('git_head') or 'n/a')[:10]}`"
            + (f", sources {', '.join(f'{k} `{v[:8]}`' for k, v in doc['source_sha256_at_start'].items())}"
               if doc.get("source_sha256_at_start") else "") + "\n"
            f"- Machine: {m.get('cpu')}, {m.get('usable_cores')} usable of {m.get('logical_cores')} logical cores, "
            f"{m.get('memory_gib', '?')} GiB; torch {m.get('torch')} ({m.get('torch_threads')} threads), "
            f"numpy {m.get('numpy')}, bm3d {m.get('bm3d')}; load average at start {m.get('loadavg_at_start')}\n"
            f"- Command: `{doc['command']}`\n")


def reading(name):
    p = READINGS / f"{name}.md"
    return ("\n" + p.read_text().strip() + "\n") if p.exists() else "\n_Reading: to be written after the full run._\n"


def pending(name):
    return (f"**Pending** — no result yet. Run:\n\n```\n{COMMANDS[name]}\n```\n"
            "then `python benchmarks/report.py`.\n")


def training_budget(m) -> str:
    """How much training a model had: patches seen and time, so an untrained row is obvious."""
    if m.get("patches_seen") is None:
        return ""
    def span(t):
        return f"{t / 3600:.1f} h" if t >= 3600 else f"{t / 60:.0f} min"

    by_device = m.get("training_s_by_device")
    if by_device:
        return f"{m['patches_seen']:,} patches, " + " + ".join(f"{span(t)} {d}" for d, t in by_device.items())
    # Rows recorded before the per-device split: the time is summed over every stage, the device
    # is the last stage's only.
    device = f", last stage on {m['training_device']}" if m.get("training_device") else ""
    return f"{m['patches_seen']:,} patches, {span(m.get('training_s') or 0.0)} in all{device}"


def models_table(models):
    if not models:
        return ""
    lines = ["| label | architecture | sha256 | noise model | dose range | epochs | training | training command |",
             "|---|---|---|---|---|---|---|---|"]
    for m in models:
        cmd = (m.get("training_command") or "").replace("|", "\\|")
        carried = m.get("carried_from")
        label = m["label"] + (f" (row carried from the run of {carried['date'][:10]})" if carried else "")
        lines.append(f"| {label} | {m['architecture']} | `{(m.get('sha256') or '')[:10]}` | {m.get('noise_model')} | "
                     f"{m.get('dose_range')} | {m.get('epochs')} | {training_budget(m)} | `{cmd[:160]}` |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- sections
def sec_quality(doc):
    s = doc["settings"]
    summ = doc["summary"]
    out = [header(doc)]
    out.append(f"- Protocol: {s['phantoms']} held-out phantoms (seeds {s['seeds'][0]}–{s['seeds'][1]}, "
               f"{s['views']}), phantom {s['phantom_shape'][0]}×{s['phantom_shape'][1]} px at 70 µm, "
               + (f"{s['size']}×{s['size']} crops placed in the breast to hold the most calcifications, "
                  "scored over their pixels in the compressed breast (at least the edge fall-off width inside "
                  "the skin line, no pectoral muscle, not saturated)" if s['size'] else
                  "scored over the eroded breast of the whole phantom")
               + f"; dose {s['dose']:g}; input: {s['input']}; {s['params']}; "
               f"inference tile {s['tile'] or 'whole crop'}; metrics from `{s['metrics_source']}`.\n")
    out.append(f"- Training/test seeds: {doc.get('seed_disjoint')}\n")
    out.append("\nModels:\n\n" + models_table(doc.get("models")))
    out.append("\n**(a) Against the noise-free truth at the same dose** (mean ± std over phantoms; PSNR/SSIM "
               "data range = range of the truth in the scored region; σ_image = noise std in the flattest "
               "fatty 32×32 window after a plane fit, over the same range; calc. contrast = mean contrast at "
               "the known calcification positions / the truth's; CNR = mean over calcifications, annulus std)\n\n")
    out.append("| method | PSNR [dB] | SSIM | σ_image | calc. contrast / truth | CNR | s / image |\n|---|---|---|---|---|---|---|\n")
    for m in doc["references"] + doc["methods"]:
        r = summ[m]
        out.append(f"| {m} | {ms(r['psnr'])} | {ms(r['ssim'], 3)} | {v(r['sigma_image'], digits=4)} | "
                   f"{ms(r['calc_contrast_ratio'])} | {ms(r['cnr'], 1)} | {v(r.get('time_s'))} |\n")
    sizes = summ["Truth (noise-free)"].get("calc_by_size")
    if sizes:
        out.append("\n**Calcifications by size**: mean contrast over the truth's, and mean CNR (disk vs "
                   "annulus, over the annulus std), pooled over every phantom's calcifications of that "
                   "diameter\n\n")
        out.append("| method | " + " | ".join(f"contrast {k} (n = {c['n']})" for k, c in sizes.items()) + " | "
                   + " | ".join(f"CNR {k}" for k in sizes) + " |\n")
        out.append("|---|" + "---|" * (2 * len(sizes)) + "\n")
        for m in ["Truth (noise-free)", "Full dose (mapped to low-dose level)"] + doc["methods"]:
            by = summ[m]["calc_by_size"]
            out.append(f"| {m} | " + " | ".join(v(by[k]["ratio"]) for k in sizes) + " | "
                       + " | ".join(v(by[k].get("cnr"), digits=1) for k in sizes) + " |\n")
    out.append("\n**(b) Against the full-dose noisy image** (the seed's protocol; the full-dose image is mapped to "
               "the low-dose signal level, `offset + dose·(z_full − offset)`, and scored with the same data range; "
               "calc. contrast relative to the full-dose image's)\n\n")
    out.append("| method | PSNR [dB] | SSIM | calc. contrast / full dose |\n|---|---|---|---|\n")
    for m in ["Truth (noise-free)"] + doc["methods"]:
        r = summ[m]
        out.append(f"| {m} | {ms(r['psnr_full'])} | {ms(r['ssim_full'], 3)} | {ms(r['calc_contrast_ratio_full'])} |\n")
    st = doc.get("strengths")
    if st and st.get("labels") and sizes:
        out.append("\n**(c) Strength** (`inference.apply_strength`, the CLI's `--strength` and the Denoise "
                   "widget's strength: `noisy + s·(denoised − noisy)`, from the same outputs as (a)): what "
                   "calcification contrast costs in PSNR for each method\n\n")
        out.append("| method | strength | PSNR [dB] | SSIM | σ_image | calc. contrast / truth | "
                   + " | ".join(f"contrast {k}" for k in sizes) + f" | CNR {next(iter(sizes))} |\n")
        out.append("|---|---|---|---|---|---|" + "---|" * (len(sizes) + 1) + "\n")
        labels = iter(st["labels"])  # quality.py's strength_label(method, value), method by method
        for m in st["methods"]:
            for value, label in [(1.0, m)] + [(x, next(labels)) for x in st["values"]]:
                r = summ[label]
                by = r["calc_by_size"]
                out.append(f"| {m} | {value:g} | {ms(r['psnr'])} | {ms(r['ssim'], 3)} | "
                           f"{v(r['sigma_image'], digits=4)} | {ms(r['calc_contrast_ratio'])} | "
                           + " | ".join(v(by[k]["ratio"]) for k in sizes)
                           + f" | {v(by[next(iter(sizes))].get('cnr'), digits=1)} |\n")
    out.append("\n**Beside the seed's Table 1** (seed: 125 real FFDMs, 80 % dose reduction, their own PSNR "
               "normalisation; ours: protocol (b), σ_image from (a)'s window; absolute values are not "
               "comparable across data sets, the ordering and the gaps are)\n\n")
    out.append("| method | seed PSNR | seed SSIM | seed σ_image | our PSNR (b) | our SSIM (b) | our σ_image |\n"
               "|---|---|---|---|---|---|---|\n")
    pairs = [("Noisy", "Noisy"), ("Gaussian filter", C.GAUSSIAN), ("BM3D", C.BM3D)]
    arch_of = {m["label"]: m["architecture"] for m in doc.get("models", [])}
    for label, arch in (("DnCNN (seed, retrained with their method)", "dncnn"), ("ResNet (seed, proposed)", "eckert-resnet")):
        ours = [k for k, a in arch_of.items() if a == arch]
        pairs.append((label, ours[0] if ours else None))
    for seed_label, ours in pairs:
        sp, ss, sg = doc["seed_table1"][seed_label]
        r = summ.get(ours) if ours else None
        out.append(f"| {seed_label}{' ↔ ' + ours if ours and ours != seed_label else ''} | {sp} | {ss} | "
                   f"{sg if sg is not None else 'n/a'} | {ms(r['psnr_full']) if r else '—'} | "
                   f"{ms(r['ssim_full'], 3) if r else '—'} | {v(r['sigma_image'], digits=4) if r else '—'} |\n")
    out.append(f"| GT (full dose) | — | — | 0.042 | — | — | "
               f"{v(summ['Full dose (mapped to low-dose level)']['sigma_image'], digits=4)} |\n")
    out.append(f"\n_Seed table caveat_: {doc['seed_table1_notes']}\n")
    bar = doc.get("bar")
    if bar:
        out.append(f"\n**Acceptance bar** (model `{bar['model']}`, against the truth, (a)):\n\n")
        out.append(f"- {'PASS' if bar['psnr_pass'] else 'FAIL'}: PSNR ≥ BM3D + 0.5 dB — difference "
                   f"{ms(bar['psnr_minus_bm3d'], signed=True)} dB (paired, per phantom)\n")
        out.append(f"- {'PASS' if bar['ssim_pass'] else 'FAIL'}: SSIM ≥ BM3D — difference "
                   f"{ms(bar['ssim_minus_bm3d'], 4, signed=True)}\n")
        out.append(f"- {'PASS' if bar['calc_pass'] else 'FAIL'}: calcification contrast ≥ 90 % of truth — "
                   f"{v(bar['calc_contrast_ratio'], digits=3)}\n")
    else:
        out.append("\n_Acceptance bar not evaluated (needs BM3D and a model)._\n")
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
    out = [header(doc)]
    out.append(f"- Protocol: {s['phantoms']} phantoms (seeds {s['seeds'][0]}–{s['seeds'][1]}), crop {s['size']}, "
               f"model `{doc['model']['label']}` (sha256 `{(doc['model'].get('sha256') or '')[:10]}`), true NoiseParams, "
               "against the truth at each dose.\n\n")
    methods = doc["methods"]
    model = doc["model"]["label"]
    paired = C.BM3D in methods
    out.append("| dose | noisy PSNR | " + " | ".join(f"{m} ΔPSNR / ΔSSIM" for m in methods)
               + (f" | {model} − BM3D (paired) PSNR / SSIM | BM3D's dose for {model}'s PSNR" if paired else "")
               + " |\n")
    out.append("|---|---|" + "---|" * (len(methods) + 2 * paired) + "\n")
    doses = list(s["fractions"])
    bm3d_psnr = [doc["rows"][str(d)][C.BM3D]["psnr"]["mean"] for d in doses] if paired else []
    for d in doses:
        row = doc["rows"][str(d)]
        cells = [f"{ms(row[m]['psnr_gain'], signed=True)} / {ms(row[m]['ssim_gain'], 3, signed=True)}" for m in methods]
        if paired:
            pp = row["per_phantom"]
            dp = C.mean_std([a - b for a, b in zip(pp[model]["psnr"], pp[C.BM3D]["psnr"])])
            dsm = C.mean_std([a - b for a, b in zip(pp[model]["ssim"], pp[C.BM3D]["ssim"])])
            cells.append(f"{ms(dp, signed=True)} / {ms(dsm, 4, signed=True)}")
            eq = equal_quality_dose(doses, bm3d_psnr, row[model]["psnr"]["mean"])
            cells.append("beyond the doses run" if eq is None else f"{eq:.3g} ({eq / d:.2f}×)")
        out.append(f"| {d:g} | {ms(row['Noisy']['psnr'])} | " + " | ".join(cells) + " |\n")
    out.append(f"\n![dose sweep]({doc['png']})\n")
    return "".join(out)


def sec_nps(doc):
    s = doc["settings"]
    slab = doc["slab"]
    out = [header(doc)]
    p = slab["params"]
    out.append(f"- Slab: {slab['size']}×{slab['size']} px, {slab['photons_full_dose']:g} photons/px at full dose, "
               f"offset {p['offset']:g}, gain {p['gain']:g}, σe {p['electronic_sigma']:g}; dose {s['dose']:g}; "
               f"model `{doc['model']['label']}` (sha256 `{(doc['model'].get('sha256') or '')[:10]}`). NNPS = NPS / (mean − offset)², 256² ROIs, 50 % overlap, plane detrend.\n\n")
    curves = slab["curves"]
    freqs = [0.5, 1.0, 2.0, 4.0, 6.5]
    out.append("| image | relative variance / noisy's | " + " | ".join(f"NNPS @ {f:g} mm⁻¹" for f in freqs) + " |\n")
    out.append("|---|---|" + "---|" * len(freqs) + "\n")
    for label, c in curves.items():
        f = np.array(c["f"])
        nn = np.array(c["nnps"])
        vals = [nn[int(np.argmin(np.abs(f - q)))] for q in freqs]
        out.append(f"| {label} | {c['relative_variance_ratio_to_noisy']:.4f} | " + " | ".join(f"{x:.2e}" for x in vals) + " |\n")
    spots = {label: c["false_spots_per_cm2"] for label, c in curves.items() if "false_spots_per_cm2" in c}
    if spots:
        keys = list(next(iter(spots.values())))
        out.append("\n**False calcifications on the flat slab** (calcification-like dots per cm² where there are "
                   "none: local maxima of the disk-vs-annulus contrast above the 10th percentile and the median "
                   "contrast of the test phantoms' 0.1–0.2 mm calcifications; `benchmarks/nps.py`)\n\n")
        out.append("| image | " + " | ".join(keys) + " |\n")
        out.append("|---|" + "---|" * len(keys) + "\n")
        for label, v in spots.items():
            out.append(f"| {label} | " + " | ".join(f"{v[k]:.2f}" for k in keys) + " |\n")
    st = doc.get("structure")
    if st:
        out.append(f"\n**Structure removed with the noise** ({s['phantoms']} phantoms, {s['size']}² crops, "
                   f"{s['realisations']} noise realisations each; definitions in `benchmarks/nps.py`): "
                   "share of the removed image's power that is systematic (bias = structure), per band and "
                   "over all pixels; and the band coherence of the removed image with the truth (null = pure noise "
                   "vs truth).\n\n")
        f = st["f_centres"]
        idx = [i for i in range(len(f)) if i % 2 == 0]
        out.append("| method | all pixels | " + " | ".join(f"{f[i]:.1f} mm⁻¹" for i in idx) + " |\n")
        out.append("|---|---|" + "---|" * len(idx) + "\n")
        for m, r in st["methods"].items():
            out.append(f"| {m}: structure share | {r['structure_fraction_pixels']:.4f} | " +
                       " | ".join(f"{r['structure_fraction'][i]:.3f}" for i in idx) + " |\n")
            out.append(f"| {m}: coherence with truth | — | " +
                       " | ".join(f"{r['truth_coherence'][i]:.3f}" for i in idx) + " |\n")
        out.append("| null coherence (noise vs truth) | — | " +
                   " | ".join(f"{st['null_coherence'][i]:.3f}" for i in idx) + " |\n")
    out.append(f"\n![NPS]({doc['png']})\n")
    return "".join(out)


def sec_speed(doc):
    out = [header(doc)]
    s = doc["settings"]
    mm = doc["matmul"]
    out.append(f"- Whole image {s['size'][0]}×{s['size'][1]} (phantom, dose 0.2), tile {s['tile']}, "
               f"{s['threads']} threads, CPU. Matrix-multiply peak (2048² fp32, best of {mm['repeats']}): "
               f"**{mm['gflops']:.1f} GFLOP/s**. Load average at end: {doc.get('loadavg_at_end')} "
               "(shared machine: absolute times are noisy, ratios within this run are the robust numbers).\n\n")
    b = doc.get("bm3d") or {}
    out.append("| method | MAC/px | computed / image px | 512² s | full image s | tiles | tiles/s | GFLOP/s (tiles) | % matmul peak | speed-up vs BM3D (512² / full) |\n")
    out.append("|---|---|---|---|---|---|---|---|---|---|\n")
    for label, r in doc["models"].items():
        star = " (default)" if label == doc.get("default_model") else ""
        out.append(f"| {label}{star} | {r['macs_per_pixel']:.0f} | {v(r.get('computed_over_image_pixels'))} | "
                   f"{r['crop_512_s']:.2f} | {r['full_s']:.1f} | "
                   f"{r['full_tiles']} | {r['tiles_per_s']:.2f} | {r['gflops']:.1f} | "
                   f"{100 * r['fraction_of_matmul_peak']:.0f} % | {v(r.get('speedup_vs_bm3d_crop'), digits=1)}× / "
                   f"{v(r.get('speedup_vs_bm3d_full'), digits=1)}× |\n")
    if b:
        out.append(f"| BM3D (GAT) | — | — | {b['crop_512_s']:.1f} | {v(b.get('full_s'), digits=1)} | — | — | — | — | 1× |\n")
    mem = doc.get("memory")
    if mem:
        out.append("\n**Peak memory of `denoise` (default model, fresh subprocess per size)**\n\n")
        out.append("| image | float32 image MB | RSS before MB | peak RSS MB | increase MB | increase / image | tracemalloc peak MB (numpy) | s |\n")
        out.append("|---|---|---|---|---|---|---|---|\n")
        for r in mem:
            if "error" in r:
                out.append(f"| {r['shape'][0]}×{r['shape'][1]} | error: {r['error'][-200:]} |\n")
                continue
            out.append(f"| {r['shape'][0]}×{r['shape'][1]} | {r['image_float32_mb']:.0f} | {r['rss_before_mb']:.0f} | "
                       f"{r['peak_rss_mb']:.0f} | {r['peak_increase_mb']:.0f} | {r['increase_over_image_size']:.1f}× | "
                       f"{r['tracemalloc_peak_mb']:.0f} | {r['seconds']:.1f} |\n")
    tr = doc.get("training")
    if tr and "patches_per_s" in tr:
        out.append(f"\n- Training (`train()`, {tr['architecture']}, patch {tr['patch']}, batch {tr['batch']}): "
                   f"**{tr['patches_per_s']:.1f} patches/s** over {tr['iterations_timed']} iterations ({tr['note']}).\n")
    d = doc.get("dose")
    if d:
        out.append(f"- Dose simulation of {d['shape'][0]}×{d['shape'][1]}: moments {d['full_moments_s'] * 1000:.0f} ms, "
                   f"binomial {d['full_binomial_s'] * 1000:.0f} ms. Slider preview (every {d['preview_step']}th pixel → "
                   f"{d['preview_shape'][0]}×{d['preview_shape'][1]}, PREVIEW_MAX_SIDE {d['preview_max_side']}): "
                   f"**{d['preview_s'] * 1000:.1f} ms** ({d['note']}).\n")
    out.append(f"- Phantom generation {s['size'][0]}×{s['size'][1]}: {doc['phantom_generation_s']:.1f} s.\n")
    return "".join(out)


def sec_robust(doc):
    out = [header(doc)]
    s = doc["settings"]
    out.append(f"- {s['phantoms']} phantoms (seeds {s['seeds'][0]}–{s['seeds'][1]}), crop {s['size']}, dose {s['dose']:g}, "
               f"model `{doc['model']['label']}` (sha256 `{(doc['model'].get('sha256') or '')[:10]}`); params: {s['params']}.\n\n")
    out.append("| detector | estimated gain / offset / σe | noisy PSNR | ΔPSNR (estimated) | ΔSSIM (estimated) | ΔPSNR (true params) | ΔSSIM (true params) |\n")
    out.append("|---|---|---|---|---|---|---|\n")
    for r in doc["rows"]:
        c = r["config"]
        if isinstance(c, dict):
            label = f"gain {c['gain']:g}, offset {c['offset']:g}, σe {c['electronic_sigma']:g}, photons {c['photons']:g}"
            if r.get("is_training_detector"):
                label += " (training detector)"
            est = f"{v(r['est_gain'], digits=3)} / {v(r['est_offset'], digits=1)} / {v(r['est_sigma_e'], digits=2)}"
            if r["est_failed"]["mean"]:
                est += f" ({r['est_failed']['mean'] * 100:.0f} % failed)"
        else:
            label, est = c + " (log, windowed, no params)", "fitted by `denoise` (fallback)"
        out.append(f"| {label} | {est} | {ms(r['psnr_noisy'])} | {ms(r['psnr_gain'], signed=True)} | "
                   f"{ms(r['ssim_gain'], 3, signed=True)} | {ms(r['psnr_gain_known'], signed=True)} | "
                   f"{ms(r['ssim_gain_known'], 3, signed=True)} |\n")
    warn = [w for r in doc["rows"] for w in r.get("warnings", [])]
    if warn:
        out.append("\nWarnings seen: " + "; ".join(f"`{w}`" for w in sorted(set(warn))) + "\n")
    return "".join(out)


def sec_field_edge(doc):
    out = [header(doc)]
    s = doc["settings"]
    models = ", ".join(f"`{m['label']}` (sha256 `{(m.get('sha256') or '')[:10]}`)" for m in doc["models"])
    out.append(f"- {s['phantoms']} phantoms (seeds {s['seeds'][0]}–{s['seeds'][1]}, CC and MLO), {s['corners']} convex "
               f"corners of the exposed field, {s['crop']}² crops, dose {s['dose']:g}; models {models}. Errors in "
               "units of the noisy input's own sigma at each pixel; open field only (definitions in "
               "`benchmarks/field_edge.py`).\n\n")
    out.append("| method | worst pixel within 3 px of the shadow, mean (worst) | mean error 1 / 2 / 3 px from "
               "the shadow | open field > 20 px: std / worst |\n|---|---|---|---|\n")
    for m, r in doc["summary"].items():
        band = " / ".join(f"{r[f'edge_mean_z_d{d}']['mean']:+.2f}" for d in (1, 2, 3))
        out.append(f"| {m} | {r['edge_max_abs_z']['mean']:.2f} σ ({r['edge_max_abs_z_worst']:.2f} σ) | {band} σ | "
                   f"{r['interior_std_z']['mean']:.2f} σ / {r['interior_max_abs_z']['mean']:.2f} σ |\n")
    return "".join(out)


def sec_cuda(doc):
    out = [header(doc)]
    sp = load("cuda_check_speed")
    a = doc["agreement"]
    out.append(f"- PyTorch's global flags during the run: cuDNN TF32 {'on' if a.get('cudnn_tf32') else 'off'}, "
               f"matmul TF32 {'on' if a.get('tf32_matmul') else 'off'} (`denoise` turns both off around the "
               "network unless `amp=True`). Differences are the largest "
               "over the image, as a fraction of the data range; PSNR inside the breast against the "
               "noise-free truth at 20 % dose (not the crop of section 1).\n\n")
    out.append("| model | phantoms | PSNR CPU fp32 / CUDA fp32 / CUDA amp | max diff CUDA fp32 vs CPU | "
               "max diff CUDA amp vs CPU | max diff CUDA whole vs 512-px tiles |\n|---|---|---|---|---|---|\n")
    for model in doc["models"]:
        rows = a[model]
        mean = lambda k: float(np.mean([r[k] for r in rows]))  # noqa: E731
        worst = lambda k: max(r[k] for r in rows)  # noqa: E731
        out.append(f"| {model} | {len(rows)} | {mean('psnr_cpu_fp32'):.3f} / {mean('psnr_cuda_fp32'):.3f} / "
                   f"{mean('psnr_cuda_amp'):.3f} dB | {worst('maxdiff_cuda_fp32_vs_cpu'):.1e} | "
                   f"{worst('maxdiff_cuda_amp_vs_cpu'):.1e} | {worst('maxdiff_whole_vs_tiled_cuda'):.1e} |\n")
    if sp:
        s = sp["speed"]
        out.append(f"\n**{s['field'][0]}×{s['field'][1]} on the GPU ({s['gpu']})**, median of 5 after a warm-up "
                   f"(`{sp['command']}`, {sp['date']}):\n\n| model | fp32 batch 2 (default) | fp32 batch 8 | amp batch 2 "
                   "| amp batch 8 | peak GPU memory (amp, batch 2) |\n|---|---|---|---|---|---|\n")
        for model in sp["models"]:
            t = lambda k: s[f"{model} {k}"]["median_s"]  # noqa: E731
            out.append(f"| {model} | {t('fp32 batch 2'):.2f} s | {t('fp32 batch 8'):.2f} s | {t('amp batch 2'):.2f} s | "
                       f"{t('amp batch 8'):.2f} s | {s[f'{model} peak_gpu_mib amp batch 2']:.0f} MiB |\n")
    lay = load("cuda_check_layout")
    if lay:
        t = lay["layout"]
        out.append(f"\n**Memory layout on the GPU**: the network alone on a batch of 2 default tiles with their "
                   f"overlap, median of 20 (`{lay['command']}`, {lay['date']}):\n\n| model | tile | fp32 NCHW | "
                   "fp32 channels_last | fp16 NCHW | fp16 channels_last |\n|---|---|---|---|---|---|\n")
        for model in lay["models"]:
            ms = lambda k: f"{1e3 * t[f'{model} {k}']['median_s']:.1f} ms"  # noqa: E731
            side = t[f"{model} fp32 contiguous"]["tile_side"]
            out.append(f"| {model} | {side}² | {ms('fp32 contiguous')} | {ms('fp32 channels_last')} | "
                       f"{ms('amp contiguous')} | {ms('amp channels_last')} |\n")
    pr = load("precision")
    if pr:
        out.append(f"\n**What half precision costs, on section 1's held-out crops** (CPU autocast standing in for "
                   f"the GPU's; `{pr['command']}`, {pr['date']}): PSNR lost against float32, mean ± std over "
                   f"{len(pr['rows'])} phantoms, and the worst phantom\n\n| model | fp16 | bf16 |\n|---|---|---|\n")
        for model, r in pr["summary"].items():
            cell = lambda q: f"{r[q]['mean']:.3f} ± {r[q]['std']:.3f} dB (worst {r[q]['max']:.2f} dB, seed {r[q]['worst_seed']})"  # noqa: E731
            out.append(f"| {model} | {cell('fp16')} | {cell('bf16')} |\n")
    return "".join(out)


def sec_real_anatomy(doc) -> str:
    st = doc["settings"]
    out = [f"`{doc['command']}` — {doc['date']}, {doc['wall_s'] / 60:.0f} min. Held-out mini-MIAS "
           f"women (every fifth; never read by training), {st['regions']} regions of {st['size']}² "
           "inside the breast, each with its own simulated detector. PSNR/SSIM against the noise-free "
           "anatomy at that dose (data range = the truth's range in the region); models as a user runs "
           "them (noise parameters estimated by the product, safeguard on), BM3D with the true "
           "parameters. \"worse\": regions whose PSNR is below the noisy input's; \"flagged\": regions "
           "where the safeguard reported a mismatch. Calcification contrast: at the 8 strongest spots "
           "of the annotated CALC clusters, over the truth's.\n"]
    for name, entry in doc["table"].items():
        truth, dose = name.split(" @ ")
        out.append(f"\n**{truth} truth, {100 * float(dose):g} % dose**\n\n"
                   "| method | PSNR [dB] | SSIM | vs BM3D [dB] | SSIM vs BM3D | worse than input | flagged "
                   "| calcification contrast |\n|---|---|---|---|---|---|---|---|\n")
        for m, e in entry.items():
            vs = ms(e["minus_bm3d_db"], signed=True) if e.get("minus_bm3d_db") else "-"
            vs_ssim = ms(e["ssim_minus_bm3d"], digits=4, signed=True) if e.get("ssim_minus_bm3d") else "-"
            calc = ms(e["calc_contrast"]) if e["calc_contrast"].get("n") else "n/a"
            out.append(f"| {m} | {ms(e['psnr'])} | {ms(e['ssim'], digits=4)} | {vs} | {vs_ssim} | "
                       f"{e['worse_than_input']}/{e['regions']} | {e.get('flagged', '-')} | {calc} |\n")
    return "".join(out)


def sec_noise_real(doc) -> str:
    out = [f"`{doc['command']}` — {doc['date']}. `estimate_noise_params` on the noisy region alone; "
           "targets: gain within 5 %, GAT noise sigma within 3 % of 1, no error.\n\n"
           "| truth, region, dark strip | errors | gain within 5 % | median gain error | "
           "GAT sigma within 3 % | GAT sigma range |\n|---|---|---|---|---|---|\n"]
    for name, e in doc["table"].items():
        n = e["regions"] - e["errors"]
        lo, hi = e["gat_sigma_range"]
        out.append(f"| {name} | {e['errors']} | {e['gain_within_5pct']}/{n} | "
                   f"{100 * e['median_abs_gain_error']:.1f} % | {e['gat_sigma_within_3pct']}/{n} | "
                   f"{lo:.3f}-{hi:.3f} |\n")
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
             "_Generated by `python benchmarks/report.py` from `benchmarks/results/*.json`; do not edit by hand "
             "(readings live in `benchmarks/readings/`)._\n\n"
             "**Real anatomy is the measure now (sections 0 and 0b).** Sections 0-1 were rerun for the "
             "current default (trained on mini-MIAS anatomy and phantoms, 2026-12-05); sections 2-7 still "
             "measure the previous, phantom-only default (sha256 `204db20bc0`) on the phantom before its "
             "nipple-streak fix, until `bash benchmarks/rerun_default.sh` is run on a quiet machine. "
             "Sections 0-6 run on CPU on a shared 2-core machine and are sized for that (section 7 on a GPU "
             "lent for one session); every number below "
             "comes from the JSON next to it, which records the machine, date and exact command. Test phantoms "
             "use seeds 10 000+ (training phantoms use hashed seeds; disjointness is checked against each model "
             "card). BM3D (`bm3d` 4.0.3, non-commercial licence) is imported only by the benchmark scripts. "
             "When the default's weights change, `bash benchmarks/rerun_default.sh PREVIOUS.safetensors LABEL` "
             "reruns every CPU benchmark that measures it, writes the held-out numbers into the "
             "shipped cards (`benchmarks/card_metrics.py`) and regenerates this file.\n\n"
             "| benchmark | command | sizes, time | status |\n|---|---|---|---|\n"]
    docs = {name: load(name) for name, _, _ in SECTIONS}
    for name, title, _ in SECTIONS:
        doc = docs[name]
        parts.append(f"| {title.split('. ', 1)[1]} | `{doc['command'] if doc else COMMANDS[name]}` | "
                     f"{SIZES[name]} | {'done ' + doc['date'][:10] if doc else 'pending'} |\n")
    for name, title, fn in SECTIONS:
        parts.append(f"\n## {title}\n\n")
        doc = docs[name]
        if doc is None:
            parts.append(pending(name))
        else:
            parts.append(fn(doc))
        parts.append(reading(name))
    OUT.write_text("".join(parts))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
