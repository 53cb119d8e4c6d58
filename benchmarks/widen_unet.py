"""Widen a trained U-Net to more channels without changing what it computes (a capacity probe).

    python benchmarks/widen_unet.py BASE OUT.safetensors [--model mammo-unet]

Every scale gets ``BASE * 2**i`` channels instead of the model's own. The old weights go into
the leading slice of each new tensor; the new channels get fresh, seeded incoming weights, and
the weights from new channels into old ones are zero, so every old channel, and the output,
computes exactly what it did before (checked on random input before saving). Fine-tuning the
result (`mammo-denoise train --init OUT.safetensors`) then grows the new channels: their
outgoing weights get gradients from the first step. Used in BENCHMARKS.md section 7 to ask
whether the default's size limits the calcification contrast it can keep.
"""
from __future__ import annotations

import argparse

import torch

from mammo_denoise.models import load_model
from mammo_denoise.models.denoiser import make_denoiser
from mammo_denoise.models.store import save_model


def unet_layers(depth: int):
    """(module, input tensor, output tensor, transposed) for every conv of a U-Net.

    A tensor is (kind, scale): "img" (the network's input or output), "feat" (``chans[scale]``
    channels) or "cat" (a decoder's input: the upsampled features, then the skip).
    """
    yield "inc.0", ("img", 0), ("feat", 0), False
    yield "inc.2", ("feat", 0), ("feat", 0), False
    for i in range(depth - 1):
        yield f"downs.{i}.0", ("feat", i), ("feat", i + 1), False
        yield f"downs.{i}.2", ("feat", i + 1), ("feat", i + 1), False
    for k, i in enumerate(reversed(range(depth - 1))):
        yield f"ups.{k}", ("feat", i + 1), ("feat", i), True
        yield f"decs.{k}.0", ("cat", i), ("feat", i), False
        yield f"decs.{k}.2", ("feat", i), ("feat", i), False
    yield "out", ("feat", 0), ("img", 0), False


def channel_positions(tensor, old_chans, new_chans, img_channels):
    """Where each old channel of ``tensor`` sits in the widened network, and which are new."""
    kind, scale = tensor
    if kind == "img":
        return list(range(img_channels)), []
    c, C = old_chans[scale], new_chans[scale]
    old = list(range(c)) if kind == "feat" else list(range(c)) + list(range(C, C + c))
    width = C if kind == "feat" else 2 * C
    return old, sorted(set(range(width)) - set(old))


def widen(old_sd, new_sd, depth, old_chans, new_chans, img_channels):
    for name, t_in, t_out, transposed in unet_layers(depth):
        w_old, w = old_sd[name + ".weight"], new_sd[name + ".weight"].clone()
        if transposed:  # ConvTranspose2d stores (in, out, kh, kw)
            w_old, w = w_old.transpose(0, 1), w.transpose(0, 1)
        ins, new_ins = channel_positions(t_in, old_chans, new_chans, img_channels)
        outs, _ = channel_positions(t_out, old_chans, new_chans, img_channels)
        rows, cols = torch.tensor(outs), torch.tensor(ins)
        w[rows[:, None], torch.tensor(new_ins, dtype=torch.long)[None, :]] = 0
        w[rows[:, None], cols[None, :]] = w_old
        b = new_sd[name + ".bias"].clone()
        b[rows] = old_sd[name + ".bias"]
        new_sd[name + ".weight"] = w.transpose(0, 1) if transposed else w
        new_sd[name + ".bias"] = b
    return new_sd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base", type=int)
    ap.add_argument("out")
    ap.add_argument("--model", default="mammo-unet")
    args = ap.parse_args(argv)
    old = load_model(args.model, device="cpu")
    kw = dict(old.card.get("arch_kwargs") or {})
    if old.card.get("architecture") != "unet" or kw.get("unshuffle", 1) != 1:
        raise SystemExit(f"{args.model}: only plain U-Nets (no unshuffle) can be widened here")
    depth, base = kw.get("depth", 3), kw.get("base", 16)
    if args.base <= base:
        raise SystemExit(f"{args.model} already has base {base}; ask for more")
    new = make_denoiser("unet", seed=1000 + args.base, **{**kw, "base": args.base})
    new.card = {**old.card, "arch_kwargs": {**kw, "base": args.base}}
    old_chans = [base * 2**i for i in range(depth)]
    new_chans = [args.base * 2**i for i in range(depth)]
    with torch.no_grad():
        sd = widen(old.net.state_dict(), new.net.state_dict(), depth, old_chans, new_chans, img_channels=1)
        new.net.load_state_dict(sd)
        x = torch.randn(2, 1, 96, 80, generator=torch.Generator().manual_seed(0)) * 3
        diff = (old.net.eval()(x) - new.net.eval()(x)).abs().max().item()
    if diff > 1e-4:
        raise SystemExit(f"widening changed the output by {diff:.2e}: not saved")
    path = save_model(new, args.out)
    print(f"{args.model} (base {base}) -> base {args.base}: {sum(p.numel() for p in new.net.parameters()):,} "
          f"parameters, output unchanged to {diff:.1e}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
