"""Denoising networks, the ``Denoiser`` wrapper, and weights on disk (safetensors + model card)."""

from mammo_denoise.models.architectures import (
    ARCHITECTURES,
    DEFAULT_DOMAIN,
    MODEL_REGISTRY,
    build_model,
    count_macs,
    count_parameters,
)
from mammo_denoise.models.denoiser import ANSCOMBE_INPUT_SCALE, CARD_VERSION, Denoiser, make_denoiser
from mammo_denoise.models.store import (
    DEFAULT_MODEL,
    ModelInfo,
    card_summary,
    list_models,
    load_model,
    read_card,
    save_model,
    shipped_model_dir,
    user_model_dir,
)

__all__ = [
    "ANSCOMBE_INPUT_SCALE",
    "ARCHITECTURES",
    "CARD_VERSION",
    "DEFAULT_DOMAIN",
    "DEFAULT_MODEL",
    "Denoiser",
    "MODEL_REGISTRY",
    "ModelInfo",
    "build_model",
    "card_summary",
    "count_macs",
    "count_parameters",
    "list_models",
    "load_model",
    "make_denoiser",
    "read_card",
    "save_model",
    "shipped_model_dir",
    "user_model_dir",
]
