"""A network plus its model card: the unit that inference and training share."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mammo_denoise.errors import MammoDenoiseError

#: Version of the model-card layout written by ``make_denoiser`` / ``save_model``.
CARD_VERSION = 1

#: Network input units per GAT unit in the Anscombe domain. After the transform the noise has
#: unit variance, so the network sees noise of std 0.1 and signals of a few units around 0
#: (a mammogram spans ~30-150 GAT units; minus its median, /10): the range where default
#: initialisations and BatchNorm work well.
ANSCOMBE_INPUT_SCALE = 10.0


class Denoiser(nn.Module):
    """Wraps an architecture so that it maps a generalized-Anscombe image to its denoised estimate.

    ``x = (y - shift) / scale`` is what the network sees: after the transform the noise has unit
    variance, so a fixed ``scale`` (from the card) keeps the network's input noise level the same
    at every dose, and ``shift`` (one number per image, from the whole image) removes the signal
    level without making tiles disagree with the whole image.

    Residual networks (``card["residual"]``) predict the noise map, as in the first seed; direct
    ones (the autoencoder) predict the clean image.

    ``card["domain"]`` says what ``y`` is: ``"anscombe"`` (the GAT of the raw image, the default)
    or ``"intensity"`` (the image linearly scaled to [0, 1] by its global min/max, the second
    seed's recipe; callers pass ``shift=0`` and the card's ``input_scale`` is 1). The algebra here
    is the same for both.

    Inputs whose height or width is not a multiple of ``alignment`` (the product of the network's
    pooling factors) are reflect-padded and cropped back.

    ``card["input_highpass"]`` (pixels, residual networks only; absent or 0: off) subtracts a
    Gaussian low-pass of that sigma from ``x`` before the network. In the Anscombe domain the
    noise is the same at every signal level, so a network that predicts it needs no local level;
    but a mammogram's level varies ~30 times more than its noise from one patch to the next, and
    networks with BatchNorm after a ReLU stem (the seeds' ResNet, DnCNN) then normalise mostly
    that level away and learn the noise slowly. The low-pass reaches ``ceil(3 sigma)`` pixels
    further, which ``receptive_radius`` includes so tiles stay seamless.
    """

    def __init__(self, net: nn.Module, card: dict):
        super().__init__()
        self.net = net
        self.card = dict(card)

    @property
    def name(self) -> str:
        return self.card.get("name", self.card.get("architecture", "model"))

    @property
    def residual(self) -> bool:
        return bool(self.card.get("residual", True))

    @property
    def input_scale(self) -> float:
        return float(self.card.get("input_scale", 1.0))

    @property
    def domain(self) -> str:
        return str(self.card.get("domain", "anscombe"))

    @property
    def alignment(self) -> int:
        return int(getattr(self.net, "alignment", 1))

    @property
    def highpass_sigma(self) -> float:
        return float(self.card.get("input_highpass") or 0.0)

    @property
    def trained_noise(self):
        """The correlated detector noise this model was fine-tuned for (issue #25), a
        ``physics.correlation.NoiseCorrelation`` in the GAT domain of the noise parameters its
        training images had (fitted, as ``denoise`` fits them, unless given), from the card's
        ``training.data.real.noise_used``; None when the card records
        none, white noise or something unreadable: the safeguard then expects white unit noise,
        as for the shipped models."""
        from mammo_denoise.physics.correlation import NoiseCorrelation

        try:
            used = self.card["training"]["data"]["real"]["noise_used"]
            rho_x = float(used["neighbour_correlation_x"])
            rho_y = float(used["neighbour_correlation_y"])
            v = used["variance_gat"]  # per training image: the typical one judges a new image
            vs = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
            variance = float(np.median(vs)) if vs else float("nan")
        except (KeyError, TypeError, ValueError):  # a string ("white ...") or no record
            return None
        if not (np.isfinite([rho_x, rho_y, variance]).all() and variance > 0) or rho_x == rho_y == 0.0:
            return None
        return NoiseCorrelation(variance, rho_x, rho_y)

    @property
    def receptive_radius(self) -> int:
        """Upper bound of how far (pixels) one output pixel sees; 64 when the network doesn't say."""
        return int(getattr(self.net, "receptive_radius", 64)) + _lowpass_radius(self.highpass_sigma)

    @property
    def default_overlap(self) -> int:
        """Tile overlap for which tiled output equals whole-image output (see inference.py).

        Inference discards ``3/8`` of the overlap at each inner tile border as context and
        cross-fades the middle quarter, so the context must cover the receptive radius.
        """
        a = self.alignment
        return a * math.ceil(math.ceil(self.receptive_radius * 8 / 3) / a)

    def forward(self, y: torch.Tensor, shift: float | torch.Tensor = 0.0) -> torch.Tensor:
        return self.denoise_anscombe(y, shift)

    def denoise_anscombe(self, y: torch.Tensor, shift: float | torch.Tensor = 0.0, net=None) -> torch.Tensor:
        """Denoise a batch ``(B, 1, H, W)`` in the generalized-Anscombe domain.

        ``shift`` is a number or a tensor broadcastable to ``y`` (e.g. ``(B, 1, 1, 1)`` for one
        shift per image). Under autocast the network may run in half precision; its output is
        cast back to ``y``'s dtype so the residual subtraction keeps full precision.
        ``net`` runs the network instead of ``self.net`` (an engine from
        ``mammo_denoise.engines``: the same function of the aligned input).
        """
        if y.ndim != 4 or y.shape[1] != 1:
            raise MammoDenoiseError(f"Denoiser expects a (B, 1, H, W) batch, got shape {tuple(y.shape)}")
        scale = self.input_scale
        x = (y - shift) / scale
        if self.highpass_sigma > 0:
            x = x - gaussian_lowpass(x, self.highpass_sigma)
        h, w = x.shape[-2:]
        a = self.alignment
        pad_h, pad_w = (-h) % a, (-w) % a
        if pad_h or pad_w:
            mode = "reflect" if (pad_h < h and pad_w < w) else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        out = (self.net if net is None else net)(x)[..., :h, :w].to(y.dtype)
        if self.residual:
            return y - scale * out
        return shift + scale * out


def _lowpass_radius(sigma: float) -> int:
    return math.ceil(3.0 * sigma) if sigma > 0 else 0


def gaussian_lowpass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a ``(B, 1, H, W)`` batch, kernel radius ``ceil(3 sigma)``,
    reflected at the borders (replicated where the input is too small to reflect)."""
    r = _lowpass_radius(sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(device=x.device, dtype=x.dtype)
    h, w = x.shape[-2:]
    mode = "reflect" if r < h and r < w else "replicate"
    x = F.pad(x, (r, r, r, r), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))


def make_denoiser(architecture: str, *, name: str | None = None, domain: str | None = None,
                  input_scale: float | None = None, input_highpass: float = 0.0, seed: int | None = None,
                  **arch_kwargs) -> Denoiser:
    """A randomly initialised ``Denoiser`` for ``architecture`` with a default model card.

    ``domain`` defaults to ``"anscombe"`` (``"intensity"`` for ``cae``, the second seed's recipe);
    ``input_scale`` to 10 in the Anscombe domain and 1 in the intensity domain;
    ``input_highpass`` (pixels, residual networks) see ``Denoiser``. ``seed`` makes the
    initialisation reproducible without touching the global torch RNG.
    """
    from mammo_denoise.models.architectures import DEFAULT_DOMAIN, build_model, count_parameters

    domain = domain or DEFAULT_DOMAIN.get(architecture, "anscombe")
    if domain not in ("anscombe", "intensity"):
        raise MammoDenoiseError(f"unknown domain {domain!r}; use 'anscombe' or 'intensity'")
    if input_scale is None:
        input_scale = ANSCOMBE_INPUT_SCALE if domain == "anscombe" else 1.0
    if not (math.isfinite(input_scale) and input_scale > 0):
        raise MammoDenoiseError(f"input_scale must be a positive number, got {input_scale!r}")
    if not (math.isfinite(input_highpass) and input_highpass >= 0):
        raise MammoDenoiseError(f"input_highpass must be a number of pixels >= 0, got {input_highpass!r}")
    if seed is None:
        net = build_model(architecture, **arch_kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_model(architecture, **arch_kwargs)
    card = {
        "name": name or architecture,
        "architecture": architecture,
        "arch_kwargs": dict(arch_kwargs),
        "parameter_count": count_parameters(net),
        "residual": bool(getattr(net, "residual", True)),
        "input_scale": float(input_scale),
        "domain": domain,
        "noise_model": "poisson-gaussian" if domain == "anscombe" else "none",
        "dose_range": None,
        "training": {},
        "metrics": {},
        "version": CARD_VERSION,
    }
    if input_highpass > 0:
        if not card["residual"]:
            raise MammoDenoiseError(f"input_highpass needs a network that predicts the noise; {architecture!r} "
                                    "predicts the clean image")
        card["input_highpass"] = float(input_highpass)
    return Denoiser(net, card)
