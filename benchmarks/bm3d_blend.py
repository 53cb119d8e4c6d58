"""Does BM3D know something the default model does not? (a diagnostic, not a product feature)

    python benchmarks/bm3d_blend.py --phantoms 20 --threads 2

BM3D is non-local: it denoises an 8 px patch jointly with the patches most like it in a 39 px
search window, a window no wider than the U-Net's (26 px radius), but a different kind of
evidence, the one a non-local (attention) block would give a network. If that evidence were what
the default lacks to reach the quality bar, BM3D's errors would be partly independent of the
network's (their correlation, recorded per phantom, well below 1), and a blend
``(1 - w) * network + w * BM3D`` would beat the network alone by a useful margin at some ``w``.
This scores the blend in detector units over the quality benchmark's held-out crops
(``common.make_case``, each method run as on the whole frame), paired with the network alone,
for ``w`` from 0 to 1.

A small best gain says the two methods make nearly the same errors: what BM3D recovers the
network already has. It bounds what a *linear* use of BM3D's answer buys, not what a network
with a non-local block could learn, least of all over a wider window.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

from mammo_denoise.models import load_model  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phantoms", type=int, default=20)
    ap.add_argument("--dose", type=float, default=0.2)
    ap.add_argument("--model", default="mammo-unet")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if not C.have_bm3d():
        sys.exit("bm3d_blend needs the bm3d package: pip install -e '.[bench]'")
    started = time.perf_counter()
    threads = C.set_threads(args.threads)
    den = load_model(args.model)
    weights = np.round(np.linspace(0.0, 1.0, 11), 2)

    per_phantom = []
    for i in range(args.phantoms):
        case = C.make_case(C.TEST_SEED0 + i, args.dose, (1024, 1024), 512)
        net = C.denoise_case(args.model, case, den).astype(np.float64)
        bm3d = C.denoise_case(C.BM3D, case).astype(np.float64)
        psnrs = [C.psnr((1 - w) * net + w * bm3d, case.truth, case.data_range, case.region) for w in weights]
        region = case.region
        error_correlation = float(np.corrcoef((net - case.truth)[region], (bm3d - case.truth)[region])[0, 1])
        per_phantom.append({"seed": case.seed, "psnr_by_weight": psnrs, "error_correlation": error_correlation})
        print(f"[{i + 1}/{args.phantoms}] seed {case.seed}: network {psnrs[0]:.3f}, BM3D {psnrs[-1]:.3f}, "
              f"best blend {max(psnrs):.3f} dB", flush=True)

    table = np.array([r["psnr_by_weight"] for r in per_phantom])
    gain = table - table[:, :1]
    by_weight = {f"{w:.1f}": C.mean_std(g) for w, g in zip(weights, gain.T)}
    best = int(np.argmax(gain.mean(0)))
    summary = {
        "gain_db_by_bm3d_weight": by_weight,
        "best_weight": float(weights[best]),
        "best_gain_db": C.mean_std(gain[:, best]),
        "per_phantom_best_gain_db": C.mean_std(gain.max(1)),
        "bm3d_minus_network_db": C.mean_std(gain[:, -1]),
        "error_correlation": C.mean_std([r["error_correlation"] for r in per_phantom]),
    }
    for w, s in by_weight.items():
        print(f"w {w}: {s['mean']:+.3f} ± {s['std']:.3f} dB")
    print(f"best w {weights[best]:.1f}: {gain[:, best].mean():+.3f} dB over the network "
          f"(higher on {int((gain[:, best] > 0).sum())} of {len(gain)})")
    print(f"correlation of the two methods' errors: {summary['error_correlation']['mean']:.3f} "
          f"± {summary['error_correlation']['std']:.3f}")
    C.write_result("bm3d_blend", {
        "settings": {"phantoms": args.phantoms, "dose": args.dose, "model": args.model,
                     "threads": threads, "size": 512, "scored": "detector units, region"},
        "summary": summary, "per_phantom": per_phantom,
    }, started)


if __name__ == "__main__":
    main()
