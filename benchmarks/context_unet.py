"""Give a trained U-Net a context branch without changing what it computes (a context probe).

    python benchmarks/context_unet.py SCALES OUT.safetensors [--model mammo-unet]

The new network is the model's own U-Net with ``context=SCALES`` (``models.architectures.UNet``):
SCALES coarser scales below its deepest one, whose output is added there through a 1x1
convolution that starts at zero. The old weights are copied as they are; the branch gets fresh,
seeded weights; the output is checked to be unchanged on random input before saving.
Fine-tuning the result (`mammo-denoise train --init OUT.safetensors`) then grows the branch, and
the same fine-tuning of the model itself is the control. Used in BENCHMARKS.md section 1 to ask
whether the default's 26 px radius limits its PSNR: context=2 gives it 122 px.
"""
from __future__ import annotations

import argparse

import torch

from mammo_denoise.models import load_model
from mammo_denoise.models.denoiser import make_denoiser
from mammo_denoise.models.store import save_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scales", type=int)
    ap.add_argument("out")
    ap.add_argument("--model", default="mammo-unet")
    args = ap.parse_args(argv)
    old = load_model(args.model, device="cpu")
    kw = dict(old.card.get("arch_kwargs") or {})
    if old.card.get("architecture") != "unet" or kw.get("context", 0):
        raise SystemExit(f"{args.model}: only a U-Net without a context branch can be given one")
    if args.scales < 1:
        raise SystemExit("give at least 1 scale")
    new = make_denoiser("unet", seed=2000 + args.scales, **{**kw, "context": args.scales})
    new.card = {**old.card, "arch_kwargs": {**kw, "context": args.scales}}
    missing, unexpected = new.net.load_state_dict(old.net.state_dict(), strict=False)
    if unexpected or not all(k.startswith("ctx_") for k in missing):
        raise SystemExit(f"weights do not line up: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        # A multiple of both alignments, so that both networks pad the input alike.
        x = torch.randn(2, 1, 96, 80, generator=torch.Generator().manual_seed(0)) * 3
        diff = (old.net.eval()(x) - new.net.eval()(x)).abs().max().item()
    if diff != 0.0:
        raise SystemExit(f"adding the branch changed the output by {diff:.2e}: not saved")
    path = save_model(new, args.out)
    print(f"{args.model} (radius {old.receptive_radius} px) -> context {args.scales} (radius "
          f"{new.receptive_radius} px): {sum(p.numel() for p in new.net.parameters()):,} parameters, "
          f"output unchanged; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
