"""Dose simulation: target moments on large simulated flat fields (seeded)."""

import numpy as np
import pytest

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.physics.dose import simulate_dose
from mammo_denoise.physics.params import NoiseParams

P = NoiseParams(offset=50.0, gain=2.5, electronic_sigma=3.0)
N_SAMPLES = 400_000
FRACTIONS = [0.1, 0.2, 0.5, 0.8]


def raw_flat(lam, params=P, n=N_SAMPLES, seed=0):
    rng = np.random.default_rng(seed)
    e = rng.normal(0, params.electronic_sigma, n)
    z = params.offset + params.gain * rng.poisson(lam, n) + e
    return z.reshape(-1, 64) if n % 64 == 0 else z


def target(lam, gamma, params=P):
    signal = params.gain * lam
    mean = params.offset + gamma * signal
    var = gamma * params.gain * signal + params.electronic_sigma**2
    return mean, var


@pytest.mark.parametrize("gamma", FRACTIONS)
@pytest.mark.parametrize("lam", [30.0, 600.0])
def test_moments_hits_target(gamma, lam):
    out = simulate_dose(raw_flat(lam, seed=1), gamma, P, rng=2)
    assert out.dtype == np.float32
    mean, var = target(lam, gamma)
    assert out.mean(dtype=np.float64) == pytest.approx(mean, rel=0.005)
    assert out.var(dtype=np.float64) == pytest.approx(var, rel=0.02)


@pytest.mark.parametrize("gamma", FRACTIONS)
def test_binomial_on_counts_is_poisson(gamma):
    lam = 400.0
    counts = np.random.default_rng(3).poisson(lam, (400, 1000))
    out = simulate_dose(counts, gamma, method="binomial", rng=4)
    assert out.dtype == np.float32
    assert np.all(out == np.round(out)) and np.all(out <= counts)
    assert out.mean(dtype=np.float64) == pytest.approx(gamma * lam, rel=0.005)
    assert out.var(dtype=np.float64) == pytest.approx(gamma * lam, rel=0.02)


@pytest.mark.parametrize("gamma", FRACTIONS)
def test_binomial_with_params_exact_when_counts_recoverable(gamma):
    # photon-counting-like detector: sigma_e << gain/2, so rounding recovers the counts
    p = NoiseParams(offset=100.0, gain=8.0, electronic_sigma=1.0)
    lam = 300.0
    out = simulate_dose(raw_flat(lam, p, seed=5), gamma, p, method="binomial", rng=6)
    mean, var = target(lam, gamma, p)
    assert out.mean(dtype=np.float64) == pytest.approx(mean, rel=0.005)
    assert out.var(dtype=np.float64) == pytest.approx(var, rel=0.02)


@pytest.mark.parametrize("gamma", [0.2, 0.5])
def test_seed_variance_factor(gamma):
    lam = 500.0
    counts = np.random.default_rng(7).poisson(lam, (400, 1000))
    out = simulate_dose(counts, gamma, method="seed", rng=8)
    assert out.mean(dtype=np.float64) == pytest.approx(gamma * lam, rel=0.005)
    ratio = out.var(dtype=np.float64) / (gamma * lam)
    assert ratio == pytest.approx(1 + gamma, rel=0.03)
    # with the seed's own parameters (offset 0, gain k, no electronic noise) in DN
    k = 2.0
    seed_params = NoiseParams(offset=0.0, gain=k, electronic_sigma=0.0)
    out_dn = simulate_dose(k * counts, gamma, seed_params, method="seed", rng=8)
    ratio_dn = out_dn.var(dtype=np.float64) / (k * k * gamma * lam)
    assert ratio_dn == pytest.approx(1 + gamma, rel=0.03)


def test_moments_noise_is_independent_of_input_noise():
    # simulating twice from the same image gives different, unbiased realisations
    z = raw_flat(600.0, n=200_000)
    a = simulate_dose(z, 0.2, P, rng=1)
    b = simulate_dose(z, 0.2, P, rng=2)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, simulate_dose(z, 0.2, P, rng=1))
    # the difference of two realisations carries only the added noise
    _, var = target(600.0, 0.2)
    z_var = P.variance(P.offset + P.gain * 600.0)
    added = var - 0.2**2 * z_var
    assert np.var(a.astype(np.float64) - b) == pytest.approx(2 * added, rel=0.03)


@pytest.mark.parametrize("method", ["moments", "binomial", "seed"])
def test_fraction_one_returns_input(method):
    counts = np.random.default_rng(9).poisson(100.0, (64, 64))
    params = None if method != "moments" else P
    out = simulate_dose(counts, 1.0, params, method=method, rng=0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, counts.astype(np.float32))
    assert out is not counts


def test_shape_preserved_for_stacks():
    z = raw_flat(200.0, n=3 * 64 * 64).reshape(3, 64, 64)
    assert simulate_dose(z, 0.5, P, rng=0).shape == (3, 64, 64)


def test_errors_exact_messages():
    z = np.ones((8, 8))
    for bad in (0, 0.0, -0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(MammoDenoiseError) as e:
            simulate_dose(z, bad, P)
        assert str(e.value) == f"dose fraction must be in (0, 1], got {bad!r}"
    with pytest.raises(MammoDenoiseError) as e:
        simulate_dose(z, 0.5, P, method="gaussian")
    assert str(e.value) == (
        "unknown dose simulation method 'gaussian'; choose one of moments, binomial, seed"
    )
    with pytest.raises(MammoDenoiseError) as e:
        simulate_dose(z, 0.5)
    assert str(e.value) == (
        "method 'moments' needs the detector noise parameters (NoiseParams: offset, gain, "
        "electronic_sigma); estimate them with estimate_noise_params"
    )
    bad_img = z.copy()
    bad_img[0, 0] = np.inf
    with pytest.raises(MammoDenoiseError) as e:
        simulate_dose(bad_img, 0.5, P)
    assert str(e.value) == (
        "image contains non-finite values (NaN or inf); dose simulation needs finite pixels"
    )
    with pytest.raises(MammoDenoiseError, match="non-negative integer photon counts"):
        simulate_dose(z * 1.5, 0.5, method="binomial")
