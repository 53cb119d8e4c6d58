"""How far could *any* denoiser beat BM3D on the phantom's texture? A Bayes ceiling.

    python benchmarks/texture_ceiling.py --phantoms 20

The quality bar asks for +0.5 dB over BM3D; networks of four sizes and two architectures stop
near +0.3 dB. Whether that is a limit of the networks or of the images can be answered exactly
for one kind of image: a stationary Gaussian random field in white Gaussian noise, for which the
posterior mean, the best estimator there is, is the Wiener filter with the field's spectrum
(e.g. Kay, *Fundamentals of Statistical Signal Processing: Estimation Theory*, 1993, sec. 12.7).
Mammographic texture is modelled as exactly such a field (a 1/f^beta power law; Burgess et al.,
Med Phys 28:419, 2001), and so is the phantom's.

For each held-out crop (``common.make_case``, section 1's phantoms) this builds a *Gaussian
surrogate*: a Gaussian field with the clean crop's own power spectrum, in the Anscombe domain,
where the detector noise is close to white with unit variance. The spectrum is the periodogram
of the clean 640 px window, mirror-extended so that its borders make no spurious frequencies,
smoothed over 1.5 frequency bins. The surrogate is drawn on the mirrored (periodic) grid, unit
white Gaussian noise is added, and three estimators see it:

- the posterior mean (Wiener filter with the true spectrum, applied on the whole periodic grid:
  the methods below see only the 640 px window, so this is, if anything, an over-estimate of
  what is reachable on the window);
- BM3D with ``sigma_psd = 1`` (as in section 1), on the 640 px window;
- the default network, on the same window with the frame's Anscombe shift.

Each is scored on the central 512 px crop, against the surrogate's clean field. On the real
crop (same window, real noisy input) the same three run, the Wiener filter then being the oracle
*linear* filter (the clean crop's own spectrum), which a non-linear method may beat.

Reading: on the surrogate, the posterior mean's gain over BM3D is the most any method can gain
on images with the phantom's second-order statistics and nothing else. The rest of a network's
gain on the real crop comes from what the phantom has beyond a Gaussian field (edges of dense
tissue, septa, ligaments, calcifications).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

from mammo_denoise.inference import _Transform  # noqa: E402, PLC2701
from mammo_denoise.physics.anscombe import anscombe, expected_anscombe  # noqa: E402

WINDOW = 640  # the crop plus common.CONTEXT_PX on every side
SPECTRUM_SMOOTH_BINS = 1.5
METHODS = ("posterior mean", "BM3D", "network")


def mirror(a: np.ndarray) -> np.ndarray:
    """Even extension to twice the size in both axes: periodic without jumps at the borders."""
    top = np.concatenate([a, a[:, ::-1]], 1)
    return np.concatenate([top, top[::-1]], 0)


def power_spectrum(clean: np.ndarray, smooth_bins: float = SPECTRUM_SMOOTH_BINS) -> np.ndarray:
    """Power per DFT bin of the mirrored, mean-free ``clean`` (``E|X_k|^2 / N``), smoothed.

    A Gaussian field drawn with it (``gaussian_field``) has per-pixel variance ``P.mean()``.
    """
    spec = np.fft.fft2(mirror(clean - clean.mean()))
    p = np.abs(spec) ** 2 / spec.size
    # Smoothing with a symmetric kernel keeps P(k) = P(-k), so the fields below are real.
    return ndimage.gaussian_filter(p, smooth_bins, mode="wrap")


def gaussian_field(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A zero-mean stationary Gaussian field on the periodic grid of ``p`` with spectrum ``p``."""
    white = np.fft.fft2(rng.standard_normal(p.shape))
    return np.fft.ifft2(white * np.sqrt(p)).real


def wiener(noisy_periodic: np.ndarray, mean: float, p: np.ndarray, noise_var: float = 1.0) -> np.ndarray:
    """Posterior mean of a Gaussian field of spectrum ``p`` (and known ``mean``) in white noise:
    each DFT coefficient shrunk by ``p / (p + noise_var)``."""
    spec = np.fft.fft2(noisy_periodic - mean)
    return np.fft.ifft2(spec * (p / (p + noise_var))).real + mean


def posterior_mean_mse(p: np.ndarray, noise_var: float = 1.0) -> float:
    """Expected per-pixel error of ``wiener`` on a field of spectrum ``p``."""
    return float(np.mean(p * noise_var / (p + noise_var)))


def surrogate(seed: int, p: np.ndarray, mean: float) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, noisy)``: the seeded Gaussian surrogate of test phantom ``seed`` on the
    periodic grid of ``p``, with unit white noise."""
    rng = np.random.default_rng([seed, 0x6A55])
    field = mean + gaussian_field(p, rng)
    return field, field + rng.standard_normal(field.shape)


def disk_filter_mse(p: np.ndarray, radius: int, noise_var: float = 1.0) -> float:
    """Per-pixel error of the best linear filter confined to a disk of ``radius`` px.

    The Wiener-Hopf equations on the disk: with ``R`` the field's autocorrelation (the inverse
    DFT of ``p``), the taps ``h`` solve ``(R + noise_var I) h = r`` over the disk's offsets, and
    the error is ``R(0) - h . r``. How much a network of that receptive radius loses to the
    unconstrained posterior mean (``mean(p / (p + noise_var))``) if it learns the best linear map.
    """
    acf = np.fft.ifft2(p).real
    n0, n1 = p.shape
    dy, dx = np.nonzero(np.hypot(*np.meshgrid(np.arange(-radius, radius + 1),
                                               np.arange(-radius, radius + 1), indexing="ij")) <= radius)
    dy, dx = dy - radius, dx - radius
    a = acf[(dy[:, None] - dy[None, :]) % n0, (dx[:, None] - dx[None, :]) % n1] + noise_var * np.eye(dy.size)
    r = acf[dy % n0, dx % n1]
    return float(acf[0, 0] - np.linalg.solve(a, r) @ r)


def disk_filters(seeds, radii) -> int:
    """``--disk-filters``: the loss of linear filters of the given radii, per phantom."""
    started = time.perf_counter()
    rows = []
    for seed in seeds:
        psd = power_spectrum(crop_window(C.make_case(seed))[2])
        best = posterior_mean_mse(psd)
        loss = {int(r): 10.0 * float(np.log10(disk_filter_mse(psd, r) / best)) for r in radii}
        rows.append({"seed": seed, "posterior_mean_mse": best, "loss_db_by_radius": loss})
        print(f"{seed}: " + "  ".join(f"r {r}: {v:+.3f} dB" for r, v in loss.items()), flush=True)
    C.write_result("texture_ceiling_disk_filters", {"window_px": WINDOW, "phantoms": rows}, started)
    return 0


def crop_window(case):
    """``(window, crop in it, clean window)``: the ``WINDOW`` px square centred on the case's
    crop (moved inside the frame) and its noise-free image in the Anscombe domain."""
    r0, c0, h, w = case.crop
    H, W = case.low_whole.shape
    m = (WINDOW - h) // 2
    a, b = int(np.clip(r0 - m, 0, H - WINDOW)), int(np.clip(c0 - m, 0, W - WINDOW))
    win = (slice(a, a + WINDOW), slice(b, b + WINDOW))
    inner = (slice(r0 - a, r0 - a + h), slice(c0 - b, c0 - b + w))
    truth = case.phantom.truth_at(case.dose).astype(np.float64)[win]
    return win, inner, np.asarray(expected_anscombe(truth, case.params), np.float64)


def network_anscombe(net, y: np.ndarray, shift: float) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(y - shift, dtype=np.float32))[None, None]
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return net.denoise_anscombe(x, 0.0)[0, 0].numpy().astype(np.float64) + shift


def gains(errors: dict) -> dict:
    """dB gain of every method over BM3D, from mean squared errors."""
    return {m: 10.0 * float(np.log10(errors["BM3D"] / e)) for m, e in errors.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantoms", type=int, default=20)
    ap.add_argument("--seed0", type=int, default=C.TEST_SEED0)
    ap.add_argument("--model", default=None, help="default: the shipped default model")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--disk-filters", type=int, nargs="*", metavar="RADIUS",
                    help="instead: how far linear filters of these radii (px) fall short of the "
                         "posterior mean on the first --phantoms surrogates")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    C.set_threads(args.threads)
    if args.disk_filters:
        return disk_filters(range(args.seed0, args.seed0 + args.phantoms), args.disk_filters)
    if not C.have_bm3d():
        return 1
    spec = C.resolve_default_model(args.model, allow_untrained=False)
    net = C.load(spec).eval().to(memory_format=torch.channels_last)

    rows = []
    for seed in range(args.seed0, args.seed0 + args.phantoms):
        case = C.make_case(seed)
        p = case.params
        win, inner, clean = crop_window(case)
        region = case.region
        shift = _Transform(case.low_whole, net.domain, p, True).shift
        psd = power_spectrum(clean)
        mean = float(clean.mean())

        # The real crop: real noisy input, the oracle linear filter.
        y = np.asarray(anscombe(case.low_whole[win].astype(np.float64), p), np.float64)
        real = {
            "posterior mean": wiener(mirror(y), mean, psd)[:WINDOW, :WINDOW],
            "BM3D": C.bm3d_gat_domain(y, shift),
            "network": network_anscombe(net, y, shift),
        }
        real_err = {m: float(np.mean((e[inner] - clean[inner])[region] ** 2)) for m, e in real.items()}

        # The Gaussian surrogate: same spectrum and mean, exactly Gaussian, unit white noise.
        field, noisy = surrogate(seed, psd, mean)
        yw = noisy[:WINDOW, :WINDOW]
        sur = {
            "posterior mean": wiener(noisy, mean, psd)[:WINDOW, :WINDOW],
            "BM3D": C.bm3d_gat_domain(yw, shift),
            "network": network_anscombe(net, yw, shift),
        }
        truth_s = field[:WINDOW, :WINDOW]
        sur_err = {m: float(np.mean((e[inner] - truth_s[inner]) ** 2)) for m, e in sur.items()}
        expected_wiener = posterior_mean_mse(psd)

        row = {
            "seed": seed,
            "texture_std_anscombe": float(np.sqrt(psd.mean())),
            "real": {"mse": real_err, "gain_db": gains(real_err)},
            "surrogate": {"mse": sur_err, "gain_db": gains(sur_err),
                          "posterior_mean_expected_mse": expected_wiener},
        }
        rows.append(row)
        g_r, g_s = row["real"]["gain_db"], row["surrogate"]["gain_db"]
        print(f"{seed}: real   linear oracle {g_r['posterior mean']:+.2f}  network {g_r['network']:+.2f} dB"
              f"  | surrogate  posterior mean {g_s['posterior mean']:+.2f}  network {g_s['network']:+.2f} dB"
              f"  (BM3D MSE {sur_err['BM3D']:.4f}, Wiener {sur_err['posterior mean']:.4f},"
              f" expected {expected_wiener:.4f})", flush=True)

    summary = {
        part: {m: C.mean_std([r[part]["gain_db"][m] for r in rows]) for m in METHODS if m != "BM3D"}
        for part in ("real", "surrogate")
    }
    summary["surrogate_network_vs_posterior_mean_db"] = C.mean_std(
        [r["surrogate"]["gain_db"]["network"] - r["surrogate"]["gain_db"]["posterior mean"] for r in rows])
    summary["wiener_realised_over_expected"] = C.mean_std(
        [r["surrogate"]["mse"]["posterior mean"] / r["surrogate"]["posterior_mean_expected_mse"] for r in rows])
    print(f"\n{len(rows)} phantoms, gain over BM3D in the Anscombe domain (dB):")
    for part in ("real", "surrogate"):
        print(f"  {part:9s} " + "  ".join(f"{m} {C.fmt_ms(s)}" for m, s in summary[part].items()))
    print(f"  surrogate: network minus posterior mean {C.fmt_ms(summary['surrogate_network_vs_posterior_mean_db'])} dB;"
          f" Wiener MSE realised/expected {C.fmt_ms(summary['wiener_realised_over_expected'], 3)}")
    C.write_result("texture_ceiling", {"model": spec.describe(), "window_px": WINDOW,
                                       "spectrum_smooth_bins": SPECTRUM_SMOOTH_BINS,
                                       "phantoms": rows, "summary": summary}, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
