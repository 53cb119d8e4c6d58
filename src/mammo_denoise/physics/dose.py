"""Simulating a lower dose from a raw image (PHYSICS.md section 2).

A dose fraction ``gamma`` scales the photon counts, not the detector: for
``z = tau + g*N + e`` with ``N ~ Poisson(lambda)``, ``e ~ Normal(0, sigma_e^2)`` the image at
dose ``gamma`` has

    E[z_gamma] = tau + gamma * (E[z] - tau)
    Var[z_gamma] = gamma * g * (E[z] - tau) + sigma_e^2

Methods (``simulate_dose(..., method=...)``):

- ``"moments"`` (default): Gaussian correction that is exact in the first two moments for the
  Poisson-Gaussian model, in the spirit of Borges et al., Med Phys 43(6):2704, 2016.
- ``"binomial"``: binomial thinning of integer photon counts, exactly Poisson(gamma*lambda).
- ``"seed"``: the first seed's re-sampling (Eckert et al. 2019), kept to reproduce it; its
  variance is too large by the factor ``1 + gamma``.
"""

from __future__ import annotations

import numbers

import numpy as np

from mammo_denoise.errors import MammoDenoiseError

__all__ = ["simulate_dose", "DOSE_METHODS"]

DOSE_METHODS = ("moments", "binomial", "seed")


def _validate(image, fraction, method) -> tuple[np.ndarray, float]:
    if method not in DOSE_METHODS:
        raise MammoDenoiseError(
            f"unknown dose simulation method {method!r}; choose one of {', '.join(DOSE_METHODS)}"
        )
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, numbers.Real)
        or not np.isfinite(fraction)
        or not 0.0 < float(fraction) <= 1.0
    ):
        raise MammoDenoiseError(f"dose fraction must be in (0, 1], got {fraction!r}")
    z = np.asarray(image)
    if z.dtype.kind not in "fiu":
        raise MammoDenoiseError(f"dose simulation needs a numeric image, got dtype {z.dtype}")
    if z.dtype.kind == "f" and not np.isfinite(z).all():
        raise MammoDenoiseError(
            "image contains non-finite values (NaN or inf); dose simulation needs finite pixels"
        )
    return z, float(fraction)


def _moments(z: np.ndarray, gamma: float, params, rng, noise_kernel=None) -> np.ndarray:
    """Moment-exact dose reduction (PHYSICS.md section 2)::

        z_gamma = tau + gamma*(z - tau)
                  + sqrt(gamma*(1 - gamma)*g*max(z - tau, 0)) * n1
                  + sqrt(1 - gamma^2) * sigma_e * n2,              n1, n2 ~ Normal(0, 1)

    Conditional on ``z`` the added terms have mean 0, so ``E[z_gamma] = tau + gamma*(E[z]-tau)``;
    ``Var = gamma^2 (g*s + sigma_e^2) + gamma(1-gamma) g s + (1-gamma^2) sigma_e^2
    = gamma*g*s + sigma_e^2`` with ``s = E[z] - tau`` (exact while ``z > tau``, i.e. away from
    a few counts, where ``max(., 0)`` clips). The added noise is white and Gaussian.

    ``noise_kernel`` (2-D): the added noise is white noise convolved with it instead
    (``physics.correlation.correlated_noise``), so that it has the detector's correlation
    between neighbouring pixels, and its variance is ``sum(kernel**2)`` times the above: the
    noise line of ``params`` times that factor is the pixel variance (a kernel of
    ``NoiseCorrelation.kernel()``; PHYSICS.md section 7: recorruption stays unbiased only with
    the detector's own covariance).
    """
    tau, g, s_e = float(params.offset), float(params.gain), float(params.electronic_sigma)
    signal = z - tau
    out = tau + gamma * signal
    quantum_sd = np.sqrt(gamma * (1.0 - gamma) * g * np.maximum(signal, 0.0))
    if noise_kernel is None:
        draw = rng.standard_normal
    else:
        from mammo_denoise.physics.correlation import correlated_noise

        def draw(shape):
            return correlated_noise(shape, noise_kernel, rng)
    out += quantum_sd * draw(z.shape)
    if s_e > 0:
        out += np.sqrt(1.0 - gamma * gamma) * s_e * draw(z.shape)
    return out


def _binomial(z: np.ndarray, gamma: float, params, rng) -> np.ndarray:
    """Binomial thinning, ``N_gamma ~ Binomial(N, gamma)``: if ``N ~ Poisson(lambda)`` then
    ``N_gamma ~ Poisson(gamma*lambda)`` exactly (thinning of a Poisson process).

    ``params is None``: the image is the photon counts ``N`` (non-negative integers).
    With ``params``: counts are recovered as ``N = round(max((z - tau)/g, 0))`` and the removed
    photons are subtracted, ``z_gamma = z - g*(N - N_gamma)``, which keeps the original
    electronic noise (variance ``sigma_e^2``, as the target wants). Exact only when the
    rounding recovers the true counts, i.e. for photon counts or ``sigma_e << g/2``
    (photon-counting detectors); for energy-integrating detectors use ``"moments"``.
    """
    if params is None:
        if np.any(z < 0) or (z.dtype.kind == "f" and np.any(z != np.round(z))):
            raise MammoDenoiseError(
                "method 'binomial' without noise parameters needs non-negative integer photon "
                "counts; pass params to convert detector values to counts"
            )
        return rng.binomial(z.astype(np.int64), gamma).astype(np.float64)
    tau, g = float(params.offset), float(params.gain)
    counts = np.round(np.maximum((z - tau) / g, 0.0)).astype(np.int64)
    kept = rng.binomial(counts, gamma)
    return z - g * (counts - kept)


def _seed(z: np.ndarray, gamma: float, params, rng) -> np.ndarray:
    """The first seed's simplification (Eckert et al. 2019, eqs. 2-3): re-sample
    ``Poisson(gamma * N_observed)`` from the noisy counts.

    Since ``N_observed`` is already Poisson, ``Var = gamma*lambda + gamma^2*lambda
    = gamma*lambda*(1 + gamma)`` counts^2: 1.2x the target at ``gamma = 0.2``. ``params is None``:
    the image is counts; with ``params``, ``N = max((z - tau)/g, 0)`` and the result is
    ``tau + g*Poisson(gamma*N)`` (no electronic noise, as in the seed; with the seed's own
    parameters ``NoiseParams(0, k, 0)`` this is exactly ``k*Poisson(gamma*z/k)``).
    """
    if params is None:
        return rng.poisson(gamma * np.maximum(z, 0.0)).astype(np.float64)
    tau, g = float(params.offset), float(params.gain)
    return tau + g * rng.poisson(gamma * np.maximum((z - tau) / g, 0.0))


_METHODS = {"moments": _moments, "binomial": _binomial, "seed": _seed}


def simulate_dose(image, fraction, params=None, method: str = "moments", rng=None,
                  noise_kernel=None) -> np.ndarray:
    """Simulate the image at ``fraction`` of its dose (PHYSICS.md section 2).

    Parameters
    ----------
    image : array, any shape
        Linear raw image in DN (or photon counts with ``params=None`` for ``"binomial"`` and
        ``"seed"``). Must be finite.
    fraction : float in (0, 1]
        Dose fraction ``gamma`` (0.2 = 80 % dose reduction). 1 returns the input unchanged
        (as a float32 copy).
    params : NoiseParams, optional
        Detector noise parameters of ``image``; required by ``"moments"``.
    method : {"moments", "binomial", "seed"}
        See the module docstring and ``_moments``, ``_binomial``, ``_seed``.
    rng : int, numpy.random.Generator or None
        Passed to ``numpy.random.default_rng``.
    noise_kernel : 2-D array, optional
        ``"moments"`` only: draw the added noise with this kernel's correlation (a detector
        whose noise is correlated between neighbours; see ``_moments``).

    Returns
    -------
    float32 array of the input's shape, in the input's units.

    Raises
    ------
    MammoDenoiseError
        ``"unknown dose simulation method 'x'; choose one of moments, binomial, seed"``,
        ``"dose fraction must be in (0, 1], got x"``, non-finite input,
        ``"method 'moments' needs the detector noise parameters (NoiseParams: offset, gain,
        electronic_sigma); estimate them with estimate_noise_params"``, or non-count input
        to ``"binomial"`` without ``params``.
    """
    z, gamma = _validate(image, fraction, method)
    if method == "moments" and params is None:
        raise MammoDenoiseError(
            "method 'moments' needs the detector noise parameters (NoiseParams: offset, gain, "
            "electronic_sigma); estimate them with estimate_noise_params"
        )
    if gamma == 1.0:
        return np.array(z, dtype=np.float32, copy=True)
    generator = np.random.default_rng(rng)
    if noise_kernel is not None:
        if method != "moments":
            raise MammoDenoiseError("a noise kernel (correlated noise) needs method 'moments'")
        if z.ndim != 2:
            raise MammoDenoiseError("a noise kernel (correlated noise) needs a 2-D image")
        out = _moments(z.astype(np.float64, copy=False), gamma, params, generator,
                       np.asarray(noise_kernel, np.float64))
        return out.astype(np.float32)
    out = _METHODS[method](z.astype(np.float64, copy=False), gamma, params, generator)
    return out.astype(np.float32)
