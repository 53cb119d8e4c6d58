"""Poisson-Gaussian detector noise parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseParams:
    """Parameters of the raw-detector noise model (PHYSICS.md section 1).

    ``z = offset + gain * N + e``, ``N ~ Poisson(lambda)``, ``e ~ Normal(0, electronic_sigma**2)``,
    so ``Var[z] = gain * (E[z] - offset) + electronic_sigma**2``.

    All three are in digital units (DN) of the image they describe; ``gain`` is DN per
    detected quantum.
    """

    offset: float
    gain: float
    electronic_sigma: float

    def __post_init__(self):
        for name in ("offset", "gain", "electronic_sigma"):
            value = getattr(self, name)
            if not np.isfinite(value):
                raise ValueError(f"NoiseParams.{name} must be finite, got {value!r}")
        if self.gain <= 0:
            raise ValueError(f"NoiseParams.gain must be positive, got {self.gain!r}")
        if self.electronic_sigma < 0:
            raise ValueError(
                f"NoiseParams.electronic_sigma must be >= 0, got {self.electronic_sigma!r}"
            )

    def variance(self, mean):
        """Noise variance the model predicts at expected signal ``mean`` (DN)."""
        signal = np.maximum(np.asarray(mean, dtype=np.float64) - self.offset, 0.0)
        return self.gain * signal + self.electronic_sigma**2

    def to_counts(self, z):
        """Detector units -> expected photon counts, ``(z - offset) / gain``."""
        return (np.asarray(z, dtype=np.float64) - self.offset) / self.gain

    def to_dict(self) -> dict:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "NoiseParams":
        return cls(float(d["offset"]), float(d["gain"]), float(d["electronic_sigma"]))
