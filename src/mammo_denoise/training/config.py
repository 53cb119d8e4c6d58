"""What a training run is asked to do, checked before any work starts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.physics.params import NoiseParams

NOISE_MODELS = ("poisson-gaussian", "gaussian-saltpepper")
LOSSES = ("mse+ssim", "mse")
DEFAULT_LOSS = "mse+ssim"  # the first seed's
DEFAULT_PHANTOMS = 16
LR_SCHEDULES = ("constant", "cosine")
DOSE_DISTRIBUTIONS = ("uniform", "log-uniform")
#: What real (noisy) images are trained against (noise-free phantoms and film anatomy are always
#: trained against their truth). "auto": "supervised" when every source is noise-free, else
#: "noisier2noise". See TrainConfig.
OBJECTIVES = ("auto", "supervised", "noisier2noise", "seed")
NOISE_CORRELATIONS = ("measured", "white")
#: Highest dose the noisier2noise objective trains at: its corrected target's noise variance is
#: d / (1 - d) of the input's (1 at d = 0.5, 4 at 0.8), which slows learning without biasing it.
N2N_MAX_DOSE = 0.5

# The second seed (convolutional autoencoder, MIAS): Gaussian sigma on a 0-255 image and
# salt-and-pepper "signal-to-noise ratios" 0.99..0.93, i.e. densities 1 - SNR.
SEED_GS_SIGMAS = (40.0, 50.0, 60.0, 70.0)
SEED_GS_DENSITIES = (0.01, 0.03, 0.05, 0.07)


def _err(message: str):
    raise MammoDenoiseError(f"training configuration: {message}")


@dataclass
class TrainConfig:
    """A training (or fine-tuning) run.

    Network: ``architecture`` (with ``arch_kwargs``) for a fresh one, "unet" when None; with
    ``init`` the model's own, so a different one given is an error rather than ignored.

    Data: ``phantoms`` generated phantoms (``None``: 16 when no ``paths``/``images`` are given,
    else none), ``paths`` of full-dose FOR PROCESSING DICOM files or folders (the full-dose
    image is the reference, as in the first seed), and ``images``: in-memory ``(array,
    NoiseParams)`` or ``(array, NoiseParams, mask)`` tuples.

    ``detector``: the known noise parameters of the ``paths`` images (all from one detector);
    None: estimated from each image.

    ``anatomy``: a folder of digitised film mammograms (mini-MIAS ``mdbNNN.png``): real breast
    anatomy mapped to expected quanta and recorded by a simulated detector whose gain, offset,
    electronic noise, quanta range, pixel pitch and film-grain smoothing are drawn per image
    (``training.data.ANATOMY_DETECTOR``; ``physics.anatomy``). Only the "train" women of
    ``physics.anatomy.woman_split`` are trained on, the "val" women validate, the "test" women
    are never read. With phantoms or other images beside them, ``anatomy_fraction`` of the
    patches come from the anatomy.

    Dose: a fixed fraction ``dose`` (0.2 = the first seed's 80 % reduction) or ``dose_range``
    ``(a, b)`` drawn per patch (overrides ``dose``), uniformly or, with ``dose_distribution``
    "log-uniform", evenly on a log scale (as many patches at 5-10 % as at 50-100 %).

    ``batch_size`` is per process (under DDP the global batch is ``batch_size * world_size``).
    ``patience`` counts epochs without a lower validation loss (``None``: never stop early).
    ``calc_weight`` > 0 counts every pixel of a phantom's microcalcifications (their known
    disks, one pixel wider for the detector blur) ``1 + calc_weight`` times in the loss,
    training and validation alike. The plain MSE optimum shrinks faint calcifications toward
    the background; the weight trades a little fidelity elsewhere for keeping their contrast.
    Images without known calcifications (DICOM files, in-memory images) are unaffected.

    ``input_highpass`` (pixels, fresh residual networks; 0: off) makes the network see its input
    minus a Gaussian low-pass of that sigma (``models.Denoiser``): for the BatchNorm networks of
    the seeds, which otherwise spend their first thousands of steps on the signal level. A
    fine-tuned model (``init``) keeps its own setting.

    Patches: most are centred in the breast; ``edge_fraction`` of them anywhere in the image
    (background, skin line) and ``boundary_fraction`` on the edge of the exposed field (the
    collimator shadow), the sharpest step in a detector image, which uniform draws almost
    never put a convex corner of into a patch.

    ``loss``: "mse+ssim" (the first seed's MSE + 10 (1 - SSIM)) or "mse". Left out, ``loss`` and
    ``calc_weight`` of a fine-tuned model are those its card says it was trained with
    (fine-tuning an MSE-trained model on MSE + SSIM would change what it does, not refine it); a
    fresh one gets the seed's loss and no calcification weight.

    ``clip_grad_norm`` caps the global L2 norm of each step's gradient (``None``: never). In
    the Anscombe domain the loss is in units of the unit noise variance, so a trained or
    training network's gradient norm is of order 1 (the default U-Net: a median of ~1, a
    largest of ~2.5 per 50 steps when fine-tuned; ~60 in the first steps of a fresh one).
    A rare batch can give a gradient a hundred times that, and one such step moves Adam's
    moment estimates far enough to make a deep network without normalisation diverge (a
    depth-5 U-Net at lr 1e-3 went from loss 1 to 1e10 in its second epoch; clipped at 10 it
    trained). Clipping lets such steps through scaled down, as VDSR did for high learning
    rates (Kim, Lee & Lee, CVPR 2016); steps below the cap are left bit for bit as they are.

    ``objective``: what the real images (``paths``, ``images``: each one noisy full-dose
    acquisition, no clean truth) are trained against (PHYSICS.md section 7; noise-free phantoms
    and film anatomy are always trained against their truth):

    - "noisier2noise" (default for real images): input the dose-``d`` image simulated from the
      full-dose one, target that full-dose image scaled to dose ``d`` and corrected per pixel,
      ``t' = (t - rho y) / (1 - rho)`` with ``rho`` the share of the input's noise variance that
      the target carries (``d`` without electronic noise). ``E[t' | y] = E[s | y]``, so the MSE
      on ``t'`` trains toward the clean signal and, on held-out images, equals the true MSE
      plus a constant that does not depend on the model (Moran et al., CVPR 2020). Needs the MSE
      loss (forced when left out) and doses up to ``N2N_MAX_DOSE`` (a wider range is cut there,
      with a note). The added noise has the detector's own neighbour correlation, measured from
      the images (``noise_correlation`` "measured"; "white" assumes none).
    - "seed": the first seed's protocol (target = the full-dose image scaled to dose d): the
      network learns to keep a fraction d of the input's noise variance.
    - "supervised": noise-free sources only (phantoms, film anatomy).
    - "auto" (default): "supervised" when every source is noise-free, else "noisier2noise".

    A fine-tune (``init``) is validated before its first epoch too, on the same patches: only
    weights that beat the model it starts from are saved; if none do, ``train`` raises
    ``NotImproved`` and writes nothing. ``require_improvement=False`` (benchmarks that measure
    a protocol's outcome, such as the seed's) writes the best epoch all the same; the card
    then says whether it beat the start.

    ``out`` defaults to ``user_model_dir()/<name>.safetensors`` (the model's name is its file
    name, so ``name`` only matters without ``out``) and ``checkpoint`` to
    ``<out without suffix>.ckpt`` (safetensors format, no pickle).
    """

    architecture: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    init: str | Path | None = None
    phantoms: int | None = None
    phantom_shape: tuple[int, int] = (512, 512)
    paths: list[str | Path] = field(default_factory=list)
    images: list[tuple] = field(default_factory=list)
    detector: NoiseParams | None = None
    anatomy: str | Path | None = None
    anatomy_fraction: float = 0.7
    dose: float = 0.2
    dose_range: tuple[float, float] | None = None
    dose_distribution: str = "uniform"
    noise_model: str = "poisson-gaussian"
    gs_sigmas: tuple[float, ...] = SEED_GS_SIGMAS
    gs_densities: tuple[float, ...] = SEED_GS_DENSITIES
    patch: int = 64
    batch_size: int = 32
    epochs: int = 50
    iters_per_epoch: int = 200
    lr: float = 1e-4
    lr_schedule: str = "constant"
    loss: str | None = None
    calc_weight: float | None = None
    input_highpass: float = 0.0
    val_fraction: float = 0.2
    val_patches: int = 64
    edge_fraction: float = 0.1
    boundary_fraction: float = 0.05
    patience: int | None = 10
    time_budget_s: float | None = None
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    out: str | Path | None = None
    name: str | None = None
    checkpoint: str | Path | None = None
    resume: bool = False
    amp: bool = False
    clip_grad_norm: float | None = 10.0
    log_every: int = 10
    command: str | None = None
    objective: str = "auto"
    noise_correlation: str = "measured"
    require_improvement: bool = True

    def __post_init__(self):
        if self.architecture is not None and (not isinstance(self.architecture, str) or not self.architecture):
            _err(f"architecture must be a model architecture name, got {self.architecture!r}")
        if not isinstance(self.arch_kwargs, dict):
            _err("arch_kwargs must be a dict")
        self.paths = [Path(p) for p in ([self.paths] if isinstance(self.paths, (str, Path))
                                        else list(self.paths))]
        self.images = list(self.images)
        for i, item in enumerate(self.images):
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                _err(f"images[{i}] must be (array, NoiseParams) or (array, NoiseParams, mask)")
            arr = np.asarray(item[0])
            if arr.ndim != 2:
                _err(f"images[{i}] must be a 2-D image, got shape {arr.shape}")
            if not isinstance(item[1], NoiseParams):
                _err(f"images[{i}][1] must be NoiseParams, got {type(item[1]).__name__}")
            if len(item) == 3 and np.asarray(item[2]).shape != arr.shape:
                _err(f"images[{i}] mask shape differs from the image shape {arr.shape}")
        if self.detector is not None and not isinstance(self.detector, NoiseParams):
            _err(f"detector must be NoiseParams, got {type(self.detector).__name__}")
        if self.anatomy is not None:
            self.anatomy = Path(self.anatomy)
            if not self.anatomy.is_dir():
                _err(f"anatomy must be a folder of film mammograms, got {str(self.anatomy)!r}")
        if not 0.0 < float(self.anatomy_fraction) <= 1.0:
            _err(f"anatomy_fraction must be in (0, 1], got {self.anatomy_fraction!r}")
        self.anatomy_fraction = float(self.anatomy_fraction)
        if self.dose_distribution not in DOSE_DISTRIBUTIONS:
            _err(f"dose_distribution must be one of {', '.join(DOSE_DISTRIBUTIONS)}, "
                 f"got {self.dose_distribution!r}")
        if self.phantoms is None:
            self.phantoms = 0 if (self.paths or self.images or self.anatomy) else DEFAULT_PHANTOMS
        if int(self.phantoms) != self.phantoms or self.phantoms < 0:
            _err(f"phantoms must be a non-negative integer, got {self.phantoms!r}")
        self.phantoms = int(self.phantoms)
        if not (self.phantoms or self.paths or self.images or self.anatomy):
            _err("no training data: give phantoms > 0, paths, images or anatomy")
        self.phantom_shape = tuple(int(s) for s in self.phantom_shape)
        if len(self.phantom_shape) != 2:
            _err(f"phantom_shape must be (height, width), got {self.phantom_shape}")
        if self.noise_model not in NOISE_MODELS:
            _err(f"noise_model must be one of {', '.join(NOISE_MODELS)}, got {self.noise_model!r}")
        if not 0.0 < float(self.dose) <= 1.0:
            _err(f"dose must be a fraction in (0, 1], got {self.dose!r}")
        self.dose = float(self.dose)
        if self.dose_range is not None:
            a, b = (float(v) for v in self.dose_range)
            if not 0.0 < a <= b <= 1.0:
                _err(f"dose_range must satisfy 0 < a <= b <= 1, got {self.dose_range!r}")
            self.dose_range = (a, b)
        if not self.gs_sigmas or min(self.gs_sigmas) < 0:
            _err("gs_sigmas must be non-negative Gaussian standard deviations (0-255 scale)")
        if not self.gs_densities or not all(0.0 <= d < 1.0 for d in self.gs_densities):
            _err("gs_densities must be salt-and-pepper fractions in [0, 1)")
        self.gs_sigmas = tuple(float(s) for s in self.gs_sigmas)
        self.gs_densities = tuple(float(s) for s in self.gs_densities)
        for name, low in (("patch", 16), ("batch_size", 1), ("epochs", 1),
                          ("iters_per_epoch", 1), ("val_patches", 1), ("log_every", 1)):
            value = getattr(self, name)
            if int(value) != value or value < low:
                _err(f"{name} must be an integer >= {low}, got {value!r}")
            setattr(self, name, int(value))
        if self.phantoms and min(self.phantom_shape) < self.patch:
            _err(f"phantom_shape {self.phantom_shape} is smaller than the patch ({self.patch})")
        if not float(self.lr) > 0:
            _err(f"lr must be positive, got {self.lr!r}")
        self.lr = float(self.lr)
        if self.time_budget_s is not None and not float(self.time_budget_s) > 0:
            _err(f"time_budget_s must be None or positive, got {self.time_budget_s!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            _err(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        loss_given = self.loss
        self._inherit_objective()
        self._resolve_objective(loss_given)
        if self.loss not in LOSSES:
            _err(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not float(self.calc_weight) >= 0.0:
            _err(f"calc_weight must be >= 0, got {self.calc_weight!r}")
        self.calc_weight = float(self.calc_weight)
        if not float(self.input_highpass) >= 0.0:
            _err(f"input_highpass must be a number of pixels >= 0, got {self.input_highpass!r}")
        self.input_highpass = float(self.input_highpass)
        if not 0.0 <= float(self.val_fraction) < 1.0:
            _err(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        for name in ("edge_fraction", "boundary_fraction"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                _err(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.edge_fraction + self.boundary_fraction > 1.0:
            _err("edge_fraction + boundary_fraction must not exceed 1, got "
                 f"{self.edge_fraction!r} + {self.boundary_fraction!r}")
        if self.patience is not None and (int(self.patience) != self.patience or self.patience < 1):
            _err(f"patience must be None or an integer >= 1, got {self.patience!r}")
        if int(self.seed) != self.seed or self.seed < 0:
            _err(f"seed must be a non-negative integer, got {self.seed!r}")
        self.seed = int(self.seed)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")
        ):
            _err(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if int(self.num_workers) != self.num_workers or self.num_workers < 0:
            _err(f"num_workers must be an integer >= 0, got {self.num_workers!r}")
        if self.clip_grad_norm is not None:
            if isinstance(self.clip_grad_norm, bool) or not (
                    isinstance(self.clip_grad_norm, (int, float)) and math.isfinite(self.clip_grad_norm)
                    and self.clip_grad_norm > 0):
                _err(f"clip_grad_norm must be None or a positive number, got {self.clip_grad_norm!r}")
            self.clip_grad_norm = float(self.clip_grad_norm)
        if self.require_improvement not in (True, False):
            _err(f"require_improvement must be True or False, got {self.require_improvement!r}")
        if self.amp not in (True, False):
            _err(f"amp must be True (fp16 autocast on CUDA) or False (float32), got {self.amp!r}")
        for name in ("out", "checkpoint"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        if self.out is not None and self.out.suffix != ".safetensors":
            _err(f"out must be a .safetensors path, got {self.out}")

    def _inherit_objective(self) -> None:
        """Fill a left-out ``loss`` and ``calc_weight`` from the ``init`` model's card, else the defaults."""
        training = {}
        if self.init is not None and (self.loss is None or self.calc_weight is None):
            from mammo_denoise.models import read_card

            training = read_card(self.init).get("training") or {}
        if self.loss is None:
            self.loss = training["loss"] if training.get("loss") in LOSSES else DEFAULT_LOSS
        if self.calc_weight is None:
            self.calc_weight = float(training.get("calc_weight") or 0.0)

    def _resolve_objective(self, loss_given) -> None:
        """``objective`` "auto" made concrete from the data; the loss and doses it needs."""
        if self.objective not in OBJECTIVES:
            _err(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.noise_correlation not in NOISE_CORRELATIONS:
            _err(f"noise_correlation must be one of {', '.join(NOISE_CORRELATIONS)}, "
                 f"got {self.noise_correlation!r}")
        real = bool(self.paths or self.images)
        self.objective_auto = self.objective == "auto"
        if self.noise_model != "poisson-gaussian":
            if self.objective not in ("auto", "supervised"):
                _err(f"objective {self.objective!r} needs the poisson-gaussian noise model (the "
                     "second seed's Gaussian + salt-and-pepper pairs are supervised)")
            self.objective = "supervised"
            return
        if self.objective == "auto":
            self.objective = "noisier2noise" if real else "supervised"
        if self.objective == "supervised" and real:
            _err("objective 'supervised' needs the truth, and real images have none: use "
                 "'noisier2noise' (the default for real images) or the first seed's 'seed'")
        if self.objective in ("noisier2noise", "seed") and not real:
            _err(f"objective {self.objective!r} learns from real noisy images: give paths or "
                 "images (phantoms and film anatomy are trained against their truth)")
        if self.objective != "noisier2noise":
            return
        if loss_given not in (None, "mse"):
            _err(f"objective 'noisier2noise' is unbiased for the MSE loss only, got loss {loss_given!r}")
        self.loss = "mse"
        lo, hi = self.dose_range if self.dose_range is not None else (self.dose, self.dose)
        if lo > N2N_MAX_DOSE:
            _err(f"objective 'noisier2noise' trains at doses up to {N2N_MAX_DOSE:g} (its corrected "
                 f"target's noise grows like d/(1-d)); got dose {lo:g}")
        if hi > N2N_MAX_DOSE:
            import warnings

            warnings.warn(f"noisier2noise trains at doses up to {N2N_MAX_DOSE:g} (its corrected "
                          f"target's noise grows like d/(1-d)): dose range {lo:g}-{hi:g} cut to "
                          f"{lo:g}-{N2N_MAX_DOSE:g}", UserWarning, stacklevel=3)
            self.dose_range = (lo, N2N_MAX_DOSE)

    # -- derived values -------------------------------------------------------------------
    @property
    def doses(self) -> tuple[float, float]:
        """The (low, high) dose fractions drawn from; equal for a fixed dose."""
        return self.dose_range if self.dose_range is not None else (self.dose, self.dose)

    @property
    def fresh_architecture(self) -> str:
        """The architecture a run without ``init`` builds."""
        return self.architecture or "unet"

    def resolved_name(self) -> str:
        # save_model names a model after its file, so an explicit ``out`` decides the name.
        if self.out is not None:
            return self.out.stem
        if self.name:
            return self.name
        if self.init is not None:
            return f"{Path(str(self.init)).stem}-finetuned"
        return f"{self.fresh_architecture}-custom"

    def resolved_out(self) -> Path:
        if self.out is not None:
            return self.out
        from mammo_denoise.models import user_model_dir

        return Path(user_model_dir()) / f"{self.resolved_name()}.safetensors"

    def resolved_checkpoint(self) -> Path:
        if self.checkpoint is not None:
            return self.checkpoint
        # Not *.safetensors, so that a model directory listing never mistakes it for a model.
        return self.resolved_out().with_suffix(".ckpt")

    def fingerprint(self) -> dict:
        """Settings a resumed run must share with the checkpoint it continues (epochs may grow)."""
        return {
            "architecture": self.fresh_architecture,  # older checkpoints say "unet" for fine-tuning too
            "arch_kwargs": self.arch_kwargs,
            "init": None if self.init is None else str(self.init),
            "phantoms": self.phantoms,
            "phantom_shape": list(self.phantom_shape),
            "paths": [str(p) for p in self.paths],
            "images": [list(np.asarray(i[0]).shape) for i in self.images],
            "doses": list(self.doses),
            "noise_model": self.noise_model,
            "patch": self.patch,
            "batch_size": self.batch_size,
            "iters_per_epoch": self.iters_per_epoch,
            "lr": self.lr,
            "lr_schedule": self.lr_schedule,
            "loss": self.loss,
            "seed": self.seed,
            # Added later: present only when set, so earlier checkpoints still resume.
            **({"calc_weight": self.calc_weight} if self.calc_weight else {}),
            **({"boundary_fraction": self.boundary_fraction} if self.boundary_fraction else {}),
            **({"input_highpass": self.input_highpass} if self.input_highpass else {}),
            **({"anatomy": str(self.anatomy), "anatomy_fraction": self.anatomy_fraction}
               if self.anatomy else {}),
            **({"dose_distribution": self.dose_distribution}
               if self.dose_distribution != "uniform" else {}),
            **({"detector": [self.detector.offset, self.detector.gain, self.detector.electronic_sigma]}
               if self.detector else {}),
            **({"objective": self.objective} if self.objective != "supervised" else {}),
            **({"noise_correlation": self.noise_correlation}
               if self.objective == "noisier2noise" else {}),
        }


def learning_rate(config: TrainConfig, epoch: int, iteration: int, budget_spent: float = 0.0) -> float:
    """Learning rate at 1-based ``epoch`` and ``iteration``.

    "cosine" decays from ``lr`` to ``lr / 100`` over the whole run (Loshchilov & Hutter,
    SGDR, ICLR 2017, without restarts). The run ends at the last epoch or, with a time budget,
    when ``budget_spent`` (the fraction of ``time_budget_s`` used) reaches 1, whichever comes
    first, so the decay follows the larger of the two fractions: a budgeted run anneals within
    its budget. A pure function of its arguments, so resuming needs no scheduler state.
    """
    if config.lr_schedule == "constant":
        return config.lr
    total = config.epochs * config.iters_per_epoch
    step = (epoch - 1) * config.iters_per_epoch + (iteration - 1)
    progress = step / total
    if config.time_budget_s is not None:
        progress = max(progress, budget_spent)
    floor = config.lr / 100.0
    return floor + 0.5 * (config.lr - floor) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


_OBJECTIVE_WORDS = {"noisier2noise": "noisier2noise-corrected targets (no clean image)",
                    "seed": "the seed's full-dose targets"}


def describe(config: TrainConfig) -> str:
    """One-line summary of a run, for logs and the widget's status line."""
    data = []
    if config.phantoms:
        data.append(f"{config.phantoms} phantoms {config.phantom_shape[0]}x{config.phantom_shape[1]}")
    if config.paths:
        data.append(f"{len(config.paths)} path{'s' if len(config.paths) > 1 else ''}")
    if config.images:
        data.append(f"{len(config.images)} in-memory image{'s' if len(config.images) > 1 else ''}")
    if config.anatomy:
        data.append(f"film anatomy from {config.anatomy.name}")
    a, b = config.doses
    dose = f"dose {a:g}" if a == b else f"dose {a:g}-{b:g}"
    if config.noise_model != "poisson-gaussian":
        dose = "seed Gaussian+salt-and-pepper noise"
    # A fine-tuned model keeps its own architecture (checked when it is loaded).
    start = f"{config.fresh_architecture} (fresh)" if config.init is None else f"{config.init} fine-tuned"
    return (
        f"{start} on {' + '.join(data)}; {dose}; "
        f"patch {config.patch} x batch {config.batch_size}; "
        f"{config.epochs} epochs x {config.iters_per_epoch} it; lr {config.lr:g}; {config.loss}"
        f"{'' if config.objective == 'supervised' else f' on {_OBJECTIVE_WORDS[config.objective]}'}"
        f"{f' (calcifications x{1 + config.calc_weight:g})' if config.calc_weight else ''}; "
        f"seed {config.seed}{'; resume' if config.resume else ''} -> {config.resolved_name()}"
    )
