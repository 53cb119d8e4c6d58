"""Anscombe family: check values of PHYSICS.md section 3 and statistical properties."""

import numpy as np
import pytest
from scipy.stats import poisson

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.physics.anscombe import (
    ANSCOMBE_FLOOR,
    anscombe,
    expected_anscombe,
    inverse_anscombe,
)
from mammo_denoise.physics.params import NoiseParams

GAT_PARAMS = NoiseParams(offset=50.0, gain=2.5, electronic_sigma=3.0)


def poisson_expectation(f, lam):
    """E[f(K)], K ~ Poisson(lam), by summing the pmf over all but a negligible tail."""
    k = np.arange(0, int(lam + 30 * np.sqrt(lam) + 50))
    return float(np.sum(poisson.pmf(k, lam) * f(k)))


def expected_a(lam):
    return poisson_expectation(lambda k: 2.0 * np.sqrt(k + 0.375), lam)


def test_physics_md_check_values():
    assert expected_a(1.0) == pytest.approx(2.187, abs=5e-4)
    assert float(inverse_anscombe(2.187)) == pytest.approx(0.996, abs=1e-3)
    e_half = expected_a(0.5)
    assert float(inverse_anscombe(e_half, method="algebraic")) == pytest.approx(0.383, abs=1e-3)
    assert float(inverse_anscombe(e_half, method="exact")) == pytest.approx(0.501, abs=1e-3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_leaves_its_input_alone_and_keeps_types(dtype):
    p = NoiseParams(offset=40.0, gain=0.8, electronic_sigma=2.0)
    z = np.linspace(0.0, 900.0, 64, dtype=dtype).reshape(8, 8)
    before = z.copy()
    y = anscombe(z, p)
    np.testing.assert_array_equal(z, before)  # computed in place, but on its own copy
    assert y.dtype == dtype and y.shape == z.shape
    assert np.isscalar(anscombe(100.0, p)) and anscombe(100.0, p) == pytest.approx(
        2.0 / 0.8 * np.sqrt(0.8 * 100.0 + 0.375 * 0.8**2 + 2.0**2 - 0.8 * 40.0))


def test_classic_forward_values():
    x = np.array([0.0, 1.0, 10.0])
    np.testing.assert_allclose(anscombe(x), 2 * np.sqrt(x + 3 / 8))


@pytest.mark.parametrize("lam", [1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1000.0])
def test_exact_inverse_unbiased_within_1_percent(lam):
    estimate = float(inverse_anscombe(expected_a(lam), method="exact"))
    assert abs(estimate - lam) / lam < 0.01


@pytest.mark.parametrize("lam", [1.0, 2.0, 5.0, 20.0, 300.0])
def test_expected_anscombe_matches_poisson_pmf(lam):
    assert float(expected_anscombe(lam)) == pytest.approx(expected_a(lam), rel=0.01)


@pytest.mark.parametrize("lam", [100.0, 1000.0, 10000.0])
def test_algebraic_inverse_bias_and_asymptotic_fix(lam):
    e = expected_a(lam)
    assert float(inverse_anscombe(e, method="algebraic")) - lam == pytest.approx(-0.25, abs=0.02)
    assert float(inverse_anscombe(e, method="asymptotic")) - lam == pytest.approx(0.0, abs=0.02)
    assert float(inverse_anscombe(e, method="exact")) - lam == pytest.approx(0.0, abs=0.02)


def test_round_trip_counts_and_gat():
    m = np.geomspace(0.01, 1e5, 200)
    np.testing.assert_allclose(inverse_anscombe(expected_anscombe(m)), m, rtol=1e-9, atol=1e-9)
    z = 50.0 + np.geomspace(0.01, 1e5, 200)
    back = inverse_anscombe(expected_anscombe(z, GAT_PARAMS), GAT_PARAMS)
    np.testing.assert_allclose(back, z, rtol=1e-9)
    # below the offset the clean target saturates at zero counts
    assert float(inverse_anscombe(expected_anscombe(10.0, GAT_PARAMS), GAT_PARAMS)) == 50.0


def test_gat_equals_classic_on_shifted_counts():
    z = np.linspace(0, 5000, 11)
    g, mu, s = GAT_PARAMS.gain, GAT_PARAMS.offset, GAT_PARAMS.electronic_sigma
    reference = (2 / g) * np.sqrt(np.maximum(0, g * z + 3 / 8 * g**2 + s**2 - g * mu))
    np.testing.assert_allclose(anscombe(z, GAT_PARAMS), reference, rtol=1e-12)


def test_gat_stabilises_poisson_gaussian_to_unit_variance():
    rng = np.random.default_rng(1234)
    g, mu, s = GAT_PARAMS.gain, GAT_PARAMS.offset, GAT_PARAMS.electronic_sigma
    for lam in (20.0, 100.0, 500.0, 3000.0):
        z = mu + g * rng.poisson(lam, 200_000) + rng.normal(0.0, s, 200_000)
        y = anscombe(z, GAT_PARAMS)
        assert np.var(y) == pytest.approx(1.0, rel=0.03), lam
        # and the exact inverse of the mean recovers the signal
        assert float(inverse_anscombe(np.mean(y), GAT_PARAMS)) == pytest.approx(
            mu + g * lam, rel=0.005
        )


def test_small_and_negative_inputs_are_finite_and_nonnegative():
    y = np.array([-5.0, 0.0, 1e-6, 0.5, ANSCOMBE_FLOOR, 1.3])
    for method in ("exact", "asymptotic", "algebraic"):
        x = inverse_anscombe(y, method=method)
        assert np.all(np.isfinite(x)) and np.all(x >= 0)
        xd = inverse_anscombe(y, GAT_PARAMS, method=method)
        assert np.all(np.isfinite(xd)) and np.all(xd >= GAT_PARAMS.offset)
    assert np.all(inverse_anscombe(y[:5]) == 0.0)
    assert np.isfinite(anscombe(np.array([-100.0]))).all()
    # the exact inverse is continuous and increasing above the floor
    yy = np.linspace(ANSCOMBE_FLOOR, 10, 10_000)
    assert np.all(np.diff(inverse_anscombe(yy)) > 0)


def test_dtypes_numpy():
    a = np.linspace(0, 100, 10, dtype=np.float32)
    assert anscombe(a).dtype == np.float32
    assert anscombe(a, GAT_PARAMS).dtype == np.float32
    assert inverse_anscombe(a).dtype == np.float32
    assert expected_anscombe(a, GAT_PARAMS).dtype == np.float32
    assert anscombe(np.arange(5)).dtype == np.float64
    assert isinstance(inverse_anscombe(3.0), float)


def test_torch_tensors_same_values():
    torch = pytest.importorskip("torch")
    m = np.geomspace(0.1, 1e4, 50).astype(np.float32) + 50
    t = torch.from_numpy(m)
    for f, args in (
        (anscombe, (GAT_PARAMS,)),
        (expected_anscombe, (GAT_PARAMS,)),
        (anscombe, ()),
    ):
        out = f(t, *args)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), f(m, *args), rtol=1e-5)
    y = expected_anscombe(t, GAT_PARAMS)
    back = inverse_anscombe(y, GAT_PARAMS)
    assert isinstance(back, torch.Tensor)
    np.testing.assert_allclose(back.numpy(), m, rtol=1e-4)


def test_unknown_method():
    with pytest.raises(MammoDenoiseError, match="unknown inverse Anscombe method 'foo'"):
        inverse_anscombe(np.ones(3), method="foo")
