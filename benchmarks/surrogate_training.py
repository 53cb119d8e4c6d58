"""Does the default's network reach the Bayes optimum where the optimum is known?

    python benchmarks/surrogate_training.py --minutes 30   # after texture_ceiling.py

The argument that +0.3 dB over BM3D is what denoisers reach on the phantom rests on networks of
four sizes agreeing; it assumes that such a network, trained this way, gets close to the best
estimator for the images it is trained on. That can be checked where the best estimator is
known. ``texture_ceiling.py`` builds Gaussian surrogates of the test crops (a Gaussian field
with each clean crop's spectrum, unit white noise, Anscombe domain), on which the posterior mean
is a Wiener filter and beats BM3D by about +0.8 dB, while the default, trained on phantoms,
gains only about +0.1 dB.

This fine-tunes the default on Gaussian surrogates of *other* phantoms (seeds from
``--spectra-seed0``, not test seeds): same architecture, MSE in the Anscombe domain as in
training, Adam with a cosine decay, each patch a fresh field and fresh noise. It then scores
the result, and the default, on the test surrogates (the very fields and noise of
``texture_ceiling.py``, checked through the posterior mean's error) and on the real test crops.
Gains over BM3D use BM3D's errors from ``results/texture_ceiling.json``.

Where the shortfall comes from:

- ``--own-spectrum SEED...`` trains one copy per test phantom on that phantom's spectrum alone,
  so the posterior mean is the optimum for the network's own training data and nothing is left
  to infer about the texture; what remains is the network and its training, to be read against
  the best linear filter of its receptive field (``texture_ceiling.py --disk-filters``).
- ``--spectra-seed0 10000 --spectra 20`` trains on the test phantoms' spectra (fresh fields,
  never the test draw): the texture still has to be recognised from the network's window, but
  none of it is unseen.
- ``--loss-margin PX`` leaves the patch borders, where the network sees zero padding, out of
  the loss.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
import texture_ceiling as T  # noqa: E402

from mammo_denoise.inference import _Transform  # noqa: E402, PLC2701
from mammo_denoise.models.store import save_model  # noqa: E402
from mammo_denoise.physics.anscombe import anscombe  # noqa: E402


def crop_statistics(seed: int, domain: str):
    """(spectrum, mean, Anscombe shift, case, window, inner) of one phantom's 640 px window."""
    case = C.make_case(seed)
    win, inner, clean = T.crop_window(case)
    shift = _Transform(case.low_whole, domain, case.params, True).shift
    return T.power_spectrum(clean), float(clean.mean()), shift, case, win, inner, clean


def surrogate_batch(stats, rng, fields: int, patches_per_field: int, patch: int):
    """``fields * patches_per_field`` (noisy, clean) patches less the shift, each field fresh."""
    ys, ts = [], []
    for _ in range(fields):
        psd, mean, shift = stats[int(rng.integers(len(stats)))][:3]
        field = mean + T.gaussian_field(psd, rng)
        noisy = field + rng.standard_normal(field.shape)
        for _ in range(patches_per_field):
            r, c = rng.integers(0, field.shape[0] - patch), rng.integers(0, field.shape[1] - patch)
            k = int(rng.integers(4))
            ys.append(np.rot90(noisy[r:r + patch, c:c + patch] - shift, k))
            ts.append(np.rot90(field[r:r + patch, c:c + patch] - shift, k))
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a)[:, None], np.float32))  # noqa: E731
    return as_tensor(ys), as_tensor(ts)


def evaluate(nets: dict, test_stats, ceiling: dict) -> list[dict]:
    rows = []
    for seed, (psd, mean, shift, case, win, inner, clean) in test_stats.items():
        ref = ceiling[seed]
        field, noisy = T.surrogate(seed, psd, mean)
        truth_s = field[:T.WINDOW, :T.WINDOW][inner]
        pm = float(np.mean((T.wiener(noisy, mean, psd)[:T.WINDOW, :T.WINDOW][inner] - truth_s) ** 2))
        if not math.isclose(pm, ref["surrogate"]["mse"]["posterior mean"], rel_tol=1e-9):
            raise SystemExit(f"seed {seed}: surrogate differs from texture_ceiling.json's; rerun it first")
        y = np.asarray(anscombe(case.low_whole[win].astype(np.float64), case.params), np.float64)
        row = {"seed": seed}
        for label, net in nets.items():
            mse_s = float(np.mean((T.network_anscombe(net, noisy[:T.WINDOW, :T.WINDOW], shift)[inner] - truth_s) ** 2))
            mse_r = float(np.mean((T.network_anscombe(net, y, shift)[inner] - clean[inner])[case.region] ** 2))
            row[label] = {
                "surrogate_gain_db": 10 * math.log10(ref["surrogate"]["mse"]["BM3D"] / mse_s),
                "surrogate_vs_posterior_mean_db": 10 * math.log10(pm / mse_s),
                "real_gain_db": 10 * math.log10(ref["real"]["mse"]["BM3D"] / mse_r),
            }
        rows.append(row)
        print(f"{seed}: " + "  ".join(
            f"{k}: surrogate {v['surrogate_gain_db']:+.2f} ({v['surrogate_vs_posterior_mean_db']:+.2f} from optimum),"
            f" real {v['real_gain_db']:+.2f} dB" for k, v in row.items() if k != "seed"), flush=True)
    return rows


def fine_tune(net, stats, rng, minutes: float, lr: float, patch: int, margin: int = 0, log_every: int = 50):
    """Adam with a cosine decay over ``minutes``, MSE in the Anscombe domain on each patch less
    ``margin`` px at its borders, each batch two fresh surrogate fields drawn from ``stats``.
    Returns (steps, patches seen, mean loss of the last 50)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    budget = minutes * 60.0
    t0, step, seen, losses = time.perf_counter(), 0, 0, []
    while (elapsed := time.perf_counter() - t0) < budget:
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(elapsed / budget, 1.0)))
        y, t = surrogate_batch(stats, rng, fields=2, patches_per_field=8, patch=patch)
        inner = (..., slice(margin, patch - margin), slice(margin, patch - margin))
        loss = torch.nn.functional.mse_loss(net.denoise_anscombe(y, 0.0)[inner], t[inner])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step, seen = step + 1, seen + y.shape[0]
        losses.append(loss.item())
        if step % log_every == 0:
            print(f"step {step}: loss {np.mean(losses[-50:]):.4f}  ({elapsed / 60:.1f} min)", flush=True)
    return step, seen, float(np.mean(losses[-50:])) if losses else None


def run_settings(spec, args) -> dict:
    """What every result file of this script records about the run."""
    return {"model": spec.describe(), "patch": args.patch, "loss_margin": args.loss_margin,
            "lr": args.lr, "input_highpass": args.input_highpass}


def own_spectrum(default, start, spec, args, ceiling, rng, started) -> int:
    """``--own-spectrum``: one copy of ``start`` per test phantom, trained on that phantom's
    spectrum alone, scored beside ``default``."""
    rows = []
    for seed in args.own_spectrum:
        stats = crop_statistics(seed, default.domain)
        tuned = copy.deepcopy(start).train()
        steps, seen, final_loss = fine_tune(tuned, [stats[:3]], rng, args.minutes, args.lr, args.patch,
                                            args.loss_margin, log_every=200)
        row = evaluate({"default": default, "own-spectrum": tuned.eval()}, {seed: stats}, ceiling)[0]
        rows.append(row | {"steps": steps, "patches": seen, "final_loss": final_loss})
    summary = {k: C.mean_std([r["own-spectrum"][k] for r in rows]) for k in rows[0]["own-spectrum"]}
    print("own-spectrum: " + "  ".join(f"{k} {C.fmt_ms(v)}" for k, v in summary.items()))
    C.write_result(args.name, run_settings(spec, args) | {
        "minutes_each": args.minutes, "phantoms": rows, "summary": summary}, started)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--spectra", type=int, default=16, help="training phantoms (spectra)")
    ap.add_argument("--spectra-seed0", type=int, default=30_000)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--loss-margin", type=int, default=0, metavar="PX",
                    help="leave this many px at each patch border out of the loss, where the "
                         "network sees its zero padding and not image (the test scores only "
                         "pixels far from the window's border); --patch includes them")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="default: the shipped default model")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--input-highpass", type=float, default=0.0, metavar="SIGMA",
                    help="fine-tune with the input high-passed (Gaussian low-pass of SIGMA px "
                         "subtracted, as mammo-denoise train --input-highpass)")
    ap.add_argument("--own-spectrum", type=int, nargs="+", metavar="TEST_SEED",
                    help="instead: for each of these test phantoms, fine-tune a copy of the default "
                         "on surrogates of that phantom's own spectrum (--minutes each; fresh "
                         "fields, never the test draw) and score it there. With the spectrum known "
                         "the posterior mean is the bound for the network's own training data")
    ap.add_argument("--name", default="surrogate_training", help="result file name")
    ap.add_argument("--save", default=None, help="also write the surrogate-trained weights here")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    C.set_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    ceiling = {r["seed"]: r for r in json.loads(
        (Path(__file__).parent / "results" / "texture_ceiling.json").read_text())["phantoms"]}

    spec = C.resolve_default_model(args.model, allow_untrained=False)
    default = C.load(spec).eval()
    if not 0 <= 2 * args.loss_margin < args.patch:
        raise SystemExit(f"--loss-margin {args.loss_margin} leaves nothing of a {args.patch} px patch")
    start = copy.deepcopy(default)
    if args.input_highpass > 0:
        start.card["input_highpass"] = float(args.input_highpass)
    if args.own_spectrum:
        return own_spectrum(default, start, spec, args, ceiling, rng, started)
    tuned = start.train()
    train_stats = [crop_statistics(s, default.domain)[:3]
                   for s in range(args.spectra_seed0, args.spectra_seed0 + args.spectra)]
    print(f"{len(train_stats)} training spectra ready ({time.perf_counter() - started:.0f} s)", flush=True)

    step, seen, final_loss = fine_tune(tuned, train_stats, rng, args.minutes, args.lr, args.patch,
                                         args.loss_margin)
    tuned.eval()
    if args.save:
        save_model(tuned, args.save, training={"surrogate_training": C.command_line(), "patches": seen})

    test_stats = {s: crop_statistics(s, default.domain) for s in sorted(ceiling)}
    rows = evaluate({"default": default, "surrogate-trained": tuned}, test_stats, ceiling)
    summary = {label: {k: C.mean_std([r[label][k] for r in rows]) for k in rows[0][label]}
               for label in ("default", "surrogate-trained")}
    for label, s in summary.items():
        print(f"{label}: " + "  ".join(f"{k} {C.fmt_ms(v)}" for k, v in s.items()))
    C.write_result(args.name, run_settings(spec, args) | {
        "minutes": args.minutes, "steps": step, "patches": seen,
        "spectra_seeds": [args.spectra_seed0, args.spectra_seed0 + args.spectra], "final_loss": final_loss,
        "phantoms": rows, "summary": summary}, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
