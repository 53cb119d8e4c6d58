"""Typed progress messages: small, picklable (they cross process boundaries under DDP spawn)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrainStep:
    """Running mean of the training loss since the previous TrainStep (on rank 0)."""

    epoch: int  # 1-based
    iteration: int  # 1-based, within the epoch
    iterations: int
    loss: float


@dataclass(frozen=True)
class EpochEnd:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    val_loss: float
    # dB, in DN against the noise-free image at the patch's dose; with the noisier2noise
    # objective (no truth) estimated in the GAT domain: 10 log10(range^2 / (corrected MSE - tvar))
    val_psnr: float
    seconds: float
    val_psnr_noisy: float = float("nan")  # the same PSNR for the noisy input: the baseline
    best: bool = False  # this epoch's weights are the best so far


@dataclass(frozen=True)
class TrainDone:
    path: Path
    best_val_psnr: float


@dataclass(frozen=True)
class Baseline:
    """A fine-tune's starting model scored on the validation patches before the first epoch:
    only epochs that beat it are saved."""

    val_loss: float
    val_psnr: float
    val_psnr_noisy: float = float("nan")
