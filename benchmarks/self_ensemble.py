"""What test-time ensembles would buy the default model (an idea measured, not a product feature).

    python benchmarks/self_ensemble.py --phantoms 8 --second runs/s7/mammo-unet-u2.safetensors

The usual way to squeeze a last fraction of a dB from a trained denoiser is to average its
outputs over the eight rotations and flips of the input ("geometric self-ensemble", Lim et al.
2017, EDSR section 4.4) or over several trained models. Both cost a full network pass per
member, and the speed bar leaves the default ~1.3x headroom, so they are worth shipping only if
a small ensemble buys a lot. This measures the PSNR gain over the plain model, paired per
phantom, on the quality benchmark's held-out cases (``common.make_case``, run as on the whole
frame), for 2, 4 and 8 orientations and, with ``--second``, for the two-model average.

Averaging happens on the network's residual in the Anscombe domain, before the (non-linear)
exact unbiased inverse, i.e. where the models are trained to be unbiased.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

from mammo_denoise.models import load_model  # noqa: E402


class Ensemble(torch.nn.Module):
    """Average of ``nets`` over the first ``orientations`` of the 8 rotations/flips (the
    identity first); each output is mapped back before averaging."""

    def __init__(self, nets, orientations: int):
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)
        self.orientations = orientations
        self.alignment = max(getattr(n, "alignment", 1) for n in nets)
        self.receptive_radius = max(getattr(n, "receptive_radius", 64) for n in nets)

    def forward(self, x):
        outs = []
        for k in range(self.orientations):
            quarter_turns, flip = k % 4, k >= 4
            xt = torch.rot90(torch.flip(x, (-1,)) if flip else x, quarter_turns, (-2, -1))
            xt = xt.contiguous(memory_format=torch.channels_last)
            for net in self.nets:
                o = torch.rot90(net(xt), -quarter_turns, (-2, -1))
                outs.append(torch.flip(o, (-1,)) if flip else o)
        return torch.stack(outs).mean(0)


def ensemble(model: str, orientations: int, second: str | None = None):
    den = load_model(model)
    den.net = Ensemble([den.net] + ([load_model(second).net] if second else []), orientations)
    return den


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phantoms", type=int, default=8)
    ap.add_argument("--dose", type=float, default=0.2)
    ap.add_argument("--model", default="mammo-unet")
    ap.add_argument("--second", help="a second model (name or .safetensors) for the two-model average")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    threads = C.set_threads(args.threads)

    variants = {f"x{k}": ensemble(args.model, k) for k in (1, 2, 4, 8)}
    if args.second:
        variants["+ second"] = ensemble(args.model, 1, args.second)
        variants["+ second, x2"] = ensemble(args.model, 2, args.second)
    per = {name: [] for name in variants}
    for i in range(args.phantoms):
        case = C.make_case(C.TEST_SEED0 + i, args.dose, (1024, 1024), 512)
        truth_contrast = np.mean(C.calc_contrast(case.truth, case))
        for name, den in variants.items():
            t = C.timer()
            out = C.run_model_on_case(den, case)
            per[name].append({"psnr": C.psnr(out, case.truth, case.data_range, case.region),
                              "calc_contrast_ratio": float(np.mean(C.calc_contrast(out, case)) / truth_contrast),
                              "time_s": t()})
        print(f"[{i + 1}/{args.phantoms}] " + "  ".join(f"{n} {r[-1]['psnr']:.3f}" for n, r in per.items()), flush=True)

    base = np.array([r["psnr"] for r in per["x1"]])
    summary = {}
    for name, rows in per.items():
        summary[name] = {
            "psnr": C.mean_std([r["psnr"] for r in rows]),
            "gain_db": C.mean_std(list(np.array([r["psnr"] for r in rows]) - base)),
            "calc_contrast_ratio": C.mean_std([r["calc_contrast_ratio"] for r in rows]),
            "time_ratio": float(np.mean([r["time_s"] for r in rows]) / np.mean([r["time_s"] for r in per["x1"]])),
        }
        s = summary[name]
        print(f"{name:14s} PSNR {s['psnr']['mean']:.3f}  gain {s['gain_db']['mean']:+.3f} ± {s['gain_db']['std']:.3f} dB"
              f"  calc {s['calc_contrast_ratio']['mean']:.3f}  time x{s['time_ratio']:.1f}")
    C.write_result("self_ensemble", {
        "settings": {"phantoms": args.phantoms, "dose": args.dose, "model": args.model,
                     "second": args.second, "threads": threads, "size": 512},
        "summary": summary, "per_phantom": per,
    }, started)


if __name__ == "__main__":
    main()
