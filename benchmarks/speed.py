"""Speed and memory on this machine, all in ONE run so that ratios compare like with like.

    python benchmarks/speed.py                       # everything (BM3D full field takes minutes)
    python benchmarks/speed.py --skip-bm3d-full      # BM3D only on 512x512 (ratio still measured)

Measures (CPU, torch threads = usable cores unless --threads):
- matrix-multiply peak: torch.matmul of 2048x2048 float32, best of --repeats;
- whole-image denoising of a 3328x2560 phantom (default tiling, true NoiseParams) per model
  (models above --extrapolate-above MAC/pixel, i.e. the 1.7 M-parameter Eckert ResNet, are timed on
  a 1024x1024 region and scaled by tile count; marked "extrapolated"):
  seconds, tiles/s, and for every model the achieved GFLOP/s = 2 * conv MACs of all tiles
  processed (``models.count_macs`` per tile x tiles, overlap included) / time, against the
  matmul peak; the same on a 512x512 crop; BM3D (GAT domain) on the crop and the full field;
- peak memory of the default model's ``denoise`` on 2048x2048, 3328x2560 and 4096x3328, each in
  a fresh subprocess: RSS before, peak RSS during ``denoise`` (the kernel's VmHWM after resetting
  it through /proc/self/clear_refs once the model and image are set up), tracemalloc peak (numpy
  arrays; torch's CPU allocator is not traced) and the float32 image size for context;
- training throughput: ``train()`` of a U-Net, patch 64, batch 16 (patches/s from the
  TrainStep timestamps after the first interval; phantom generation and validation excluded);
- dose simulation at full resolution (``simulate_dose`` moments, binomial) and the napari
  slider preview (every k-th pixel with k = ceil(max(H, W) / PREVIEW_MAX_SIDE), as
  napari/_widgets/dose.py does).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
from mammo_denoise.inference import DEFAULT_TILE  # noqa: E402

FULL = (3328, 2560)
MEM_SIZES = ((2048, 2048), (3328, 2560), (4096, 3328))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _status_mb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process: Linux ``clear_refs`` value 5."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def synthetic_raw(shape, seed=0, photons=600.0):
    """A raw image with the detector model (smooth attenuation ramp; denoising cost does not
    depend on content). Used only by the memory children, to keep their setup small."""
    from mammo_denoise.physics.params import NoiseParams
    from mammo_denoise.physics.phantom import detector_image

    p = NoiseParams(50.0, 2.0, 3.0)
    h, w = shape
    lam = photons * (0.5 + 0.5 * np.linspace(0, 1, w, dtype=np.float32))[None, :].repeat(h, 0)
    z, _ = detector_image(lam, p, 1.0, np.random.default_rng(seed))
    return z, p


# ----------------------------------------------------------------------------- children
def child_memory(h, w, model, threads, tile):
    C.set_threads(threads)
    import torch  # noqa: F401

    den = C.load(C.ModelSpec("m", model, {}))
    z, p = synthetic_raw((h, w))
    setup_peak = rss_mb()
    reset = reset_peak_rss()
    base_now = current_rss_mb()
    tracemalloc.start()
    t = C.timer()
    C.run_model(den, z, p, tile=tile)
    secs = t()
    _, tm_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = _status_mb("VmHWM") if reset else rss_mb()
    print(json.dumps({"shape": [h, w], "rss_before_mb": base_now, "setup_peak_mb": setup_peak,
                      "peak_rss_mb": peak, "peak_reset_ok": reset, "tracemalloc_peak_mb": tm_peak / 2**20,
                      "image_float32_mb": h * w * 4 / 2**20, "seconds": secs}))


# ----------------------------------------------------------------------------- parts
def matmul_peak(repeats):
    import torch

    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    torch.matmul(a, b)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return {"seconds_best": best, "gflops": 2 * 2048**3 / best / 1e9, "repeats": repeats}


def time_model(den, z, p, tile):
    from mammo_denoise.inference import denoise

    info = {}

    def prog(done, total):
        info["tiles"] = total

    t = C.timer()
    denoise(z, model=den, params=p, device="cpu", tile=tile, progress=prog)
    return t(), info.get("tiles", 1)


def macs_per_pixel(den) -> float:
    from mammo_denoise.models import count_macs

    return count_macs(den.net, (1, 1, 256, 256)) / 256**2


def _layouts(den, shape, tile):
    from mammo_denoise.inference import tile_layout

    return [tile_layout(n, tile, den.default_overlap, den.alignment) for n in shape]


def tile_count(den, shape, tile) -> int:
    (oy, *_), (ox, *_) = _layouts(den, shape, tile)
    return len(oy) * len(ox)


def computed_pixels(den, shape, tile) -> int:
    """Pixels the network actually computes: tiles x (shrunk) tile area, overlaps included."""
    (oy, ty, *_), (ox, tx, *_) = _layouts(den, shape, tile)
    return len(oy) * ty * len(ox) * tx


def training_throughput(iters, threads):
    from mammo_denoise.training import TrainConfig, TrainStep, train

    stamps = []

    def prog(msg):
        if isinstance(msg, TrainStep):
            stamps.append((time.perf_counter(), msg.iteration))

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(architecture="unet", phantoms=2, phantom_shape=(256, 256), patch=64,
                          batch_size=16, epochs=1, iters_per_epoch=iters, val_patches=16,
                          log_every=5, device="cpu", out=Path(tmp) / "speed-unet.safetensors",
                          dose_range=(0.1, 0.5), patience=None, seed=0)
        t = C.timer()
        train(cfg, progress=prog)
        total = t()
    if len(stamps) < 2:
        return {"error": "not enough TrainStep messages"}
    (t0, i0), (t1, i1) = stamps[0], stamps[-1]
    return {"patches_per_s": (i1 - i0) * 16 / (t1 - t0), "iterations_timed": i1 - i0,
            "batch": 16, "patch": 64, "architecture": "unet", "wall_incl_setup_s": total,
            "note": "steady state between the first and last TrainStep (data generation + step)"}


def preview_side() -> int:
    src = C.ROOT / "src" / "mammo_denoise" / "napari" / "_widgets" / "dose.py"
    try:
        m = re.search(r"PREVIEW_MAX_SIDE\s*=\s*(\d+)", src.read_text())
        return int(m.group(1))
    except (OSError, AttributeError):
        return 768


def dose_timings(z, p, repeats):
    from mammo_denoise.physics.dose import simulate_dose

    out = {}
    for method in ("moments", "binomial"):
        best = math.inf
        for r in range(repeats):
            t = time.perf_counter()
            simulate_dose(z, 0.2, p, method=method, rng=r)
            best = min(best, time.perf_counter() - t)
        out[f"full_{method}_s"] = best
    side = preview_side()
    step = max(1, math.ceil(max(z.shape) / side))
    best = math.inf
    for r in range(max(repeats, 5)):
        t = time.perf_counter()
        small = np.asarray(z[::step, ::step], dtype=np.float32)
        simulate_dose(small, 0.2, p, method="moments", rng=r)
        best = min(best, time.perf_counter() - t)
    out.update({"preview_s": best, "preview_step": step, "preview_shape": list(z[::step, ::step].shape),
                "preview_max_side": side, "shape": list(z.shape),
                "note": "best of repeats; preview = decimation + simulate_dose, without napari drawing"})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="name=path ... (default: every trained model found)")
    ap.add_argument("--default-model")
    ap.add_argument("--size", type=int, nargs=2, default=FULL, help="whole-image size")
    ap.add_argument("--mem-sizes", type=int, nargs="*", default=[v for s in MEM_SIZES for v in s],
                    help="H W pairs for the memory children")
    ap.add_argument("--skip-bm3d-full", action="store_true")
    ap.add_argument("--extrapolate-above", type=float, default=1e6,
                    help="MAC/pixel above which the whole-image time is extrapolated from a 1024x1024 "
                         "region with the same tiling (0: always run the whole image)")
    ap.add_argument("--no-bm3d", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--train-iters", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tile", type=int, default=DEFAULT_TILE, help="largest tile side (default: the core's)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--name", default="speed")
    ap.add_argument("--allow-untrained", action="store_true")
    ap.add_argument("--timing-architectures", nargs="*", default=[],
                    help="also time these architectures with random weights (labelled timing only)")
    ap.add_argument("--child-mem", type=int, nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child-model", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_mem:
        child_memory(*args.child_mem, args.child_model, args.threads, args.tile)
        return
    started = time.perf_counter()
    threads = C.set_threads(args.threads)
    specs = C.parse_models(args.models)
    if not args.allow_untrained:
        specs = [s for s in specs if C.is_trained(s)]
    tmpdir = None
    if args.timing_architectures:
        # Compute does not depend on the weights: architectures without trained weights are
        # timed with seeded random weights and labelled so (never used for quality numbers).
        from mammo_denoise.models import make_denoiser, save_model

        tmpdir = tempfile.TemporaryDirectory()
        for arch in args.timing_architectures:
            path = save_model(make_denoiser(arch, seed=0), Path(tmpdir.name) / f"{arch}-random")
            specs.append(C.ModelSpec(f"{arch} (random weights, timing only)", str(path), C._read_card(path)))
    default = C.default_model_spec(specs, args.default_model)
    if default is None:
        raise SystemExit("no model found; pass --models")
    res = {"threads": threads}
    print(f"threads {threads}; models {[s.label for s in specs]}; default {default.label}")

    res["matmul"] = matmul_peak(max(args.repeats, 5))
    peak = res["matmul"]["gflops"]
    print(f"matmul 2048^2 fp32: {peak:.1f} GFLOP/s")

    from mammo_denoise.physics.phantom import make_phantom

    t = C.timer()
    ph = make_phantom(seed=C.TEST_SEED0, shape=tuple(args.size), view="CC", dose=0.2)
    res["phantom_generation_s"] = t()
    z, p = ph.noisy, ph.params
    crop = z[:512, :512] if min(z.shape) < 1024 else z[z.shape[0] // 2 - 256:z.shape[0] // 2 + 256, :512]

    res["dose"] = dose_timings(z, p, args.repeats)
    print(f"dose simulation {z.shape}: {res['dose']['full_moments_s']:.3f} s (moments); "
          f"preview {res['dose']['preview_shape']}: {res['dose']['preview_s'] * 1000:.1f} ms")

    models = {}
    for s in specs:
        den = C.load(s)
        mpp = macs_per_pixel(den)
        C.run_model(den, crop[:128, :128], p)  # warm-up
        t_crop, tiles_crop = time_model(den, crop, p, args.tile)
        extrapolated = args.extrapolate_above and mpp > args.extrapolate_above
        if extrapolated:
            # Too slow to run whole on this machine: time a 1024x1024 region and scale by the
            # pixels the network computes (tiles x tile area; the cost per computed pixel is
            # constant).
            region = z[:1024, :1024]
            t_reg, _ = time_model(den, region, p, args.tile)
            t_full = t_reg / computed_pixels(den, region.shape, args.tile) * computed_pixels(den, z.shape, args.tile)
            tiles_full = tile_count(den, z.shape, args.tile)
        else:
            t_full, tiles_full = time_model(den, z, p, args.tile)
        computed = computed_pixels(den, z.shape, args.tile)
        r = {"architecture": s.architecture, "arch_kwargs": s.card.get("arch_kwargs", {}),
             "tile": args.tile, "macs_per_pixel": mpp, "overlap": den.default_overlap,
             "computed_over_image_pixels": computed / z.size,
             "crop_512_s": t_crop, "crop_512_tiles": tiles_crop,
             "full_s": t_full, "full_tiles": tiles_full, "tiles_per_s": tiles_full / t_full,
             "full_extrapolated": bool(extrapolated),
             "gflops": 2 * mpp * computed / t_full / 1e9,
             "gflops_useful": 2 * mpp * z.size / t_full / 1e9}
        r["fraction_of_matmul_peak"] = r["gflops"] / peak
        models[s.label] = r
        print(f"{s.label:24s} full {t_full:8.1f} s{' (extrapolated)' if extrapolated else ''}  {r['tiles_per_s']:.2f} tiles/s  "
              f"{r['gflops']:.1f} GFLOP/s ({100 * r['fraction_of_matmul_peak']:.0f} % of matmul); "
              f"512^2 {t_crop:.2f} s", flush=True)
    res["models"] = models
    res["default_model"] = default.label

    if not args.no_bm3d and C.have_bm3d():
        t = C.timer()
        C.bm3d_anscombe(crop, p)
        b = {"crop_512_s": t()}
        print(f"BM3D 512^2: {b['crop_512_s']:.1f} s", flush=True)
        if not args.skip_bm3d_full:
            t = C.timer()
            C.bm3d_anscombe(z, p)
            b["full_s"] = t()
            print(f"BM3D {z.shape}: {b['full_s']:.1f} s", flush=True)
        res["bm3d"] = b
        for label, r in models.items():
            r["speedup_vs_bm3d_crop"] = b["crop_512_s"] / r["crop_512_s"]
            if "full_s" in b:
                r["speedup_vs_bm3d_full"] = b["full_s"] / r["full_s"]

    if not args.skip_memory:
        mem = []
        sizes = list(zip(args.mem_sizes[::2], args.mem_sizes[1::2]))
        for h, w in sizes:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child-mem", str(h), str(w),
                   "--child-model", default.path, "--threads", str(threads), "--tile", str(args.tile)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            try:
                rec = json.loads(out.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                rec = {"shape": [h, w], "error": out.stderr[-2000:]}
            if "peak_rss_mb" in rec:
                rec["peak_increase_mb"] = rec["peak_rss_mb"] - rec["rss_before_mb"]
                rec["increase_over_image_size"] = rec["peak_increase_mb"] / rec["image_float32_mb"]
                print(f"memory {h}x{w}: peak RSS {rec['peak_rss_mb']:.0f} MB (+{rec['peak_increase_mb']:.0f} MB "
                      f"during denoise = {rec['increase_over_image_size']:.1f}x the float32 image), "
                      f"tracemalloc peak {rec['tracemalloc_peak_mb']:.0f} MB", flush=True)
            mem.append(rec)
        res["memory"] = mem

    if not args.skip_training:
        res["training"] = training_throughput(args.train_iters, threads)
        print(f"training unet patch 64 batch 16: {res['training'].get('patches_per_s', float('nan')):.1f} patches/s")

    try:
        res["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    C.write_result(args.name, {"settings": {"size": list(args.size), "tile": args.tile, "threads": threads,
                                            "params": p.to_dict()},
                               "model_cards": [s.describe() for s in specs], **res}, started)


if __name__ == "__main__":
    main()
