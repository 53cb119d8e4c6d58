"""Architectures: parameter counts, shapes, receptive fields, MACs, and the Denoiser algebra."""

import pytest
import torch
from torch import nn

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.models import (
    ARCHITECTURES,
    Denoiser,
    build_model,
    count_macs,
    count_parameters,
    make_denoiser,
)


def test_eckert_resnet_parameter_count():
    """Eckert et al. 2019 say "1.700.000 trainable parameters". By hand (all convs with bias):

    head conv 1->64 3x3:          64*9 + 64                        =       640
    one residual block:  3 x (conv 64->64 3x3: 64*64*9 + 64 = 36,928; BN: 2*64 = 128)
                         = 3 * 37,056 = 111,168; + 1x1 skip 64*64 + 64 = 4,160   = 115,328
    15 blocks:                                                     = 1,729,920
    tail conv 64->1 3x3:          64*9 + 1                         =       577
    total                                                          = 1,731,137
    """
    assert count_parameters(build_model("eckert-resnet")) == 1_731_137


def test_other_parameter_counts():
    """DnCNN-17: 640 + 15 * (64*64*9 + 128) + 64*9 = 556,096 (bias-free middle/last convs).

    CAE: 384 + 3*9,312 (conv 32->32 + BN) + 18,624 + 74,112 (convs to 64, 128) + 73,920 (deconv
    128->64 + BN) + 37,056 + 18,528 + 9,312 + 4,656 (decoder 64, 32, 32, 16) + 145 = 264,673.

    U-Net 16-32-64: double convs 2,480 + 13,888 + 55,424, transposed 2x2 convs 8,224 + 2,064,
    decoder double convs 27,712 + 6,944, 1x1 out 17 = 116,753.
    """
    assert count_parameters(build_model("dncnn")) == 556_096
    assert count_parameters(build_model("cae")) == 264_673
    assert count_parameters(build_model("unet")) == 116_753


def test_macs_per_pixel():
    """Conv MACs per pixel. eckert: 576 + 15 * (3*36,864 + 4,096) + 576 = 1,721,472.

    U-Net: full-res 2,448 + 6,912 (enc/dec) + 512 (transposed) + 16; half-res (13,824 + 27,648
    + 2,048)/4; quarter-res 55,296/16 -> 24,224, i.e. 1.4 % of eckert-resnet.
    """
    assert count_macs(build_model("eckert-resnet"), (1, 1, 8, 8)) == 1_721_472 * 64
    assert count_macs(build_model("unet"), (1, 1, 16, 16)) == 24_224 * 256
    assert count_macs(build_model("dncnn"), (1, 1, 8, 8)) == (576 + 15 * 36_864 + 576) * 64


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_any_size_maps_to_same_shape(name):
    torch.manual_seed(0)
    kwargs = {"blocks": 2} if name == "eckert-resnet" else {}
    net = build_model(name, **kwargs).eval()
    for h, w in [(13, 21), (1, 7), (6, 3)]:
        with torch.no_grad():
            assert net(torch.randn(2, 1, h, w)).shape == (2, 1, h, w)


@pytest.mark.parametrize("name,kwargs", [("unet", {}), ("cae", {}), ("dncnn", {"depth": 6}),
                                         ("eckert-resnet", {"blocks": 3}),
                                         ("unet", {"base": 4, "unshuffle": 2})])
def test_receptive_radius_bounds_the_gradient_support(name, kwargs):
    # Tiling relies on receptive_radius: context >= radius makes tiles equal the whole image.
    torch.manual_seed(0)
    net = build_model(name, **kwargs).eval()
    size = 2 * net.receptive_radius + 21
    c = size // 2
    x = torch.randn(1, 1, size, size, requires_grad=True)
    net(x)[0, 0, c, c].backward()
    support = (x.grad[0, 0] != 0).nonzero()
    reach = int((support - c).abs().max())
    assert reach <= net.receptive_radius
    # and is not a wild over-estimate (how much it over-estimates depends on where the pixel
    # falls on the pooling grid, in folded pixels when the U-Net unshuffles)
    assert reach >= net.receptive_radius - 6 * getattr(net, "unshuffle", 1)


def test_unshuffled_unet_folds_pixels_into_channels():
    net = build_model("unet", base=4, unshuffle=2).eval()
    assert net.alignment == 8 and net.inc[0].in_channels == 4 and net.out.out_channels == 4
    for h, w in [(13, 21), (1, 7)]:
        with torch.no_grad():
            assert net(torch.randn(2, 1, h, w)).shape == (2, 1, h, w)
    # Same MACs per pixel as the plain U-Net of the same widths, less the first and last layers'
    # reduced resolution: every layer runs at a quarter of the pixels.
    plain = build_model("unet", base=4)
    folded_macs = count_macs(net, (1, 1, 32, 32))
    inner = count_macs(plain, (1, 1, 16, 16)) - (16 * 16) * (9 * 4 + 4)  # plain 1-channel in/out
    assert folded_macs == inner + (16 * 16) * (9 * 4 * 4 + 4 * 4)
    with pytest.raises(MammoDenoiseError, match="unshuffle must be >= 1"):
        build_model("unet", unshuffle=0)


def test_context_branch_widens_the_view_and_starts_as_the_plain_unet():
    torch.manual_seed(0)
    plain = build_model("unet", base=4).eval()
    grown = build_model("unet", base=4, context=2).eval()
    assert (grown.alignment, grown.receptive_radius) == (16, 122)  # a depth-5 U-Net's
    missing, unexpected = grown.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("ctx_") for k in missing)
    x = torch.randn(2, 1, 48, 80)  # a multiple of both alignments: both pad alike (not at all)
    with torch.no_grad():
        torch.testing.assert_close(grown(x), plain(x), rtol=0, atol=0)
    # With a live branch (its 1x1 output starts at zero) an output pixel sees ~122 px, not 26.
    with torch.no_grad():
        grown.ctx_out.weight.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(1))
    size = 2 * grown.receptive_radius + 21
    c = size // 2
    x = torch.randn(1, 1, size, size, requires_grad=True)
    grown(x)[0, 0, c, c].backward()
    reach = int(((x.grad[0, 0] != 0).nonzero() - c).abs().max())
    # (the bound is as loose as a depth-5 U-Net's: its gradient reaches ~105 of 122 px)
    assert 3 * plain.receptive_radius <= reach <= grown.receptive_radius
    with pytest.raises(MammoDenoiseError, match="context must be >= 0"):
        build_model("unet", context=-1)


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(MammoDenoiseError) as info:
        build_model("resnet-9000")
    assert str(info.value) == "unknown architecture 'resnet-9000'; known architectures: cae, dncnn, eckert-resnet, unet"


def test_make_denoiser_card_and_seed():
    a, b = make_denoiser("unet", seed=3), make_denoiser("unet", seed=3)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    card = a.card
    assert card["architecture"] == "unet" and card["residual"] is True
    assert card["parameter_count"] == 116_753 and card["input_scale"] == 10.0
    assert card["domain"] == "anscombe" and card["noise_model"] == "poisson-gaussian"
    cae = make_denoiser("cae", seed=0)
    assert (cae.residual, cae.domain, cae.input_scale, cae.alignment) == (False, "intensity", 1.0, 2)
    small = make_denoiser("unet", base=8, depth=2)
    assert small.card["arch_kwargs"] == {"base": 8, "depth": 2} and small.alignment == 2


class _Identity(nn.Module):
    alignment = 4

    def forward(self, x):
        assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0
        return x


def test_denoiser_residual_and_direct_algebra():
    y = torch.randn(2, 1, 9, 11) * 3 + 40
    shift = torch.tensor([40.0, 38.0]).view(2, 1, 1, 1)
    residual = Denoiser(_Identity(), {"residual": True, "input_scale": 10.0})
    direct = Denoiser(_Identity(), {"residual": False, "input_scale": 10.0})
    # residual: y - scale * (y - shift)/scale = shift; direct: shift + scale * (y - shift)/scale = y
    torch.testing.assert_close(residual.denoise_anscombe(y, shift), shift.expand_as(y))
    torch.testing.assert_close(direct.denoise_anscombe(y, shift), y)
    assert residual(y, 40.0).shape == y.shape
    with pytest.raises(MammoDenoiseError, match=r"expects a \(B, 1, H, W\) batch"):
        residual.denoise_anscombe(y[:, 0])
