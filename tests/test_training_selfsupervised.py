"""Fine-tuning on real images without clean truth: noisier2noise targets, correlated detector
noise (simulated and measured), the automatic objective, and the start-model gate."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.physics.anscombe import anscombe, expected_anscombe
from mammo_denoise.physics.correlation import (NoiseCorrelation, correlated_detector_image, correlated_noise,
                                               measure_noise_correlation, neighbour_correlation,
                                               neighbour_kernel, second_neighbour_correlation)
from mammo_denoise.physics.dose import simulate_dose
from mammo_denoise.physics.params import NoiseParams
from mammo_denoise.physics.phantom import make_phantom
from mammo_denoise.training import NotImproved, TrainConfig, train
from mammo_denoise.training.data import PatchSampler, Source

PARAMS = NoiseParams(offset=60.0, gain=1.5, electronic_sigma=6.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def phantom512():
    return make_phantom(seed=4, shape=(512, 512))


def _counts(ph):
    return (ph.truth.astype(np.float64) - ph.params.offset) / ph.params.gain


# ----------------------------------------------------------------------------- the detector
def test_correlated_detector_has_the_asked_neighbour_correlation_and_keeps_the_noise_line():
    lam = np.full((384, 384), 1500.0)
    z = correlated_detector_image(lam, PARAMS, 1.0, rng=1, rho1=0.3).astype(np.float64)
    noise = z - (PARAMS.offset + PARAMS.gain * lam)
    cx, cy = neighbour_correlation(noise)
    # the quantum part (99 % of the variance) is correlated 0.3, the electronic part is white
    q = PARAMS.gain ** 2 * 1500.0
    expected = 0.3 * q / (q + PARAMS.electronic_sigma ** 2)
    assert cx == pytest.approx(expected, abs=0.03) and cy == pytest.approx(expected, abs=0.03)
    assert noise.var() == pytest.approx(q + PARAMS.electronic_sigma ** 2, rel=0.03)
    white = correlated_detector_image(lam, PARAMS, 1.0, rng=1, rho1=0.0) - (PARAMS.offset + PARAMS.gain * lam)
    assert max(abs(c) for c in neighbour_correlation(white)) < 0.02


def test_kernel_noise_has_unit_variance_and_the_kernels_correlation():
    n = correlated_noise((256, 256), neighbour_kernel(0.3, 0.1), rng=2)
    assert n.var() == pytest.approx(1.0, abs=0.03)
    cx, cy = neighbour_correlation(n)
    assert cx == pytest.approx(0.3, abs=0.03) and cy == pytest.approx(0.1, abs=0.03)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.5])
def test_second_neighbour_correlation_is_the_kernel_noises_lag_two_correlation(rho):
    n = correlated_noise((512, 512), neighbour_kernel(rho), rng=3)
    lag2 = float(np.mean(n[:, 2:] * n[:, :-2]) / n.var())
    assert lag2 == pytest.approx(second_neighbour_correlation(rho), abs=0.01)
    assert (second_neighbour_correlation(rho) > 0.02) == (rho > 0)


@pytest.mark.parametrize("rho", [0.0, 0.3])
def test_measured_correlation_matches_the_simulated_detector_on_a_phantom(phantom512, rho):
    z = correlated_detector_image(_counts(phantom512), phantom512.params, 1.0, rng=5, rho1=rho)
    m = measure_noise_correlation(z, phantom512.params)
    assert m.pixels > 200_000
    if rho:
        assert m.rho_x == pytest.approx(rho, abs=0.05) and m.rho_y == pytest.approx(rho, abs=0.05)
    else:  # the phantom's fine texture adds a few hundredths: below 0.15, training takes it as white
        assert max(abs(m.rho_x), abs(m.rho_y)) < 0.1


def test_dose_with_a_noise_kernel_is_moment_exact_and_correlated():
    full = np.full((256, 256), PARAMS.offset + PARAMS.gain * 2000.0)  # a noise-free level
    kernel = NoiseCorrelation(1.0, 0.3, 0.3).kernel()
    d = 0.3
    z = simulate_dose(full, d, PARAMS, rng=3, noise_kernel=kernel).astype(np.float64)
    added = z - (PARAMS.offset + d * (full - PARAMS.offset))
    # the full-dose image here is noise-free, so the added noise is all there is: d(1-d) g s + (1-d^2) se^2
    var = d * (1 - d) * PARAMS.gain * 2000.0 * PARAMS.gain + (1 - d * d) * PARAMS.electronic_sigma ** 2
    assert added.var() == pytest.approx(var, rel=0.04)
    assert np.mean(neighbour_correlation(added)) == pytest.approx(0.3, abs=0.03)
    with pytest.raises(MammoDenoiseError, match="needs method 'moments'"):
        simulate_dose(full, d, PARAMS, method="binomial", rng=3, noise_kernel=kernel)


# ----------------------------------------------------------------------------- the target
def _draws(objective, rho_detector, noise, n_draws=300, d=0.4, p=48):
    """Many single-patch batches of one noise-free level behind a fresh full-dose realisation:
    returns (y, t, s) stacked over draws, in the GAT domain."""
    cfg = TrainConfig(images=[(np.zeros((p, p), np.float32), PARAMS)], objective=objective, patch=p,
                      dose=d, edge_fraction=0.0, boundary_fraction=0.0, loss="mse")
    yy = np.linspace(0, 1, p)[:, None] * np.ones((1, p))
    lam = 400.0 + 3000.0 * yy  # a ramp: rho changes with the level (electronic noise)
    s = expected_anscombe(PARAMS.offset + PARAMS.gain * d * lam, PARAMS)
    ys, ts = [], []
    for k in range(n_draws):
        z = correlated_detector_image(lam, PARAMS, 1.0, rng=[11, k], rho1=rho_detector)
        src = Source(z, PARAMS, np.ones((p, p), bool), "real", "z", noise=noise)
        b = PatchSampler([src], cfg).batch(np.random.default_rng([12, k]), 1, augment=False)
        ys.append(b["y"][0, 0])
        ts.append(b["t"][0, 0])
    return np.array(ys), np.array(ts), s


def _slope(target_noise, input_noise, shift=(0, 0)):
    a = target_noise[:, shift[0]:, shift[1]:]
    b = input_noise[:, :input_noise.shape[1] - shift[0], :input_noise.shape[2] - shift[1]]
    return float(np.sum(a * b) / np.sum(input_noise * input_noise))


def test_noisier2noise_target_is_unbiased_and_uncorrelated_with_the_input():
    y, t, s = _draws("noisier2noise", 0.0, NoiseCorrelation())
    nt, ny = t - s, y - s
    assert ny.var() == pytest.approx(1.0, abs=0.03)  # the input: unit noise at dose d
    assert abs(nt.mean()) < 0.01  # mean over draws equals the clean GAT signal
    per_pixel = nt.mean(axis=0)
    assert np.sqrt(np.mean(per_pixel ** 2)) < 2.0 * np.sqrt(nt.var() / len(nt))  # within noise
    assert abs(_slope(nt, ny)) < 0.02  # E[t' | y] has nothing of y's noise: E[t'|y] = E[s|y]
    # the seed's target keeps rho of the input noise (d = 0.4 less the electronic share)
    y2, t2, _ = _draws("seed", 0.0, None)
    rho = PatchSampler.target_share(PARAMS.offset + PARAMS.gain * (400.0 + 3000.0 * np.linspace(0, 1, 48)),
                                    PARAMS, 0.4).mean()
    assert _slope(t2 - s, y2 - s) == pytest.approx(rho, abs=0.02)
    assert 0.3 < rho < 0.4


def test_correlated_detector_needs_correlated_added_noise():
    measured = NoiseCorrelation(1.0, 0.3, 0.3)
    y, t, s = _draws("noisier2noise", 0.3, measured, n_draws=200)
    nt, ny = t - s, y - s
    # neighbours too: with the detector's correlation in the added noise, t' - s is independent of y
    assert abs(_slope(nt, ny, (0, 1))) < 0.02 and abs(_slope(nt, ny)) < 0.02
    y2, t2, _ = _draws("noisier2noise", 0.3, NoiseCorrelation(), n_draws=200)  # white added noise
    assert _slope(t2 - s, y2 - s, (0, 1)) > 0.05  # biased: t' keeps the correlated part


# ----------------------------------------------------------------------------- configuration
def test_objective_is_chosen_from_the_data_with_an_override():
    img = [(np.zeros((64, 64), np.float32), PARAMS)]
    assert TrainConfig(phantoms=2).objective == "supervised"
    with pytest.warns(UserWarning) as rec:
        cfg = TrainConfig(images=img, dose_range=(0.1, 0.8))
    assert (cfg.objective, cfg.objective_auto) == ("noisier2noise", True)
    assert (cfg.loss, cfg.dose_range) == ("mse", (0.1, 0.5))
    assert str(rec[0].message) == ("noisier2noise trains at doses up to 0.5 (its corrected target's noise "
                                   "grows like d/(1-d)): dose range 0.1-0.8 cut to 0.1-0.5")
    assert TrainConfig(images=img, objective="seed").loss == "mse+ssim"
    assert TrainConfig(images=img, phantoms=2).objective == "noisier2noise"  # any real image
    for kw, words in [({"images": img, "objective": "supervised"}, "needs the truth"),
                      ({"phantoms": 2, "objective": "seed"}, "learns from real noisy images"),
                      ({"images": img, "loss": "mse+ssim"}, "unbiased for the MSE loss only"),
                      ({"images": img, "dose": 0.8}, "doses up to 0.5"),
                      ({"images": img, "objective": "n2n"}, "objective must be one of")]:
        with pytest.raises(MammoDenoiseError, match=words):
            TrainConfig(**kw)


# ----------------------------------------------------------------------------- training
TINY = dict(architecture="unet", arch_kwargs={"base": 4, "depth": 2}, patch=32, batch_size=4,
            epochs=1, iters_per_epoch=2, val_patches=8, log_every=1, seed=1, command="pytest")


def test_noisier2noise_fine_tune_records_objective_data_noise_and_validation(tmp_path, phantom512):
    base = train(TrainConfig(phantoms=2, phantom_shape=(64, 64), out=tmp_path / "base.safetensors", **TINY))
    z = correlated_detector_image(_counts(phantom512), phantom512.params, 1.0, rng=6, rho1=0.3)
    cfg = TrainConfig(images=[(z, phantom512.params)], init=base, out=tmp_path / "ft.safetensors",
                      require_improvement=False, **{k: v for k, v in TINY.items() if k != "architecture"
                                                    and k != "arch_kwargs"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray warning on this path
        path = train(cfg)
    card = json.loads(path.with_suffix(".json").read_text())
    tr = card["training"]
    assert (tr["objective"], tr["objective_chosen"]) == ("noisier2noise", "automatically from the data")
    real = tr["data"]["real"]
    assert real["count"] == 1 and real["sizes"] == [[512, 512]]
    assert real["noise_measured"]["neighbour_correlation_x"] == pytest.approx(0.3, abs=0.05)
    assert real["noise_used"]["neighbour_correlation_y"] == pytest.approx(0.3, abs=0.05)
    v = card["metrics"]["validation"]
    for who in ("start", "fine_tuned"):
        assert {"val_loss", "residual_variance_gat", "residual_neighbour_correlation",
                "estimated_mse_gat", "target_noise_variance"} <= set(v[who])
        assert v[who]["estimated_mse_gat"] == pytest.approx(
            v[who]["corrected_mse"] - v[who]["target_noise_variance"])
    assert v["improved"] == (v["fine_tuned"]["val_loss"] < v["start"]["val_loss"])


def test_cli_fine_tune_that_does_not_improve_says_so_and_writes_nothing(tmp_path, capsys):
    from mammo_denoise.cli import main

    base = train(TrainConfig(phantoms=2, phantom_shape=(64, 64), out=tmp_path / "base.safetensors", **TINY))
    out = tmp_path / "ft.safetensors"
    code = main(["train", "--phantoms", "2", "--phantom-size", "64x64", "--init", str(base), "--lr", "1e-12",
                 "--epochs", "1", "--iters-per-epoch", "1", "--patch", "32", "--batch-size", "2",
                 "--seed", "1", "--out", str(out)])
    text = capsys.readouterr()
    assert code == 3 and not out.exists()
    last = text.out.strip().splitlines()[-1]
    assert last.startswith(f"mammo-denoise train: fine-tuning did not improve on {base}: validation loss ")
    assert last.endswith("nothing saved, existing models unchanged")
    assert "Traceback" not in text.err and "Warning" not in text.err
