"""Physics-driven denoising of low-dose mammograms.

The public API (see docs/ARCHITECTURE.md). Names are imported lazily so that
``import mammo_denoise`` and the CLI start fast and do not pull in torch until needed.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "MammoDenoiseError": "mammo_denoise.errors",
    "Cancelled": "mammo_denoise.errors",
    "MammogramMeta": "mammo_denoise.io.meta",
    "read_mammogram": "mammo_denoise.io",
    "write_derived": "mammo_denoise.io",
    "write_mammogram": "mammo_denoise.io",
    "NoiseParams": "mammo_denoise.physics.params",
    "estimate_noise_params": "mammo_denoise.physics.noise",
    "simulate_dose": "mammo_denoise.physics.dose",
    "anscombe": "mammo_denoise.physics.anscombe",
    "inverse_anscombe": "mammo_denoise.physics.anscombe",
    "make_phantom": "mammo_denoise.physics.phantom",
    "Phantom": "mammo_denoise.physics.phantom",
    "load_model": "mammo_denoise.models",
    "list_models": "mammo_denoise.models",
    "denoise": "mammo_denoise.inference",
    "train": "mammo_denoise.training",
    "TrainConfig": "mammo_denoise.training",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    try:
        module = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'mammo_denoise' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
