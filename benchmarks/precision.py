"""What half precision costs the networks, on the held-out crops of section 1 (CPU autocast).

    python benchmarks/precision.py [--phantoms 20] [--models mammo-unet eckert-resnet]

Each model runs on each crop (with its context, as in ``quality.py``) in float32, under
``torch.autocast("cpu", dtype=float16)`` and under bfloat16; reported is the PSNR lost against
float32 per phantom. The CPU's autocast stands in for the GPU's (the same dtypes for the
convolutions), so this runs where CI and users are; ``cuda_check.py`` checks the GPU itself.
The U-Net sees the Anscombe signal level (minus the frame's median), so a crop whose signal is
far from its frame's median shows what a shorter mantissa costs.
"""
from __future__ import annotations

import time

import numpy as np
import torch

import common as C

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def main(argv=None) -> int:
    ap = C.parser(__doc__, phantoms=20, models=["mammo-unet"], threads=None)
    args = ap.parse_args(argv)
    C.set_threads(args.threads)
    started = time.perf_counter()
    specs = C.parse_models(args.models)
    nets = C.load_all(specs)
    rows = []
    for k in range(args.phantoms):
        case = C.make_case(C.TEST_SEED0 + k)
        row = {"seed": case.seed}
        for label, net in nets.items():
            ref = C.run_model_on_case(net, case)
            p32 = C.psnr(ref, case.truth, case.data_range, case.region)
            row[label] = {"psnr_fp32": p32}
            for name, dtype in DTYPES.items():
                with torch.autocast("cpu", dtype=dtype):
                    out = C.run_model_on_case(net, case)
                row[label][f"loss_{name}_db"] = p32 - C.psnr(out, case.truth, case.data_range, case.region)
        rows.append(row)
        print(case.seed, {m: {q: round(v, 3) for q, v in r.items()} for m, r in row.items() if m != "seed"},
              flush=True)
    summary = {}
    for label in nets:
        summary[label] = {}
        for name in DTYPES:
            losses = np.array([r[label][f"loss_{name}_db"] for r in rows])
            worst = int(np.argmax(losses))
            summary[label][name] = {**C.mean_std(losses), "max": float(losses.max()),
                                    "worst_seed": rows[worst]["seed"]}
    C.write_result("precision", {"models": [s.label for s in specs], "summary": summary, "rows": rows}, started)
    for label, s in summary.items():
        print(label, {n: f"mean {v['mean']:.3f} max {v['max']:.3f} dB (seed {v['worst_seed']})" for n, v in s.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
