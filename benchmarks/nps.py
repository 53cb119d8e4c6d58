"""Noise power spectra before/after denoising, and how much structure the denoiser removes.

    python benchmarks/nps.py --slab 1024 --phantoms 3 --size 256 --realisations 4

Part 1, flat slab. A uniform exposure read out with the phantom's detector model (defaults:
``make_phantom``'s offset, gain, sigma_e and photons)
(``z = offset + gain*Poisson(dose*photons) + Normal(0, sigma_e^2)``, ``detector_image``) at the
test dose, denoised by the default model and BM3D (GAT domain, true NoiseParams). Radial NNPS
(``metrics.nps_radial``: 256x256 ROIs, 50 % overlap, plane detrend) normalised by the squared
mean *signal above the offset*, ``(mean - offset)^2``. The full-dose slab is drawn for reference.

False calcifications. On the same flat slab, where there is nothing to find, every local
maximum of ``metrics.spot_contrast_map`` (the calcification contrast of a spot of the given
diameter, disk vs annulus, centred on each pixel) above a contrast real calcifications have is
a dot a reader could take for one. Counted per cm² (``skimage.feature.peak_local_max``, peaks
at least one diameter apart) for spots of 0.15 and 0.3 mm at contrasts of 3.5 % and 7.7 %: the
10th percentile and the median of the 0.1-0.2 mm calcifications in the test phantoms' truth
(the same disk/annulus measure). A denoiser must not make such dots out of noise: its count
should sit far below the noisy input's and not above BM3D's.

Part 2, structure removed (``--phantoms 0`` skips it). On held-out phantoms (crop inside the
breast) with K independent noise realisations ``z_k`` (``Phantom.generate_noisy``) of the same
truth ``t`` at the dose,
the removed image is ``r_k = z_k - D(z_k)``. Since ``E[z_k] = t``,
``E[r_k] = t - E[D(z)] = -bias``: the mean of the removed image is the structure the denoiser
systematically takes out; what varies around it is removed noise. Two numbers per radial band
(Hann-windowed FFT over the crop, mean removed):

* ``structure_fraction`` (bias method): ``sum_b |FFT(mean_k D_k - t)|^2 - S_b/K`` over
  ``sum_b mean_k |FFT(r_k)|^2``, where ``S_b`` is the across-realisation sample variance of
  ``FFT(D_k)`` (subtracting it removes the residual-noise floor of a K-sample mean). 0 = only
  noise removed; 1 = only structure removed. Also over all frequencies (pixel domain).
* ``truth_coherence`` (single realisation): the squared correlation between the removed image
  and the truth in each band, ``|sum_b R T*|^2 / (sum_b |R|^2 * sum_b |T|^2)``, averaged over
  realisations: the share of the removed power that a per-band scalar multiple of the truth
  explains. Its null level is the same quantity for the pure noise ``z_k - t`` (independent of
  ``t``), reported alongside.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402


def radial_bins(shape, pixel_mm, nbins):
    fy = np.fft.fftfreq(shape[0], d=pixel_mm)
    fx = np.fft.fftfreq(shape[1], d=pixel_mm)
    f = np.hypot(fy[:, None], fx[None, :])
    nyq = 0.5 / pixel_mm
    edges = np.linspace(0, nyq, nbins + 1)
    idx = np.minimum(np.digitize(f, edges) - 1, nbins - 1)  # f == Nyquist joins the last band
    idx[(f == 0) | (f > nyq)] = -1  # DC and corners beyond Nyquist left out
    centres = 0.5 * (edges[:-1] + edges[1:])
    return idx, centres


def band_sum(a, idx, nbins):
    keep = idx >= 0
    return np.bincount(idx[keep], weights=a[keep], minlength=nbins)


def _fft(img, window):
    a = np.asarray(img, np.float64)
    a = (a - a.mean()) * window
    return np.fft.fft2(a)


SPOT_DIAMETERS_MM = (0.15, 0.3)
SPOT_CONTRASTS = (0.035, 0.077)


def false_spots(img, offset, pixel_mm):
    """Calcification-like dots per cm² in a flat image, per (diameter, contrast); see above."""
    from skimage.feature import peak_local_max

    from mammo_denoise.metrics import spot_contrast_map

    out = {}
    for d_mm in SPOT_DIAMETERS_MM:
        d = d_mm / pixel_mm
        m = spot_contrast_map(img, d, offset=offset)
        border = int(np.ceil(2.5 * d + 3))  # the annulus' reach: mirrored borders are not counted
        inner = m[border:-border, border:-border]
        area_cm2 = inner.size * (pixel_mm / 10.0) ** 2
        for c in SPOT_CONTRASTS:
            peaks = peak_local_max(np.nan_to_num(inner, nan=-np.inf), min_distance=max(1, int(round(d))),
                                   threshold_abs=c, exclude_border=False)
            out[f"{d_mm:g} mm, {100 * c:g} %"] = len(peaks) / area_cm2
    return out


def slab_part(args, den, use_bm3d, pixel_mm):
    from mammo_denoise.metrics import nps_radial
    from mammo_denoise.physics.params import NoiseParams
    from mammo_denoise.physics.phantom import detector_image

    p = NoiseParams(args.offset, args.gain, args.sigma_e)
    n = args.slab
    lam = np.full((n, n), float(args.photons), np.float32)
    full, _ = detector_image(lam, p, 1.0, np.random.default_rng([C.TEST_SEED0, 0x51AB, 1]))
    low, _ = detector_image(lam, p, args.dose, np.random.default_rng([C.TEST_SEED0, 0x51AB, 2]))
    imgs = {"full dose (1.0)": (full, 1.0), f"noisy ({args.dose:g})": (low, args.dose)}
    times = {}
    t = C.timer()
    imgs[f"{args.model_label} ({args.dose:g})"] = (C.run_model(den, low, p, tile=512), args.dose)
    times[args.model_label] = t()
    if use_bm3d:
        t = C.timer()
        imgs[f"BM3D ({args.dose:g})"] = (C.bm3d_anscombe(low, p), args.dose)
        times["BM3D"] = t()
    curves = {}
    for label, (img, d) in imgs.items():
        f, nps = nps_radial(img, pixel_mm, roi=256, overlap=0.5, detrend="plane", normalise=False)
        sig = float(np.mean(img)) - p.offset
        curves[label] = {"f": f.tolist(), "nnps": (nps / sig**2).tolist(), "mean_signal_above_offset": sig,
                         "std": float(np.std(img)), "relative_variance": float(np.var(img)) / sig**2,
                         "false_spots_per_cm2": false_spots(img, p.offset, pixel_mm)}
    v0 = curves[f"noisy ({args.dose:g})"]["relative_variance"]
    for c in curves.values():
        # variance / (mean - offset)^2, i.e. the integral of the NNPS, relative to the noisy input
        c["relative_variance_ratio_to_noisy"] = c["relative_variance"] / v0
    return {"params": p.to_dict(), "photons_full_dose": args.photons, "size": n, "curves": curves,
            "times_s": times}


def structure_part(args, den, use_bm3d, pixel_mm):
    nb = args.bands
    methods = [args.model_label] + (["BM3D"] if use_bm3d else [])
    acc = {m: {"bias_pow": np.zeros(nb), "rem_pow": np.zeros(nb), "coh": [], "pix_bias": [], "pix_rem": [],
               "err_pow": np.zeros(nb)} for m in methods}
    null = []
    noise_pow = np.zeros(nb)
    centres = None
    for i in range(args.phantoms):
        seed = C.TEST_SEED0 + i
        case = C.make_case(seed, args.dose, args.phantom_shape, args.size)
        t = case.truth.astype(np.float64)
        h, w = t.shape
        window = np.outer(np.hanning(h), np.hanning(w))
        idx, centres = radial_bins((h, w), pixel_mm, nb)
        T = _fft(t, window)
        PT = band_sum(np.abs(T) ** 2, idx, nb)
        outs = {m: [] for m in methods}
        lows = []
        for k in range(args.realisations):
            z = case.fresh_low(k)
            lows.append(z)
            N = _fft(z - t, window)
            noise_pow += band_sum(np.abs(N) ** 2, idx, nb)
            null.append(np.abs(band_sum((N * np.conj(T)).real, idx, nb)) ** 2 /
                        (band_sum(np.abs(N) ** 2, idx, nb) * PT))
            for m in methods:
                d = C.run_model(den, z, case.params) if m == args.model_label else C.bm3d_anscombe(z, case.params)
                outs[m].append(d.astype(np.float64))
        for m in methods:
            D = np.stack(outs[m])
            Z = np.stack(lows).astype(np.float64)
            R = Z - D
            FR = np.stack([_fft(r, window) for r in R])
            FD = np.stack([_fft(d, window) for d in D])
            K = len(D)
            rem = band_sum(np.mean(np.abs(FR) ** 2, axis=0), idx, nb)
            mean_err = FD.mean(axis=0) - T
            # E|X - E X|^2 of a complex coefficient = var(Re) + var(Im)
            var_d = (np.var(FD.real, axis=0, ddof=1) + np.var(FD.imag, axis=0, ddof=1)) if K > 1 \
                else np.zeros(FD.shape[1:])
            bias = band_sum(np.abs(mean_err) ** 2 - var_d / K, idx, nb)
            acc[m]["bias_pow"] += bias
            acc[m]["rem_pow"] += rem
            acc[m]["err_pow"] += band_sum(np.mean(np.abs(FD - T) ** 2, axis=0), idx, nb)
            for k in range(K):
                acc[m]["coh"].append(np.abs(band_sum((FR[k] * np.conj(T)).real, idx, nb)) ** 2 /
                                     (band_sum(np.abs(FR[k]) ** 2, idx, nb) * PT))
            # pixel domain, inside the scored region
            reg = case.region
            b_pix = D.mean(axis=0) - t
            pix_var = D.var(axis=0, ddof=1) if K > 1 else np.zeros_like(t)
            acc[m]["pix_bias"].append(float(np.mean(b_pix[reg] ** 2 - pix_var[reg] / K)))
            acc[m]["pix_rem"].append(float(np.mean(R[:, reg] ** 2)))
        print(f"phantom {seed}: " + "  ".join(
            f"{m} structure fraction {acc[m]['pix_bias'][-1] / acc[m]['pix_rem'][-1]:.4f}" for m in methods), flush=True)
    res = {"f_centres": centres.tolist(), "null_coherence": np.mean(null, axis=0).tolist(), "methods": {}}
    for m in methods:
        a = acc[m]
        res["methods"][m] = {
            "structure_fraction": (a["bias_pow"] / a["rem_pow"]).tolist(),
            "truth_coherence": np.mean(a["coh"], axis=0).tolist(),
            # noise_pow sums over phantoms and realisations, rem/err over phantoms of K-means
            "removed_over_noise_power": (a["rem_pow"] / (noise_pow / args.realisations)).tolist(),
            "error_over_noise_power": (a["err_pow"] / (noise_pow / args.realisations)).tolist(),
            "structure_fraction_pixels": float(np.sum(a["pix_bias"]) / np.sum(a["pix_rem"])),
            "structure_fraction_pixels_per_phantom": [b / r for b, r in zip(a["pix_bias"], a["pix_rem"])],
        }
    return res


def plot(slab, struct, name):
    fig, axes = C.figure(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for label, c in slab["curves"].items():
        f, v = np.array(c["f"]), np.array(c["nnps"])
        ax.semilogy(f[1:], np.maximum(v[1:], 1e-12), label=label)
    ax.set_xlabel("spatial frequency [cycles/mm]")
    ax.set_ylabel("NNPS [mm²]")
    ax.set_title("Flat slab: radial NNPS", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if struct is not None:
        f = np.array(struct["f_centres"])
        for m, r in struct["methods"].items():
            axes[1].plot(f, r["structure_fraction"], marker=".", label=m)
            axes[2].plot(f, r["truth_coherence"], marker=".", label=m)
        axes[2].plot(f, struct["null_coherence"], "k--", label="null (noise vs truth)")
        axes[1].set_title("Share of removed power that is structure (bias)", fontsize=10)
        axes[2].set_title("Coherence of removed image with truth", fontsize=10)
        for ax in axes[1:]:
            ax.set_xlabel("spatial frequency [cycles/mm]")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[1].axhline(0, color="k", lw=0.5)
    fig.tight_layout()
    return C.save_figure(fig, name)


def main(argv=None):
    import inspect

    from mammo_denoise.physics.phantom import make_phantom

    ap = C.parser(__doc__, "no_bm3d", "allow_untrained", dose=0.2, phantoms=3, size=256,
                  phantom_shape=(1024, 1024), model=None, threads=None, name="nps")
    ap.add_argument("--slab", type=int, default=1024, help="flat slab side (pixels)")
    dflt = {k: v.default for k, v in inspect.signature(make_phantom).parameters.items()}
    ap.add_argument("--photons", type=float, default=float(dflt["photons"]), help="full-dose counts per pixel")
    ap.add_argument("--gain", type=float, default=float(dflt["gain"]), help="default: make_phantom's")
    ap.add_argument("--offset", type=float, default=float(dflt["offset"]))
    ap.add_argument("--sigma-e", type=float, default=float(dflt["electronic_sigma"]))
    ap.add_argument("--realisations", type=int, default=4)
    ap.add_argument("--bands", type=int, default=14)
    args = ap.parse_args(argv)
    started = time.perf_counter()
    threads = C.set_threads(args.threads)
    spec, den = C.load_default_model(args.model, args.allow_untrained)
    args.model_label = spec.label
    use_bm3d = C.use_bm3d(args)
    pixel_mm = 0.07
    slab = slab_part(args, den, use_bm3d, pixel_mm)
    for label, c in slab["curves"].items():
        print(f"slab {label:28s} relative variance / noisy's {c['relative_variance_ratio_to_noisy']:.4f}  "
              "false spots/cm² " + ", ".join(f"{k}: {v:.2f}" for k, v in c["false_spots_per_cm2"].items()))
    struct = structure_part(args, den, use_bm3d, pixel_mm) if args.phantoms > 0 else None
    if struct:
        for m, r in struct["methods"].items():
            print(f"{m}: structure fraction of removed power (pixels) {r['structure_fraction_pixels']:.4f}")
    png = plot(slab, struct, args.name)
    C.write_result(args.name, {
        "settings": {"slab": args.slab, "dose": args.dose, "phantoms": args.phantoms, "size": args.size,
                     "phantom_shape": list(args.phantom_shape), "realisations": args.realisations,
                     "bands": args.bands, "pixel_mm": pixel_mm, "threads": threads,
                     "metrics_source": C.METRICS_SOURCE},
        "model": spec.describe(),
        "slab": slab,
        "structure": struct,
        "png": png,
    }, started)


if __name__ == "__main__":
    main()
