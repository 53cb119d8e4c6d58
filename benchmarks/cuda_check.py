"""The CUDA inference path: the same answer as the CPU's, and its speed on the GPU.

    python benchmarks/cuda_check.py [--part speed|agreement|layout|all] [--seeds ...]
                                    [--models mammo-unet eckert-resnet]

Needs a CUDA GPU (it exits with a message otherwise); CI never runs it.

* agreement: held-out phantoms (1024 x 1024, 20 % dose) denoised in 512-px tiles on the CPU
  (float32, the reference), on the GPU in float32 (the default) and under fp16 autocast
  (``amp=True``), and on the GPU in one whole-image pass. Reported: the largest difference from the CPU
  as a fraction of the data range, and each output's PSNR against the noise-free truth inside
  the breast, so a precision problem shows as lost dB rather than as an abstract number.
* speed: a 3328 x 2560 field (the quality bar's size) on the GPU, float32 and fp16 autocast,
  at batch sizes 2 (the default) and 8; median of 5 after a warm-up. The time includes the
  Anscombe round trip on the host and the copies, as a user sees it.
* layout: the network alone on a batch of 2 default tiles, float32 and fp16, in NCHW and in
  channels_last (NHWC): where the NHWC layout helps (``inference.use_channels_last``).
"""
from __future__ import annotations

import statistics
import time

import numpy as np

import common as C

FIELD = (3328, 2560)
TILE = 512  # 4 tiles per 1024 x 1024 phantom, so that the seams are tested too


def _psnr(img, truth, mask, data_range) -> float:
    mse = float(np.mean((img[mask].astype(np.float64) - truth[mask]) ** 2))
    return 10 * np.log10(data_range**2 / mse)


def agreement(models, seeds) -> dict:
    import torch

    from mammo_denoise.inference import denoise
    from mammo_denoise.physics.phantom import make_phantom

    out = {}
    for name in models:
        rows = []
        for seed in seeds:
            # the view as the quality benchmark's (common.make_case)
            ph = make_phantom(seed=seed, shape=(1024, 1024), view="CC" if seed % 2 == 0 else "MLO", dose=0.2)
            off = ph.params.offset  # the phantom's truth is the full-dose signal
            truth = off + 0.2 * (ph.truth.astype(np.float64) - off)
            rng = float(truth[ph.mask].max() - truth[ph.mask].min())
            runs = {
                "cpu_fp32": denoise(ph.noisy, name, ph.params, device="cpu", tile=TILE),
                "cuda_fp32": denoise(ph.noisy, name, ph.params, device="cuda", amp=False, tile=TILE),
                "cuda_amp": denoise(ph.noisy, name, ph.params, device="cuda", amp=True, tile=TILE),
                "cuda_fp32_whole": denoise(ph.noisy, name, ph.params, device="cuda", amp=False, tile=None),
            }
            ref = runs["cpu_fp32"]
            row = {"seed": seed, "data_range": rng,
                   "psnr_noisy": _psnr(ph.noisy, truth, ph.mask, rng)}
            for key, img in runs.items():
                row[f"psnr_{key}"] = _psnr(img, truth, ph.mask, rng)
                if key != "cpu_fp32":
                    row[f"maxdiff_{key}_vs_cpu"] = float(np.abs(img - ref).max() / rng)
            row["maxdiff_whole_vs_tiled_cuda"] = float(
                np.abs(runs["cuda_fp32_whole"] - runs["cuda_fp32"]).max() / rng)
            rows.append(row)
            print(name, {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        out[name] = rows
    out["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    out["cudnn_tf32"] = torch.backends.cudnn.allow_tf32
    return out


def speed(models) -> dict:
    import torch

    from mammo_denoise.inference import denoise
    from mammo_denoise.physics.phantom import make_phantom

    ph = make_phantom(seed=C.TEST_SEED0, shape=(1024, 1024), dose=0.2)
    reps = [int(np.ceil(FIELD[0] / 1024)), int(np.ceil(FIELD[1] / 1024))]
    field = np.tile(ph.noisy, reps)[: FIELD[0], : FIELD[1]].copy()
    out = {"field": list(FIELD), "gpu": torch.cuda.get_device_name(0)}
    for name in models:
        for amp in (False, True):
            for batch in (2, 8):
                denoise(field, name, ph.params, device="cuda", amp=amp, batch_size=batch)  # warm-up
                times = []
                for _ in range(5):
                    t = time.perf_counter()
                    denoise(field, name, ph.params, device="cuda", amp=amp, batch_size=batch)
                    times.append(time.perf_counter() - t)
                key = f"{name} {'amp' if amp else 'fp32'} batch {batch}"
                out[key] = {"median_s": statistics.median(times), "all_s": times}
                print(f"{key}: {statistics.median(times):.3f} s", flush=True)
        torch.cuda.reset_peak_memory_stats()
        denoise(field, name, ph.params, device="cuda", amp=True, batch_size=2)
        out[f"{name} peak_gpu_mib amp batch 2"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def layout(models) -> dict:
    """The network alone on one batch of 2 default tiles (with their overlap), per precision and
    memory layout: does channels_last help on this GPU? Median of 20 after 5 warm-ups."""
    import torch

    from mammo_denoise.inference import DEFAULT_TILE, ieee_float32
    from mammo_denoise.models import load_model

    out = {}
    for name in models:
        den = load_model(name, device="cuda").eval()
        side = DEFAULT_TILE + 2 * den.default_overlap
        x0 = torch.randn(2, 1, side, side, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
        for amp in (False, True):
            for fmt in ("contiguous", "channels_last"):
                mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
                den.to(memory_format=mf)
                x = x0.contiguous(memory_format=mf)
                precision = (lambda: torch.autocast("cuda", dtype=torch.float16)) if amp else ieee_float32
                times = []
                with torch.inference_mode(), precision():
                    for i in range(25):
                        torch.cuda.synchronize()
                        t = time.perf_counter()
                        den.denoise_anscombe(x, 0.0)
                        torch.cuda.synchronize()
                        if i >= 5:
                            times.append(time.perf_counter() - t)
                key = f"{name} {'amp' if amp else 'fp32'} {fmt}"
                out[key] = {"median_s": statistics.median(times), "tile_side": side}
                print(f"{key}: {1e3 * statistics.median(times):.1f} ms per batch of 2 {side}-px tiles", flush=True)
    return out


def main(argv=None) -> int:
    ap = C.parser(__doc__, models=["mammo-unet", "eckert-resnet"])
    ap.add_argument("--part", choices=["speed", "agreement", "layout", "all"], default="all")
    # 10010 and 10018: the held-out phantoms whose scored crops lie far from the frame's median
    # signal, where reduced precision costs the U-Net most (BENCHMARKS.md section 7).
    ap.add_argument("--seeds", type=int, nargs="+", default=[10000, 10001, 10010, 10018])
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("cuda_check.py needs a CUDA GPU; none is available here")
    started = time.perf_counter()
    payload = {"models": args.models}
    if args.part in ("speed", "all"):
        payload["speed"] = speed(args.models)
    if args.part in ("agreement", "all"):
        payload["agreement"] = agreement(args.models, args.seeds)
    if args.part in ("layout", "all"):
        payload["layout"] = layout(args.models)
    C.write_result(f"cuda_check_{args.part}", payload, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
