"""Where the default model gains over BM3D: squared error by signal level (a diagnostic).

    python benchmarks/error_by_signal.py --phantoms 8

The networks are trained with an MSE in the generalized-Anscombe domain, where the noise has unit
variance everywhere; the quality bar scores PSNR in detector units, where the noise variance
grows with the signal (``gain * (z - offset) + sigma_e^2``). A loss weighted toward bright pixels
would match the bar better if that is where the network falls short of BM3D. This splits each
held-out crop's scored pixels into terciles of the noise-free signal and reports, per tercile,
each method's MSE (DN^2) and the network's gain over BM3D in dB, plus the whole-crop gain scored
in detector units and in the Anscombe domain (``anscombe(estimate)`` against
``anscombe(truth)``).
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

from mammo_denoise.physics.anscombe import anscombe  # noqa: E402

TERCILES = ("dark", "middle", "bright")


def gain_db(mse_ref: float, mse: float) -> float:
    return 10.0 * float(np.log10(mse_ref / mse))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantoms", type=int, default=8)
    ap.add_argument("--seed0", type=int, default=C.TEST_SEED0)
    ap.add_argument("--model", default=None, help="default: the shipped default model")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    C.set_threads(args.threads)
    if not C.have_bm3d():
        print("bm3d is not installed: pip install -e '.[bench]'")
        return 1
    spec = C.resolve_default_model(args.model, allow_untrained=False)
    net = C.load(spec)
    methods = (C.BM3D, spec.label)
    rows = []
    for seed in range(args.seed0, args.seed0 + args.phantoms):
        case = C.make_case(seed)
        truth = case.truth[case.region].astype(np.float64)
        with torch.inference_mode():
            est = {m: C.denoise_case(m, case, net)[case.region].astype(np.float64) for m in methods}
        edges = np.quantile(truth, [1 / 3, 2 / 3])
        level = np.digitize(truth, edges)  # 0 dark, 1 middle, 2 bright
        row = {"seed": seed, "tercile_edges_dn": edges.tolist()}
        for i, name in enumerate(TERCILES):
            sel = level == i
            mse = {m: float(np.mean((est[m][sel] - truth[sel]) ** 2)) for m in methods}
            row[name] = {"mean_dn": float(truth[sel].mean()), "mse_bm3d": mse[C.BM3D],
                         "mse_model": mse[spec.label], "gain_db": gain_db(mse[C.BM3D], mse[spec.label])}
        ta = anscombe(truth, case.params)
        mse_dn = {m: float(np.mean((est[m] - truth) ** 2)) for m in methods}
        mse_a = {m: float(np.mean((anscombe(np.maximum(est[m], 0.0), case.params) - ta) ** 2))
                 for m in methods}
        row["gain_db_detector"] = gain_db(mse_dn[C.BM3D], mse_dn[spec.label])
        row["gain_db_anscombe"] = gain_db(mse_a[C.BM3D], mse_a[spec.label])
        rows.append(row)
        print(f"{seed}: " + "  ".join(
            f"{n} {row[n]['mse_bm3d']:.2f}/{row[n]['mse_model']:.2f} ({row[n]['gain_db']:+.2f} dB)"
            for n in TERCILES)
            + f"  | all {row['gain_db_detector']:+.2f} dB, Anscombe domain {row['gain_db_anscombe']:+.2f} dB",
            flush=True)

    summary = {n: {"mse_bm3d": C.mean_std([r[n]["mse_bm3d"] for r in rows]),
                   "mse_model": C.mean_std([r[n]["mse_model"] for r in rows]),
                   "gain_db": C.mean_std([r[n]["gain_db"] for r in rows])} for n in TERCILES}
    summary["gain_db_detector"] = C.mean_std([r["gain_db_detector"] for r in rows])
    summary["gain_db_anscombe"] = C.mean_std([r["gain_db_anscombe"] for r in rows])
    print(f"\n{len(rows)} phantoms, MSE in DN^2 (BM3D / {spec.label}) and the model's gain:")
    for n in TERCILES:
        s = summary[n]
        print(f"  {n:6s} {C.fmt_ms(s['mse_bm3d'])} / {C.fmt_ms(s['mse_model'])}   {C.fmt_ms(s['gain_db'])} dB")
    print(f"  whole crop: {C.fmt_ms(summary['gain_db_detector'])} dB in detector units, "
          f"{C.fmt_ms(summary['gain_db_anscombe'])} dB in the Anscombe domain")
    C.write_result("error_by_signal", {"model": spec.describe(), "phantoms": rows, "summary": summary},
                   started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
