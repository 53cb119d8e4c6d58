"""Speed and memory on this machine, all in ONE run so that ratios compare like with like.

    python benchmarks/speed.py                       # everything (BM3D full field takes minutes)
    python benchmarks/speed.py --skip-bm3d-full      # BM3D only on 512x512 (ratio still measured)
    python benchmarks/speed.py --models mammo-unet=default --size 1024 768 --tile 512 \
        --mem-sizes 512 512 --skip-training --skip-bm3d-full --repeats 1 --full-repeats 1 \
        --no-compile --name speed-quick              # a two-minute check that every part runs

Measures (CPU, torch threads = usable cores unless --threads; converted engines are cached in a
temporary folder, so conversion is timed cold):
- matrix-multiply peak: torch.matmul of 2048x2048 float32, best of --repeats, at the start and
  at the end of the run (the higher one is "the peak"; the two show how steady the machine was);
- the network alone on one tile (the full field's tile shape, 1024-class; 256x256 for models
  above --extrapolate-above MAC/pixel) for every way of running it: PyTorch eager in NCHW and in
  channels_last, ``torch.compile`` (channels_last), ONNX Runtime and OpenVINO (installed ones,
  ``mammo_denoise.engines``), each at 1 thread and at all cores, interleaved round by round:
  best and median seconds, GFLOP/s = 2 * conv MACs / time, fraction of the matmul peak, and the
  one-off conversion / compile time;
- whole-image denoising of a 3328x2560 phantom (default tiling, true NoiseParams) per model and
  per engine (``denoise(..., engine=)``; engines interleaved per repeat, each run in a fresh
  process), with the safeguard (what
  a user waits for) and without it (the network pass); models above --extrapolate-above are
  timed once on a 1024x1024 region and scaled by the pixels computed; marked "extrapolated"):
  seconds, tiles/s, and the achieved GFLOP/s = 2 * conv MACs of all tiles processed
  (``models.count_macs`` per tile x tiles, overlap included) / time of the network pass, against
  the matmul peak; the same on a 512x512 crop; BM3D (GAT domain) on the crop and the full field,
  and each engine's speed against BM3D's per pixel;
- where the time of the default model's full field goes with the fastest engine (network,
  tile transform, inverse transform, frame constants, safeguard, the rest: tiling and blending)
  and, for OpenVINO, the network's time by layer type (its PERF_COUNT profile of one tile);
- the issue #26 targets for the default model with the fastest engine: <= 2.5 s per full field,
  >= 100x BM3D per pixel, >= 60 % of the matmul peak, peak memory no higher than PyTorch's;
- peak memory of the default model's ``denoise`` on 2048x2048, 3328x2560 and 4096x3328 for each
  engine in --mem-engines, each in a fresh subprocess: RSS before, peak RSS during ``denoise``
  (the kernel's VmHWM after resetting it through /proc/self/clear_refs once the model, the engine
  and the image are set up and one small image has run), tracemalloc peak (numpy arrays; torch's
  CPU allocator is not traced) and the float32 image size for context;
- training throughput: ``train()`` of a U-Net, patch 64, batch 16 (patches/s from the
  TrainStep timestamps after the first interval; phantom generation and validation excluded);
- dose simulation at full resolution (``simulate_dose`` moments, binomial) and the napari
  slider preview (every k-th pixel with k = ceil(max(H, W) / PREVIEW_MAX_SIDE), as
  napari/_widgets/dose.py does).
"""

from __future__ import annotations

import argparse
import dataclasses
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
def child_memory(h, w, model, threads, tile, engine="torch"):
    C.set_threads(threads)
    import torch  # noqa: F401

    from mammo_denoise.inference import denoise

    den = C.load(C.ModelSpec("m", model, {}))
    z, p = synthetic_raw((h, w))
    # Set-up, not measured: the engine's library and converted graph, torch's first kernels.
    denoise(z[:128, :128], model=den, params=p, device="cpu", tile=tile, engine=engine, safeguard=False)
    setup_peak = rss_mb()
    reset = reset_peak_rss()
    base_now = current_rss_mb()
    tracemalloc.start()
    t = C.timer()
    denoise(z, model=den, params=p, device="cpu", tile=tile, engine=engine)
    secs = t()
    _, tm_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = _status_mb("VmHWM") if reset else rss_mb()
    print(json.dumps({"shape": [h, w], "engine": engine, "rss_before_mb": base_now, "setup_peak_mb": setup_peak,
                      "peak_rss_mb": peak, "peak_reset_ok": reset, "tracemalloc_peak_mb": tm_peak / 2**20,
                      "image_float32_mb": h * w * 4 / 2**20, "seconds": secs}))


def child_timing(image_npy, params, model, threads, tile, engine, repeats, scale):
    """One engine's crop / full-field / network-pass times in a process of its own: in one process
    the other engines' worker threads keep a core busy after they return, which slowed PyTorch's
    full field 2.3x in a run of 2026-12-05. ``scale`` > 0: the image is a region of the full
    field, and its times are scaled by ``scale`` (the pixels the network computes)."""
    C.set_threads(threads)
    from mammo_denoise.physics.params import NoiseParams

    den = C.load(C.ModelSpec("m", model, {}))
    z = np.load(image_npy)
    p = NoiseParams(**params)
    crop = z[z.shape[0] // 2 - 256:z.shape[0] // 2 + 256, :512] if min(z.shape) >= 1024 else z[:512, :512]
    time_model(den, crop[:128, :128], p, tile, engine)  # set-up, not measured: conversion, first kernels
    rows = {"crop": [], "full": [], "net": []}
    for _ in range(repeats):
        rows["crop"].append(time_model(den, crop, p, tile, engine)[0])
        region = z[:1024, :1024] if scale else z
        rows["full"].append(time_model(den, region, p, tile, engine)[0] * (scale or 1.0))
        rows["net"].append(time_model(den, region, p, tile, engine, safeguard=False)[0] * (scale or 1.0))
    print(json.dumps(rows))


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


def time_model(den, z, p, tile, engine="torch", safeguard=True):
    from mammo_denoise.inference import denoise

    info = {}

    def prog(done, total):
        info["tiles"] = total

    t = C.timer()
    denoise(z, model=den, params=p, device="cpu", tile=tile, progress=prog, engine=engine, safeguard=safeguard)
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


# ----------------------------------------------------------------------------- engines
ENGINE_ORDER = ("torch", "onnxruntime", "openvino")


def engine_list(asked) -> list[str]:
    from mammo_denoise import engines

    names = asked or [e for e in ENGINE_ORDER if engines.is_installed(e)]
    missing = [e for e in names if not engines.is_installed(e)]
    if missing:
        raise SystemExit(f"engines not installed: {', '.join(missing)} ({engines.INSTALL_HINT.get(missing[0], '')})")
    return names


def _tile_shape(den, shape, tile):
    (_, ty, *_), (_, tx, *_) = _layouts(den, shape, tile)
    return ty, tx


def tile_variants(den, threads_list, compile_):
    """name -> (seconds to build it, run(x)) for the network on one tile, each way of running it."""
    import copy
    import warnings

    import torch

    from mammo_denoise import engines

    variants = {}
    for layout in ("nchw", "channels_last"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        net = copy.deepcopy(den.net).eval().to(memory_format=fmt)
        for t in threads_list:
            def run(x, net=net, fmt=fmt, t=t):
                torch.set_num_threads(t)
                with torch.inference_mode():
                    return net(x.contiguous(memory_format=fmt))
            variants[f"torch eager {layout}, {t} thr"] = (0.0, run)
    if compile_:
        net = copy.deepcopy(den.net).eval().to(memory_format=torch.channels_last)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = torch.compile(net, dynamic=False)
            for t in threads_list:
                def run(x, t=t):
                    torch.set_num_threads(t)
                    with torch.inference_mode():
                        return compiled(x.contiguous(memory_format=torch.channels_last))
                variants[f"torch.compile channels_last, {t} thr"] = (None, run)  # compiles on first call
        except Exception as exc:  # noqa: BLE001
            print(f"torch.compile unavailable: {exc}")
    for name in ("onnxruntime", "openvino"):
        if not engines.is_installed(name):
            continue
        for t in threads_list:
            engines._memo.clear()
            t0 = time.perf_counter()
            try:
                eng = engines.load_engine(name, den.net, den.card, t)
            except Exception as exc:  # noqa: BLE001
                print(f"{name}: {exc}")
                break
            build = time.perf_counter() - t0

            def run(x, eng=eng):
                torch.set_num_threads(1)  # torch only hands the array over
                return eng(x)
            variants[f"{name}, {t} thr"] = (build, run)
    return variants


def tile_bench(den, shape, repeats, threads, compile_, peak):
    """The network alone on one tile of ``shape``, every variant, interleaved round by round."""
    import torch

    x = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(0))
    threads_list = sorted({1, threads})
    variants = tile_variants(den, threads_list, compile_)
    times = {k: [] for k in variants}
    first = {}
    for name, (build, run) in variants.items():  # warm-up (torch.compile compiles here)
        t0 = time.perf_counter()
        run(x)
        first[name] = time.perf_counter() - t0
    for _ in range(repeats):
        for name, (_, run) in variants.items():
            time.sleep(0.1)  # let the previous variant's idle worker threads go to sleep
            t0 = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - t0)
    torch.set_num_threads(threads)  # the variants set their own; the rest of the run uses all
    mpp = macs_per_pixel(den)
    flop = 2 * mpp * shape[0] * shape[1]
    ref = min(min(v) for k, v in times.items() if k.startswith("torch eager channels_last"))
    out = {}
    for name, v in times.items():
        best = min(v)
        build = variants[name][0]
        out[name] = {"best_s": best, "median_s": float(np.median(v)), "gflops": flop / best / 1e9,
                     "fraction_of_matmul_peak": flop / best / 1e9 / peak,
                     "speedup_vs_torch_channels_last": ref / best,
                     "build_s": build if build is not None else first[name], "first_call_s": first[name]}
        print(f"  tile {shape[0]}x{shape[1]} {name:36s} {best:7.3f} s (median {np.median(v):.3f})  "
              f"{out[name]['gflops']:6.1f} GFLOP/s {100 * out[name]['fraction_of_matmul_peak']:4.0f} %  "
              f"x{out[name]['speedup_vs_torch_channels_last']:.2f}", flush=True)
    return {"shape": list(shape), "repeats": repeats, "variants": out,
            "note": "build_s: torch.compile's first call; for an engine, its conversion at the first "
                    "thread count (cold cache) and a load from the cache at the next"}


def profile_full(den, z, p, tile, engine):
    """Where one full-field ``denoise`` spends its time (wrapped functions, summed)."""
    import mammo_denoise.inference as inf

    acc = {}

    def timed(label, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                acc[label] = acc.get(label, 0.0) + time.perf_counter() - t0
        return wrapper

    saved = [(inf._Transform, "forward"), (inf._Transform, "inverse"), (inf._Transform, "__init__"),
             (inf, "field_parts"), (inf, "_safeguard_frame"), (inf, "load_engine")]
    old = [(o, n, getattr(o, n)) for o, n in saved]
    labels = {"forward": "tile transform (GAT, float32 cast)", "inverse": "inverse transform (exact)",
              "__init__": "frame constants (median, noise model)", "field_parts": "field parts",
              "_safeguard_frame": "safeguard"}
    load_engine = inf.load_engine
    old_forward = den.net.forward
    try:
        for o, n, f in old:
            if n in labels:
                setattr(o, n, timed(labels[n], f))
        if engine == "torch":
            den.net.forward = timed("network", old_forward)
        else:
            class Timed:  # the engine, its calls timed
                def __init__(self, eng):
                    self.release, self.__call__ = eng.release, timed("network", eng)

                def __call__(self, x):
                    return self.__dict__["__call__"](x)

            inf.load_engine = lambda *a, **k: Timed(load_engine(*a, **k))
        t0 = time.perf_counter()
        inf.denoise(z, model=den, params=p, device="cpu", tile=tile, engine=engine)
        total = time.perf_counter() - t0
    finally:
        for o, n, f in old:
            setattr(o, n, f)
        if "forward" in den.net.__dict__:
            del den.net.forward
    acc["rest: cutting tiles, blending, normalising"] = total - sum(acc.values())
    parts = {k: {"s": v, "fraction": v / total} for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}
    for k, v in parts.items():
        print(f"  {k:46s} {v['s']:6.2f} s {100 * v['fraction']:4.0f} %")
    return {"engine": engine, "total_s": total, "parts": parts}


def openvino_layer_profile(den, shape, threads):
    """OpenVINO's own per-layer times (PERF_COUNT) for one tile, summed by layer type."""
    import openvino as ov
    import torch

    from mammo_denoise import engines

    with engines._quiet(), torch.no_grad():
        model = ov.convert_model(den.net, example_input=engines._example(den.net),
                                 input=[ov.PartialShape([-1, 1, -1, -1])])
    cm = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True})
    req = cm.create_infer_request()
    x = np.random.default_rng(0).standard_normal((1, 1, *shape)).astype(np.float32)
    req.infer({0: x})
    t0 = time.perf_counter()
    req.infer({0: x})
    wall = time.perf_counter() - t0
    by_type: dict = {}
    for info in req.get_profiling_info():
        key = f"{info.node_type} ({info.exec_type})"
        by_type[key] = by_type.get(key, 0.0) + info.real_time.total_seconds()
    total = sum(by_type.values())
    out = {k: {"s": v, "fraction": v / total} for k, v in sorted(by_type.items(), key=lambda kv: -kv[1]) if v > 0}
    for k, v in list(out.items())[:8]:
        print(f"  openvino {k:40s} {v['s'] * 1000:7.1f} ms {100 * v['fraction']:4.0f} %")
    return {"shape": list(shape), "threads": threads, "wall_s": wall, "sum_of_layers_s": total, "by_type": out}


def targets(res, label, engine) -> dict:
    """Issue #26's bars for the default model with the fastest engine, measured in this run."""
    r = res["models"][f"{label} [{engine}]"]
    torch_row = res["models"].get(f"{label} [torch]")
    frac = r["gflops"] / res["matmul_peak_gflops"]
    out = {"engine": engine, "size": res.get("full_shape"),
           "full_field_s": {"value": r["full_s"], "bar": 2.5, "met": r["full_s"] <= 2.5},
           "fraction_of_matmul_peak": {"value": frac, "bar": 0.6, "met": frac >= 0.6,
                                       "note": "network pass; peak = the higher matmul of start and end"}}
    if "speedup_vs_bm3d_per_pixel" in r:
        out["bm3d_per_pixel"] = {"value": r["speedup_vs_bm3d_per_pixel"], "bar": 100,
                                 "met": r["speedup_vs_bm3d_per_pixel"] >= 100}
    mem = {m.get("engine"): m for m in res.get("memory_by_engine") or [] if "peak_increase_mb" in m
           and tuple(m["shape"]) == tuple(res.get("full_shape", ()))}
    if engine in mem and "torch" in mem:
        out["peak_memory_mb"] = {"value": mem[engine]["peak_increase_mb"], "torch": mem["torch"]["peak_increase_mb"],
                                 "met": mem[engine]["peak_increase_mb"] <= 1.1 * mem["torch"]["peak_increase_mb"]}
    if torch_row:
        out["speedup_vs_torch"] = torch_row["full_s"] / r["full_s"]
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
    ap.add_argument("--engines", nargs="*", choices=ENGINE_ORDER,
                    help="engines for the full field (default: every installed one)")
    ap.add_argument("--mem-engines", nargs="*", choices=ENGINE_ORDER,
                    help="engines for the memory children (default: torch and the fastest)")
    ap.add_argument("--full-repeats", type=int, default=2, help="full-field runs per engine (interleaved)")
    ap.add_argument("--no-tile-bench", action="store_true", help="skip the one-tile comparison")
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the one-tile comparison")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--child-mem", type=int, nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child-model", help=argparse.SUPPRESS)
    ap.add_argument("--child-engine", default="torch", help=argparse.SUPPRESS)
    ap.add_argument("--child-timing", nargs=4, help=argparse.SUPPRESS)  # image.npy params.json repeats scale
    args = ap.parse_args(argv)
    if args.child_timing:
        npy, prm, reps, scale = args.child_timing
        child_timing(npy, json.loads(prm), args.child_model, args.threads, args.tile, args.child_engine,
                     int(reps), float(scale))
        return
    if args.child_mem:
        child_memory(*args.child_mem, args.child_model, args.threads, args.tile, args.child_engine)
        return
    started = time.perf_counter()
    threads = C.set_threads(args.threads)
    from mammo_denoise import engines as E

    engine_names = engine_list(args.engines)
    # Converted graphs go to a fresh folder (conversion is timed cold; the user's cache untouched);
    # the memory children inherit it and find the graphs converted here.
    cache = tempfile.TemporaryDirectory(prefix="speed-engines-")
    os.environ[E.ENV_CACHE_DIR] = cache.name
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
    res = {"threads": threads, "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    print(f"threads {threads}; models {[s.label for s in specs]}; default {default.label}")

    res["matmul"] = matmul_peak(max(args.repeats, 5))
    peak = res["matmul"]["gflops"]
    print(f"matmul 2048^2 fp32: {peak:.1f} GFLOP/s")

    from mammo_denoise.physics.phantom import make_phantom

    t = C.timer()
    ph = make_phantom(seed=C.TEST_SEED0, shape=tuple(args.size), view="CC", dose=0.2)
    res["phantom_generation_s"] = t()
    z, p = ph.noisy, ph.params
    res["full_shape"] = list(z.shape)
    image_npy = Path(tempfile.mkdtemp(prefix="mammo-speed-")) / "full_field.npy"
    np.save(image_npy, z)  # the timing children read the same image
    crop = z[:512, :512] if min(z.shape) < 1024 else z[z.shape[0] // 2 - 256:z.shape[0] // 2 + 256, :512]

    res["dose"] = dose_timings(z, p, args.repeats)
    print(f"dose simulation {z.shape}: {res['dose']['full_moments_s']:.3f} s (moments); "
          f"preview {res['dose']['preview_shape']}: {res['dose']['preview_s'] * 1000:.1f} ms")

    models, tiles, fastest = {}, {}, {}
    for s in specs:
        den = C.load(s)
        mpp = macs_per_pixel(den)
        heavy = bool(args.extrapolate_above and mpp > args.extrapolate_above)
        if not args.no_tile_bench:
            shape = (256, 256) if heavy else _tile_shape(den, z.shape, args.tile)
            print(f"{s.label}: the network alone on one tile", flush=True)
            tiles[s.label] = tile_bench(den, shape, args.repeats, threads, not args.no_compile, peak)
        computed = computed_pixels(den, z.shape, args.tile)
        region = z[:1024, :1024]
        scale = computed / computed_pixels(den, region.shape, args.tile) if heavy else 0.0
        rows = {e: {"crop": [], "full": [], "net": []} for e in engine_names}
        for _ in range(1 if heavy else args.full_repeats):
            for e in engine_names:  # interleaved, each in a fresh process (child_timing)
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child-timing", str(image_npy),
                       json.dumps(dataclasses.asdict(p)), "1", str(scale),
                       "--child-model", s.path, "--child-engine", e, "--threads", str(threads),
                       "--tile", str(args.tile)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                got = json.loads(out.stdout.strip().splitlines()[-1])
                for k in rows[e]:
                    rows[e][k] += got[k]
        tiles_full = tile_count(den, z.shape, args.tile)
        for e in engine_names:
            t_full, t_net, t_crop = min(rows[e]["full"]), min(rows[e]["net"]), min(rows[e]["crop"])
            r = {"architecture": s.architecture, "arch_kwargs": s.card.get("arch_kwargs", {}), "engine": e,
                 "tile": args.tile, "macs_per_pixel": mpp, "overlap": den.default_overlap,
                 "computed_over_image_pixels": computed / z.size,
                 "crop_512_s": t_crop, "crop_512_tiles": tile_count(den, crop.shape, args.tile),
                 "full_s": t_full, "full_network_pass_s": t_net, "safeguard_s": t_full - t_net,
                 "full_runs_s": rows[e]["full"], "full_tiles": tiles_full, "tiles_per_s": tiles_full / t_net,
                 "full_extrapolated": heavy,
                 "gflops": 2 * mpp * computed / t_net / 1e9,
                 "gflops_useful": 2 * mpp * z.size / t_net / 1e9,
                 "note": "full_s: denoise() as a user runs it (safeguard on); GFLOP/s from the network "
                         "pass (safeguard off), best of the interleaved repeats"}
            r["fraction_of_matmul_peak"] = r["gflops"] / peak
            label = f"{s.label} [{e}]"
            models[label] = r
            print(f"{label:32s} full {t_full:7.2f} s (network pass {t_net:.2f} s){' extrapolated' if heavy else ''}  "
                  f"{r['gflops']:.1f} GFLOP/s ({100 * r['fraction_of_matmul_peak']:.0f} % of matmul); "
                  f"512^2 {t_crop:.2f} s", flush=True)
        fastest[s.label] = min(engine_names, key=lambda e: models[f"{s.label} [{e}]"]["full_s"])
        for e in engine_names:
            models[f"{s.label} [{e}]"]["speedup_vs_torch"] = (models[f"{s.label} [torch]"]["full_s"]
                                                              / models[f"{s.label} [{e}]"]["full_s"]) \
                if "torch" in engine_names else None
    res["tile_bench"] = tiles
    res["models"] = models
    best = fastest[default.label]
    res["default_model"] = f"{default.label} [{best}]"
    res["engines"] = {"installed": E.installed(), "timed": engine_names, "auto_order": list(E.AUTO_ORDER),
                      "fastest_per_model": fastest}
    if not args.no_profile:
        den = C.load(default)
        print(f"where the time goes: {default.label}, {best}, {z.shape[0]}x{z.shape[1]}", flush=True)
        res["profile"] = {"full_field": profile_full(den, z, p, args.tile, best)}
        if E.is_installed("openvino"):
            res["profile"]["openvino_layers"] = openvino_layer_profile(
                den, _tile_shape(den, z.shape, args.tile), threads)

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
            # per pixel: BM3D's seconds per pixel (full field if run, else the crop) over ours
            bm3d_px = b["full_s"] / z.size if "full_s" in b else b["crop_512_s"] / crop.size
            r["speedup_vs_bm3d_per_pixel"] = bm3d_px / (r["full_s"] / z.size)
            if "full_s" in b:
                r["speedup_vs_bm3d_full"] = b["full_s"] / r["full_s"]

    if not args.skip_memory:
        mem = []
        sizes = list(zip(args.mem_sizes[::2], args.mem_sizes[1::2]))
        mem_engines = args.mem_engines or list(dict.fromkeys(["torch", best]))
        for h, w in sizes:
            for e in mem_engines:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child-mem", str(h), str(w),
                       "--child-model", default.path, "--threads", str(threads), "--tile", str(args.tile),
                       "--child-engine", e]
                out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                try:
                    rec = json.loads(out.stdout.strip().splitlines()[-1])
                except (IndexError, json.JSONDecodeError):
                    rec = {"shape": [h, w], "engine": e, "error": out.stderr[-2000:]}
                if "peak_rss_mb" in rec:
                    rec["peak_increase_mb"] = rec["peak_rss_mb"] - rec["rss_before_mb"]
                    rec["increase_over_image_size"] = rec["peak_increase_mb"] / rec["image_float32_mb"]
                    print(f"memory {h}x{w} [{e}]: peak RSS {rec['peak_rss_mb']:.0f} MB "
                          f"(+{rec['peak_increase_mb']:.0f} MB during denoise = {rec['increase_over_image_size']:.1f}x the float32 image), "
                          f"tracemalloc peak {rec['tracemalloc_peak_mb']:.0f} MB", flush=True)
                mem.append(rec)
        # report.py's memory line reads every row as the default's: keep the fastest engine's
        # there, every engine's under memory_by_engine
        res["memory_by_engine"] = mem
        res["memory"] = [r for r in mem if r.get("engine") == best]

    if not args.skip_training:
        res["training"] = training_throughput(args.train_iters, threads)
        print(f"training unet patch 64 batch 16: {res['training'].get('patches_per_s', float('nan')):.1f} patches/s")

    res["matmul_end"] = matmul_peak(max(args.repeats, 5))
    res["matmul_peak_gflops"] = max(peak, res["matmul_end"]["gflops"])
    # every fraction against the same peak: the higher of the two measurements
    for r in list(res["models"].values()) + [v for t in res["tile_bench"].values() for v in t["variants"].values()]:
        r["fraction_of_matmul_peak"] = r["gflops"] / res["matmul_peak_gflops"]
    print(f"matmul 2048^2 fp32 at the end: {res['matmul_end']['gflops']:.1f} GFLOP/s")
    res["targets"] = targets(res, default.label, best)
    for k, v in res["targets"].items():
        print(f"target {k}: {v}")
    try:
        res["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    C.write_result(args.name, {"settings": {"size": list(args.size), "tile": args.tile, "threads": threads,
                                            "params": p.to_dict()},
                               "model_cards": [s.describe() for s in specs], **res}, started)


if __name__ == "__main__":
    main()
