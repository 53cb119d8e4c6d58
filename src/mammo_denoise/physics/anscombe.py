"""Anscombe-family variance-stabilising transforms (PHYSICS.md section 3).

One implementation serves numpy arrays and torch tensors: the functions use only arithmetic,
``** 0.5`` and ``.clip(min=...)``, which both libraries provide, so a CUDA tensor stays on its
device and nothing here imports torch. numpy input is computed in float64 and returned in the
input's floating dtype (float32 in -> float32 out; integers -> float64); torch input is computed
and returned in its own floating dtype (integers -> float32).

Conventions
-----------
``params is None``: the data are photon counts ``x`` (Poisson) and the classic Anscombe
transform is used. Otherwise ``params`` is a :class:`~mammo_denoise.physics.params.NoiseParams`
for ``z = mu + g * Poisson(lambda) + Normal(0, sigma^2)`` in digital units (DN), with
``g = params.gain``, ``mu = params.offset``, ``sigma = params.electronic_sigma``, and the
generalized Anscombe transform (GAT) is used. The GAT equals the classic transform applied to the
shifted counts ``x = (z - mu)/g + (sigma/g)^2``; every function below works through that
identity, so the GAT depends on ``mu`` and ``sigma`` only through ``sigma^2 - g*mu`` (the
intercept of the variance-mean line), apart from the clamp at zero counts.

References
----------
- F. J. Anscombe, "The transformation of Poisson, binomial and negative-binomial data",
  Biometrika 35(3/4):246-254, 1948.
- M. Makitalo, A. Foi, "Optimal inversion of the Anscombe transformation in low-count Poisson
  image denoising", IEEE TIP 20(1):99-109, 2011 (exact unbiased inverse).
- M. Makitalo, A. Foi, "A closed-form approximation of the exact unbiased inverse of the
  Anscombe variance-stabilizing transformation", IEEE TIP 20(9):2697-2698, 2011.
- M. Makitalo, A. Foi, "Optimal inversion of the generalized Anscombe transformation for
  Poisson-Gaussian noise", IEEE TIP 22(1):91-103, 2013.
"""

from __future__ import annotations

import math

import numpy as np

from mammo_denoise.errors import MammoDenoiseError

__all__ = [
    "anscombe",
    "inverse_anscombe",
    "expected_anscombe",
    "INVERSE_METHODS",
    "ANSCOMBE_FLOOR",
]

INVERSE_METHODS = ("exact", "asymptotic", "algebraic")

#: ``A(0) = 2*sqrt(3/8)``: the smallest value the forward transform takes, and the value of
#: E[A(x)] as the Poisson mean tends to 0. The closed-form exact inverse is 0 there.
ANSCOMBE_FLOOR = 2.0 * math.sqrt(3.0 / 8.0)

_S32 = math.sqrt(1.5)


# ----------------------------------------------------------------------------- helpers
def _is_torch(x) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch"


def _prepare(x):
    """Return ``(work, finish)``: a floating working array and a function giving the output type."""
    if _is_torch(x):
        if not x.is_floating_point():
            x = x.float()
        return x, lambda r: r
    a = np.asarray(x)
    dtype = a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)
    work = a.astype(np.float64, copy=False)
    return work, lambda r: np.asarray(r, dtype=dtype)[()]


def _shift_scale(params):
    """``(g, mu, (sigma/g)^2)`` of the GAT, or the identity ``(1, 0, 0)`` for plain counts."""
    if params is None:
        return 1.0, 0.0, 0.0
    g = float(params.gain)
    return g, float(params.offset), (float(params.electronic_sigma) / g) ** 2


def _to_shifted_counts(z, params):
    """``x = (z - mu)/g + (sigma/g)^2``, the argument of the classic transform inside the GAT."""
    g, mu, s2 = _shift_scale(params)
    if params is None:
        return z
    return (z - mu) / g + s2


def _from_shifted_counts(x, params):
    """Inverse of :func:`_to_shifted_counts` with the clamp at zero counts:
    ``g * max(0, x - (sigma/g)^2) + mu`` (for counts: ``max(0, x)``)."""
    g, mu, s2 = _shift_scale(params)
    return g * (x - s2).clip(min=0.0) + mu


def _exact_closed_form(y):
    """Closed-form approximation of the exact unbiased inverse (Makitalo & Foi 2011):

    ``I(y) = y^2/4 + (1/4)*sqrt(3/2)/y - (11/8)/y^2 + (5/8)*sqrt(3/2)/y^3 - 1/8``.

    ``y`` must be ``>= ANSCOMBE_FLOOR`` (where ``I`` is 0 and increasing)."""
    inv = 1.0 / y
    inv2 = inv * inv
    return y * y / 4.0 + 0.25 * _S32 * inv - 1.375 * inv2 + 0.625 * _S32 * inv2 * inv - 0.125


def _exact_closed_form_derivative(y):
    """``I'(y) = y/2 - (1/4)sqrt(3/2)/y^2 + (11/4)/y^3 - (15/8)sqrt(3/2)/y^4`` (> 0 for
    ``y >= ANSCOMBE_FLOOR``)."""
    inv = 1.0 / y
    inv2 = inv * inv
    return y / 2.0 - 0.25 * _S32 * inv2 + 2.75 * inv2 * inv - 1.875 * _S32 * inv2 * inv2


# ----------------------------------------------------------------------------- public
def anscombe(z, params=None):
    """Forward variance-stabilising transform.

    Classic (``params is None``, ``z`` in photon counts; Anscombe 1948)::

        A(x) = 2 * sqrt(x + 3/8)

    Generalized (``params`` given, ``z`` in DN; Makitalo & Foi 2013, eq. 2)::

        GAT(z) = (2/g) * sqrt(max(0, g*z + (3/8)*g^2 + sigma^2 - g*mu))

    Poisson(-Gaussian) noise becomes approximately Normal with unit variance (within about 1 %
    for a mean of 5 counts or more). The argument of the square root is clamped at 0, so values
    below the offset map to 0 instead of NaN.

    Parameters
    ----------
    z : array-like or torch.Tensor
    params : NoiseParams or None

    Returns
    -------
    Same type as ``z`` (numpy: the input's floating dtype, float64 for integers).
    """
    work, finish = _prepare(z)
    if isinstance(work, np.ndarray):
        # The same operations in place on one new array: a full field's seven temporaries cost
        # more in first page touches than the arithmetic (BENCHMARKS.md section 4).
        g, mu, s2 = _shift_scale(params)
        # work is float64 already; copy it only where it is still the caller's array
        x = work.copy() if np.may_share_memory(work, z) else work
        x -= mu
        x /= g
        x += s2
        x += 0.375
        np.clip(x, 0.0, None, out=x)
        np.sqrt(x, out=x)
        x *= 2.0
        return finish(x)
    x = _to_shifted_counts(work, params)
    return finish(2.0 * (x + 0.375).clip(min=0.0) ** 0.5)


def inverse_anscombe(y, params=None, method: str = "exact"):
    """Inverse transform, back to counts (``params is None``) or to DN.

    Methods, written for the classic transform (``D = y``):

    - ``"exact"``: closed-form approximation of the exact unbiased inverse (Makitalo & Foi,
      IEEE TIP 20(9), 2011)::

          I(D) = D^2/4 + (1/4)*sqrt(3/2)/D - (11/8)/D^2 + (5/8)*sqrt(3/2)/D^3 - 1/8

      so that ``I(E[A(x)]) ~= E[x]``. It is what a denoiser's output (an estimate of
      ``E[A(z) | signal]``) should be inverted with.
    - ``"asymptotic"``: ``(D/2)^2 - 1/8`` (unbiased for large counts).
    - ``"algebraic"``: ``(D/2)^2 - 3/8`` (the literal inverse; biased by about -0.25 counts).

    For the GAT (Makitalo & Foi, IEEE TIP 22(1), 2013) the same formula is applied to ``D = y``
    and mapped back with ``g * max(0, I(D) - (sigma/g)^2) + mu``.

    Small ``y``: ``I`` is 0 at ``D = 2*sqrt(3/8)`` (``A(0)``, also the limit of ``E[A]`` as the
    mean tends to 0), increasing above it, and oscillates and diverges (``+inf`` as ``D -> 0``)
    below. ``D`` is therefore clamped at ``2*sqrt(3/8)`` before the closed form, and every
    method clamps its result at 0 counts (``mu`` in DN). The output is finite and ``>= 0``
    counts for every finite input, and equal to the closed form wherever that is meaningful.

    Parameters
    ----------
    y : array-like or torch.Tensor
    params : NoiseParams or None
    method : {"exact", "asymptotic", "algebraic"}
    """
    if method not in INVERSE_METHODS:
        raise MammoDenoiseError(
            f"unknown inverse Anscombe method {method!r}; "
            f"choose one of {', '.join(INVERSE_METHODS)}"
        )
    work, finish = _prepare(y)
    if method == "exact":
        x = _exact_closed_form(work.clip(min=ANSCOMBE_FLOOR))
    elif method == "asymptotic":
        x = (work / 2.0) ** 2 - 0.125
    else:
        x = (work / 2.0) ** 2 - 0.375
    return finish(_from_shifted_counts(x, params))


def expected_anscombe(mean, params=None, iterations: int = 8):
    """Forward map from a noise-free mean signal to the expected transformed value.

    Defined as the inverse of the exact unbiased inverse: returns ``D >= 2*sqrt(3/8)`` with
    ``I(D) = x``, where ``I`` is the closed form of :func:`inverse_anscombe` and

        x = max(mean, 0)                                    (params None, counts)
        x = max((mean - mu)/g, 0) + (sigma/g)^2             (GAT, mean in DN)

    so that ``inverse_anscombe(expected_anscombe(m, p), p, "exact") == m`` for ``m >= mu``.
    For Poisson counts this is ``E[A(Poisson(m))]`` to within the accuracy of the closed form
    (within 0.2 % for ``m >= 1``, checked against the Poisson pmf in the tests); for the GAT it
    is the Makitalo-Foi approximation of ``E[GAT(z)]``. Training uses it as the clean target in
    the Anscombe domain (docs/ARCHITECTURE.md).

    Solved by Newton's method, ``D <- D - (I(D) - x)/I'(D)``, from ``D0 = 2*sqrt(x + 1/8)``
    (the asymptotic forward map) clamped at ``2*sqrt(3/8)``; ``I`` is increasing and convex
    there, so a fixed number of vectorised iterations converges to machine precision.
    """
    work, finish = _prepare(mean)
    g, mu, s2 = _shift_scale(params)
    if params is None:
        x = work.clip(min=0.0)
    else:
        x = ((work - mu) / g).clip(min=0.0) + s2
    d = (2.0 * (x + 0.125) ** 0.5).clip(min=ANSCOMBE_FLOOR)
    for _ in range(iterations):
        d = (d - (_exact_closed_form(d) - x) / _exact_closed_form_derivative(d)).clip(
            min=ANSCOMBE_FLOOR
        )
    return finish(d)
