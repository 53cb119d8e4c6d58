"""Denoising networks, one registry by name. All map ``(B, 1, H, W)`` to ``(B, 1, H, W)``.

Every network carries three class attributes that inference relies on:

- ``alignment``: the product of its pooling factors. Inputs must be a multiple of it (the
  ``Denoiser`` pads), and tile origins are placed on multiples of it so that the pooling grid of
  a tile coincides with the pooling grid of the whole image.
- ``receptive_radius``: how far (pixels) an output can see. Tiles need at least this much
  context at their inner borders for tiled output to equal whole-image output.
- ``residual``: True when the network predicts the noise map rather than the clean image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mammo_denoise.errors import MammoDenoiseError


def _pad_to_multiple(x: torch.Tensor, a: int) -> torch.Tensor:
    """Pad bottom/right up to a multiple of ``a`` so pooled sizes round-trip; callers crop back.

    Reflect where the image is large enough, else replicate. ``Denoiser`` already feeds aligned
    inputs; this keeps the bare networks usable on any patch size (e.g. in training).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % a, (-w) % a
    if not (ph or pw):
        return x
    mode = "reflect" if (ph < h and pw < w) else "replicate"
    return nn.functional.pad(x, (0, pw, 0, ph), mode=mode)


def _conv_bn_relu(cin: int, cout: int, bias: bool = True) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class EckertResBlock(nn.Module):
    """Three [conv 3x3, BN, ReLU] layers; the skip is "molded" by a 1x1 conv (seed section 2.2)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.body = nn.Sequential(*[m for _ in range(3) for m in _conv_bn_relu(channels, channels)])
        self.skip = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return self.body(x) + self.skip(x)


class EckertResNet(nn.Module):
    """Eckert et al. 2019: conv64+ReLU, 15 residual blocks, conv to 1 channel (the noise map).

    Convolutions keep their bias (the paper does not say otherwise; Keras' default), which gives
    1,731,137 trainable parameters, the paper's "1.700.000".
    """

    alignment = 1
    residual = True

    def __init__(self, channels: int = 64, blocks: int = 15):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[EckertResBlock(channels) for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, 1, 3, padding=1)
        self.receptive_radius = 2 + 3 * blocks

    def forward(self, x):
        return self.tail(self.blocks(self.head(x)))


class ConvAutoencoder(nn.Module):
    """The 12-layer convolutional autoencoder of the second seed (direct: predicts the clean image).

    Encoder: conv 32, 32, 32, max-pool 2, conv 32, 64, 128. Decoder: a stride-2 transposed conv
    to 64 channels (the "deconvolution" that restores the input size), conv 64, 32, 32, 16, and a
    final conv to 1 channel with no activation. 3x3 kernels, BN + ReLU after every layer but the
    last. Stride-1 decoder layers are plain convolutions: a stride-1 transposed conv with padding 1
    is the same operator with the same parameter count.
    """

    alignment = 2
    residual = False
    receptive_radius = 3 + 1 + 3 * 2 + 2 + 5

    def __init__(self):
        super().__init__()
        enc = [*_conv_bn_relu(1, 32), *_conv_bn_relu(32, 32), *_conv_bn_relu(32, 32),
               nn.MaxPool2d(2),
               *_conv_bn_relu(32, 32), *_conv_bn_relu(32, 64), *_conv_bn_relu(64, 128)]
        dec = [nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1),
               nn.BatchNorm2d(64), nn.ReLU(inplace=True),
               *_conv_bn_relu(64, 64), *_conv_bn_relu(64, 32), *_conv_bn_relu(32, 32),
               *_conv_bn_relu(32, 16), nn.Conv2d(16, 1, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x):
        h, w = x.shape[-2:]
        return self.decoder(self.encoder(_pad_to_multiple(x, self.alignment)))[..., :h, :w]


class DnCNN(nn.Module):
    """Zhang et al. 2017 (DnCNN-S): conv64+ReLU, (depth-2) x [conv64 (no bias), BN, ReLU], conv->1.

    Residual: predicts the noise. Bias-free middle and last convolutions as in the reference
    implementation: 556,096 parameters at depth 17.
    """

    alignment = 1
    residual = True

    def __init__(self, depth: int = 17, channels: int = 64):
        super().__init__()
        layers = [nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += _conv_bn_relu(channels, channels, bias=False)
        layers.append(nn.Conv2d(channels, 1, 3, padding=1, bias=False))
        self.body = nn.Sequential(*layers)
        self.receptive_radius = depth

    def forward(self, x):
        return self.body(x)


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, slope: float):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(slope, inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(slope, inplace=True))


class UNet(nn.Module):
    """Compact residual U-Net for CPU-first use: the fast default (predicts the noise map).

    ``base`` channels at full resolution, doubled per scale over ``depth`` scales (16-32-64 by
    default), two 3x3 convs per scale, 2x2 average pooling down (a mean does not bias noise the
    way a max does), 2x2 transposed conv up, skip concatenation, 1x1 output.

    No BatchNorm: train and eval behave the same, and nothing depends on batch statistics, so
    tiles are consistent with each other and with the whole image. Receptive field is ~26 px of
    radius at depth 3, i.e. ~50 px ~ 4 mm at 85 um pixels: large enough to see the local signal
    level, small enough that tiles need little context.

    ``unshuffle`` > 1 first folds each ``s x s`` block of pixels into ``s**2`` channels and
    unfolds the output back (pixel unshuffle/shuffle, the reversible downsampling of FFDNet:
    Zhang, Zuo & Zhang, IEEE TIP 27(9), 2018). The U-Net then runs at 1/s the resolution with
    wider layers: on a CPU, whose 16-channel full-resolution convolutions are memory-bound, s=2
    with base=32 has 4x the parameters at the same multiply-accumulates per pixel, runs a
    1024-px tile ~3x faster and a full field ~1.4x faster (its twice larger receptive radius
    needs twice the tile overlap).

    ``context`` > 0 adds that many coarser scales below the deepest one, at its width, as a
    side branch (a small U-Net of its own) whose output is added to the deepest features
    through a 1x1 convolution that starts at zero. Each scale doubles the receptive radius
    (context=2 at depth 3: 26 -> 122 px) for +44 % multiply-accumulates per pixel, most of it in
    the branch's last decoder, which runs at the deepest scale's resolution; the zero
    start means a trained network grown this way (a probe recorded in BENCHMARKS.md) computes
    exactly what it did until fine-tuning finds a use for the wider view. On the phantoms the
    default found almost none: +0.006 dB after 45 CPU-minutes (BENCHMARKS.md section 1).
    """

    residual = True

    def __init__(self, base: int = 16, depth: int = 3, slope: float = 0.1, unshuffle: int = 1,
                 context: int = 0):
        super().__init__()
        if depth < 1:
            raise MammoDenoiseError(f"unet depth must be >= 1, got {depth}")
        if unshuffle < 1:
            raise MammoDenoiseError(f"unet unshuffle must be >= 1, got {unshuffle}")
        if context < 0:
            raise MammoDenoiseError(f"unet context must be >= 0, got {context}")
        self.unshuffle = s = int(unshuffle)
        chans = [base * 2**i for i in range(depth)]
        self.inc = _DoubleConv(s * s, chans[0], slope)
        self.downs = nn.ModuleList(_DoubleConv(chans[i], chans[i + 1], slope) for i in range(depth - 1))
        self.pool = nn.AvgPool2d(2)
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth - 1)))
        self.decs = nn.ModuleList(_DoubleConv(2 * chans[i], chans[i], slope) for i in reversed(range(depth - 1)))
        self.out = nn.Conv2d(chans[0], s * s, 1)
        self.context = int(context)
        if self.context:
            c = chans[-1]
            self.ctx_downs = nn.ModuleList(_DoubleConv(c, c, slope) for _ in range(self.context))
            self.ctx_ups = nn.ModuleList(nn.ConvTranspose2d(c, c, 2, stride=2) for _ in range(self.context))
            self.ctx_decs = nn.ModuleList(_DoubleConv(2 * c, c, slope) for _ in range(self.context))
            self.ctx_out = nn.Conv2d(c, c, 1)
            nn.init.zeros_(self.ctx_out.weight)
            nn.init.zeros_(self.ctx_out.bias)
        scales = depth + self.context
        self.alignment = s * 2 ** (scales - 1)
        # Encoder: 2 convs per scale plus the pooling step; decoder mirrors it; the transposed
        # convs add one coarse pixel each. The context branch counts as further scales.
        r = 2
        for i in range(1, scales):
            r += 2 ** (i - 1) + 2 * 2**i
        for i in reversed(range(scales - 1)):
            r += 2 ** i + 2 * 2**i
        # In folded pixels; a folded pixel spans s, and its block s - 1 more.
        self.receptive_radius = r * s + s - 1

    def forward(self, x):
        h, w = x.shape[-2:]
        skips = []
        x = _pad_to_multiple(x, self.alignment)
        if self.unshuffle > 1:
            x = nn.functional.pixel_unshuffle(x, self.unshuffle)
        x = self.inc(x)
        for down in self.downs:
            skips.append(x)
            x = down(self.pool(x))
        if self.context:
            x = x + self.ctx_out(self._context(x))
        for up, dec in zip(self.ups, self.decs):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        x = self.out(x)
        if self.unshuffle > 1:
            x = nn.functional.pixel_shuffle(x, self.unshuffle)
        return x[..., :h, :w]

    def _context(self, x):
        skips = []
        for down in self.ctx_downs:
            skips.append(x)
            x = down(self.pool(x))
        for up, dec in zip(self.ctx_ups, self.ctx_decs):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return x


# name -> (constructor, default domain). Anscombe-domain models see (y - median) / input_scale.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "eckert-resnet": EckertResNet,
    "dncnn": DnCNN,
    "cae": ConvAutoencoder,
}
MODEL_REGISTRY = ARCHITECTURES

# The second seed trains on images linearly scaled to [0, 1]; every other network works on the
# generalized-Anscombe image.
DEFAULT_DOMAIN = {"unet": "anscombe", "eckert-resnet": "anscombe", "dncnn": "anscombe", "cae": "intensity"}


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate the architecture ``name`` (randomly initialised)."""
    try:
        cls = ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise MammoDenoiseError(f"unknown architecture {name!r}; known architectures: {known}") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise MammoDenoiseError(f"bad arguments for architecture {name!r}: {exc}") from None


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, shape: tuple[int, ...] = (1, 1, 512, 512)) -> int:
    """Multiply-accumulates of the convolutions (and transposed convolutions) for one forward pass.

    Counts only conv layers, which dominate: BN, activations, pooling and concatenations are
    a few operations per element and are left out. Runs one forward pass on a zero tensor of
    ``shape`` on the model's device (use a small shape; MACs scale with H*W).
    """
    total = 0

    def hook(mod, inputs, output):
        nonlocal total
        if isinstance(mod, nn.ConvTranspose2d):
            # Every input pixel is multiplied into a full kernel footprint.
            x = inputs[0]
            kh, kw = mod.kernel_size
            total += x.numel() // x.shape[1] * mod.in_channels * mod.out_channels // mod.groups * kh * kw
        elif isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += output.numel() * (mod.in_channels // mod.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        with torch.inference_mode():
            model(torch.zeros(shape, dtype=p.dtype, device=p.device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)
