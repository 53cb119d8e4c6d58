"""Shared UI state: the model registry signal and small evented settings dataclasses.

``MODELS`` is one process-wide registry: the Denoise and Fine-tune widgets listen to
``MODELS.changed`` and the Fine-tune widget calls ``MODELS.refresh()`` as soon as a model is saved,
so a fine-tuned model is in every model list at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from psygnal import Signal, evented


class ModelRegistry:
    """Cached ``list_models()`` with a ``changed`` signal (emits the new list)."""

    changed = Signal(list)

    def __init__(self):
        self._models: list | None = None
        self.error: str | None = None

    @property
    def models(self) -> list:
        if self._models is None:
            self.refresh(emit=False)
        return list(self._models or [])

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def get(self, name: str):
        for m in self.models:
            if m.name == name:
                return m
        return None

    def refresh(self, emit: bool = True) -> list:
        """Re-scan shipped and user models (cheap: cards only, no weights)."""
        try:
            from mammo_denoise.models import list_models

            self._models = list(list_models())
            self.error = None
        except Exception as exc:  # noqa: BLE001 - a broken model dir must not break the UI
            self._models = []
            self.error = f"could not list models: {exc}"
        if emit:
            self.changed.emit(list(self._models))
        return list(self._models)


MODELS = ModelRegistry()


def default_model_name() -> str | None:
    try:
        from mammo_denoise.models import DEFAULT_MODEL
    except Exception:  # noqa: BLE001
        DEFAULT_MODEL = None
    names = MODELS.names()
    if DEFAULT_MODEL in names:
        return DEFAULT_MODEL
    return names[0] if names else None


@evented
@dataclass
class DenoiseSettings:
    model: str = ""
    device: str = "auto"  # auto / cpu / cuda
    engine: str = "auto"  # engines.ENGINES: what runs the network on the CPU
    tile: int = 1024  # inference.DEFAULT_TILE (not imported: this module stays torch-free)
    overlap: int = -1  # -1: the model's seamless default
    batch_size: int = 0  # 0: the core's choice (1 on CPU, 2 on a GPU)
    strength: int = 100  # percent: inference.apply_strength, applied live to the last result


@evented
@dataclass
class DoseSettings:
    fraction: float = 0.2
    method: str = "moments"  # moments / binomial / seed
    seed: int = 0
    offset: float = 0.0
    gain: float = 1.0
    electronic_sigma: float = 0.0


@evented
@dataclass
class FinetuneSettings:
    source: str = "layers"  # layers / folder
    folder: str = ""
    dose_low: float = 0.1
    dose_high: float = 0.5
    epochs: int = 2
    iters_per_epoch: int = 50
    patch: int = 64
    batch_size: int = 8
    lr: float = 1e-4
    init: str = ""  # starting model ("" = random init)
    architecture: str = ""
    name: str = "finetuned"
    seed: int = 0
    objective: str = "auto"  # auto / supervised / noisier2noise / seed (training.config.OBJECTIVES)
