"""Sample data: a synthetic mammogram (the embedded phantom), offline and in about a second."""

from __future__ import annotations

from ._layers import image_layer_kwargs

SAMPLE_SHAPE = (1024, 768)
SAMPLE_SEED = 0


def phantom_layer_data(dose: float = 1.0, shape=SAMPLE_SHAPE, seed: int = SAMPLE_SEED) -> list:
    """``[(noisy, kwargs, "image")]`` for a phantom at ``dose``, with meta and noise params."""
    from mammo_denoise.physics.phantom import make_phantom

    ph = make_phantom(seed=seed, shape=tuple(shape), view="CC", dose=dose)
    pct = f"{dose * 100:g} %"
    name = f"Synthetic {ph.meta.layer_name} ({pct} dose)"
    kwargs = image_layer_kwargs(ph.noisy, ph.meta, name=name, params=ph.params)
    kwargs["metadata"]["dose_fraction"] = float(dose)
    return [(ph.noisy, kwargs, "image")]


def sample_full_dose() -> list:
    return phantom_layer_data(1.0)


def sample_low_dose() -> list:
    # Same seed: the same anatomy as the full-dose sample, so the two can be compared.
    return phantom_layer_data(0.2)
