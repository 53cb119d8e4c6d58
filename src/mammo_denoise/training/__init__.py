"""Training and fine-tuning of denoisers (Qt-free; the napari widget calls ``train`` from a worker).

    from mammo_denoise.training import TrainConfig, train
    path = train(TrainConfig(phantoms=16, dose_range=(0.1, 0.5), epochs=20), progress=print)
"""

from .config import TrainConfig, describe
from .loop import NotImproved, compute_loss, train
from .messages import Baseline, EpochEnd, TrainDone, TrainStep

__all__ = ["TrainConfig", "train", "describe", "TrainStep", "EpochEnd", "TrainDone", "Baseline",
           "NotImproved", "compute_loss"]
