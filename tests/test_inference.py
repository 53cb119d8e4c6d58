"""Tiled inference: tiles == whole image, transforms, progress/cancel, devices, errors."""

import threading

import numpy as np
import pytest
import torch
from torch import nn

from mammo_denoise.errors import Cancelled, MammoDenoiseError
from mammo_denoise.inference import _reflect_index, _Transform, denoise, field_parts, resolve_device, tile_layout
from mammo_denoise.io.meta import MammogramMeta
from mammo_denoise.models import Denoiser, make_denoiser, save_model
from mammo_denoise.physics.params import NoiseParams

PARAMS = NoiseParams(offset=100.0, gain=2.0, electronic_sigma=3.0)


def _raw(shape, seed=0, counts=(50, 400)):
    """A smooth raw image with Poisson-Gaussian noise under PARAMS."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    lam = counts[0] + (counts[1] - counts[0]) * (0.5 + 0.5 * np.sin(yy / 17.0) * np.cos(xx / 23.0))
    lam = np.broadcast_to(lam, shape)
    z = PARAMS.offset + PARAMS.gain * rng.poisson(lam) + rng.normal(0, PARAMS.electronic_sigma, shape)
    return z.astype(np.float32)


@pytest.fixture(scope="module")
def unet():
    return make_denoiser("unet", seed=0)


class _Zero(nn.Module):
    alignment = 4
    receptive_radius = 0  # tiles need no context (the default assumes 64 px)

    def forward(self, x):
        return torch.zeros_like(x)


class _Identity(nn.Module):
    receptive_radius = 0

    def forward(self, x):
        return x


def test_tiled_equals_whole_image_for_odd_sizes(unet):
    z = _raw((203, 317))
    whole = denoise(z, unet, params=PARAMS, device="cpu", tile=None)
    assert whole.dtype == np.float32 and whole.shape == z.shape
    tol = 1e-4 * float(np.ptp(whole))
    for tile, batch in [(160, 4), (130, 3)]:  # 130 is rounded down to the alignment (4)
        tiled = denoise(z, unet, params=PARAMS, device="cpu", tile=tile, batch_size=batch)
        assert np.abs(tiled - whole).max() < tol
    # a tile larger than the image is the whole-image pass
    np.testing.assert_array_equal(denoise(z, unet, params=PARAMS, device="cpu", tile=4096), whole)


def test_tiles_are_seamless_for_an_unshuffled_unet():
    net = make_denoiser("unet", seed=0, base=4, unshuffle=2)  # alignment 8, radius 53
    z = _raw((203, 317))
    whole = denoise(z, net, params=PARAMS, device="cpu", tile=None)
    tiled = denoise(z, net, params=PARAMS, device="cpu", tile=168, batch_size=3)
    assert np.abs(tiled - whole).max() < 1e-4 * float(np.ptp(whole))


def test_tiles_are_seamless_for_a_unet_with_a_context_branch():
    net = make_denoiser("unet", seed=0, base=4, context=2)  # alignment 16, radius 122
    with torch.no_grad():  # the branch starts at zero; make it act
        net.net.ctx_out.weight.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(1))
    z = _raw((403, 517))
    whole = denoise(z, net, params=PARAMS, device="cpu", tile=None)
    tiled = denoise(z, net, params=PARAMS, device="cpu", tile=448, batch_size=2)
    assert np.abs(tiled - whole).max() < 1e-4 * float(np.ptp(whole))


@pytest.fixture(scope="module")
def shipped():
    from mammo_denoise.models import load_model

    return load_model("default")


def test_any_tile_and_overlap_gives_the_one_tile_result(shipped):
    # Issue #23: overlaps other than the default's (and its multiples of 8/3) used to move the
    # image on the network's pooling grid or give it less context than the receptive radius.
    z = _raw((700, 531), seed=5)
    whole = denoise(z, shipped, params=PARAMS, device="cpu", tile=None)
    tol = 1e-4 * float(np.ptp(whole))
    for tile, overlap in [(None, 96), (256, 96), (256, 128), (512, 64), (128, 32), (256, 0),
                          (201, 13), (333, 72), (256, 200)]:
        tiled = denoise(z, shipped, params=PARAMS, device="cpu", tile=tile, overlap=overlap)
        assert np.abs(tiled - whole).max() < tol, (tile, overlap)


def test_context_does_not_depend_on_the_overlap():
    # The model fixes the context (and so where the image sits on the pooling grid); the overlap
    # only widens the cross-fade band beyond twice the context. 0: no band, a hard cut.
    for overlap in (0, 13, 54, 72, 200):
        origins, t, context, canvas = tile_layout(317, 256, overlap, 4, context=27)
        assert (context, canvas) == (27, 372)
        assert all(b - a <= t - max(overlap, 54) for a, b in zip(origins, origins[1:]))


def test_reflected_tile_indices_match_numpy_reflect_padding():
    # Tiles index the image through mirrored coordinates instead of padding a copy of it; pads
    # longer than the image (tiny images) must reflect again, as np.pad does.
    for n in (1, 2, 3, 7):
        pad = 3 * n + 2
        idx = np.arange(-pad, n + pad)
        expected = np.pad(np.arange(n), pad, mode="reflect")
        np.testing.assert_array_equal(np.arange(n)[_reflect_index(idx, n)], expected)


def test_small_images_and_layout(unet):
    for shape in [(3, 3), (1, 9), (2, 5), (9, 1)]:  # smaller than the alignment in some axis
        z = _raw(shape, seed=1)
        whole = denoise(z, unet, params=PARAMS, device="cpu", tile=None)
        tiled = denoise(z, unet, params=PARAMS, device="cpu", tile=128)
        assert whole.shape == shape and np.isfinite(whole).all()
        np.testing.assert_allclose(tiled, whole, atol=1e-4 * max(float(np.ptp(whole)), 1.0))
    origins, t, context, canvas = tile_layout(317, 128, 72, 4)
    assert (t, context, canvas) == (124, 27, 372)  # 6 tiles of 128 -> 6 of 124
    assert all(o % 4 == 0 for o in origins) and origins[0] == 0 and origins[-1] + t == canvas
    assert all(b - a <= t - 72 for a, b in zip(origins, origins[1:]))  # neighbours share >= overlap
    with pytest.raises(MammoDenoiseError, match=r"tile \(64\) must exceed overlap \(72\)"):
        denoise(_raw((150, 150)), unet, params=PARAMS, device="cpu", tile=64)


def test_identity_like_round_trip_is_nearly_unbiased():
    """A residual net that predicts no noise returns y; the exact inverse then gives back z with
    the small known bias of inverting single noisy pixels (~ +0.25 counts): < 0.5 % at >= 100."""
    zero = Denoiser(_Zero(), {"residual": True, "input_scale": 10.0, "domain": "anscombe"})
    z = _raw((64, 96), seed=2, counts=(100, 400))
    out = denoise(z, zero, params=PARAMS, device="cpu", tile=48, overlap=8)
    rel = (out.astype(np.float64) - PARAMS.offset).mean() / (z.astype(np.float64) - PARAMS.offset).mean() - 1
    assert abs(rel) < 0.005
    assert np.corrcoef(out.ravel(), z.ravel())[0, 1] > 0.999


def test_intensity_domain_scales_by_global_min_max():
    direct = Denoiser(_Identity(), {"residual": False, "input_scale": 1.0, "domain": "intensity"})
    z = _raw((33, 47), seed=3)
    np.testing.assert_allclose(denoise(z, direct, device="cpu", tile=16, overlap=4), z, rtol=1e-6)


def _collimated(shape=(150, 170), strips=(6, 5, 0, 7), seed=6):
    """_raw with collimator shadow (offset + electronic noise only) along (top, bottom, left, right)."""
    z = _raw(shape, seed=seed)
    rng = np.random.default_rng(seed + 1)
    shadow = np.zeros(shape, bool)
    t, b, left, r = strips
    shadow[:t] = True
    shadow[shape[0] - b:] = True
    shadow[:, :left] = True
    shadow[:, shape[1] - r:] = True
    z[shadow] = PARAMS.offset + rng.normal(0, PARAMS.electronic_sigma, int(shadow.sum()))
    return z


def test_field_parts_are_the_exposed_field_and_the_shadow_strips():
    z = _collimated()
    tr = _Transform(z, "anscombe", PARAMS, True)
    parts = field_parts(z, tr)
    assert parts == [(slice(6, 145), slice(0, 163)),  # the field first
                     (slice(0, 6), slice(0, 170)), (slice(145, 150), slice(0, 170)),
                     (slice(6, 145), slice(163, 170))]
    covered = np.zeros(z.shape, int)
    for r, c in parts:
        covered[r, c] += 1
    assert (covered == 1).all()  # a partition of the frame
    # No strip, a strip that is not a whole line (a tilted edge), or data without a
    # Poisson-Gaussian model: one part.
    assert field_parts(_raw((64, 64)), tr) == [(slice(0, 64), slice(0, 64))]
    tilted = _raw((64, 64))
    tilted[np.triu_indices(64, 40)] = PARAMS.offset
    assert field_parts(tilted, tr) == [(slice(0, 64), slice(0, 64))]
    assert field_parts(z, _Transform(z, "intensity", None, True)) == [(slice(0, 150), slice(0, 170))]
    # A spot view: most of the frame is shadow, the field is still found.
    spot = _collimated(strips=(50, 45, 40, 60))
    assert field_parts(spot, tr)[0] == (slice(50, 105), slice(40, 110))


def test_field_and_shadow_are_denoised_apart(unet):
    z = _collimated()
    out = denoise(z, unet, params=PARAMS, device="cpu", tile=None, safeguard=False)
    tr = _Transform(z, "anscombe", PARAMS, True)
    from mammo_denoise.inference import denoise_frame

    field = (slice(6, 145), slice(0, 163))
    alone = denoise_frame(np.ascontiguousarray(z[field]), tr, unet, torch.device("cpu"), tile=None)
    np.testing.assert_allclose(out[field], alone, rtol=0, atol=1e-4 * float(np.ptp(alone)))
    # Tiles still agree with the whole image, and progress counts the tiles of every part.
    calls = []
    tiled = denoise(z, unet, params=PARAMS, device="cpu", tile=96, batch_size=1,
                    progress=lambda d, t: calls.append((d, t)), safeguard=False)
    assert np.abs(tiled - out).max() < 1e-4 * float(np.ptp(out))
    field_tiles = len(tile_layout(139, 96, unet.default_overlap, 4)[0]) * len(tile_layout(163, 96, unet.default_overlap, 4)[0])
    assert calls[-1][0] == calls[-1][1] == len(calls) > field_tiles  # the strips' tiles count too


def test_stack_is_denoised_frame_by_frame(unet):
    z = _raw((2, 40, 52), seed=4)
    out = denoise(z, unet, params=PARAMS, device="cpu", tile=None)
    assert out.shape == z.shape
    for k in range(2):
        np.testing.assert_array_equal(out[k], denoise(z[k], unet, params=PARAMS, device="cpu", tile=None))


def test_progress_and_cancel(unet):
    z = _raw((120, 120), seed=5)
    calls = []
    denoise(z, unet, params=PARAMS, device="cpu", tile=128, batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(3, 4), (4, 4)]  # 2 x 2 tiles, progress after each batch

    stop = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        stop.set()  # the user presses "cancel" after the first batch

    with pytest.raises(Cancelled) as info:
        denoise(z, unet, params=PARAMS, device="cpu", tile=128, batch_size=3, progress=progress, cancel=stop.is_set)
    assert str(info.value) == "denoising cancelled" and seen == [3]


def test_input_errors(unet):
    z = _raw((16, 16))
    z[3, 4] = np.nan
    with pytest.raises(MammoDenoiseError) as info:
        denoise(z, unet, params=PARAMS, device="cpu")
    assert str(info.value) == "image contains NaN or infinite values; denoising needs finite pixel values"
    with pytest.raises(MammoDenoiseError, match=r"non-empty 2-D array or a \(N, H, W\) stack"):
        denoise(np.zeros(5), unet, device="cpu")
    with pytest.raises(MammoDenoiseError, match="model must be a Denoiser, a model name or a path"):
        denoise(_raw((8, 8)), model=3.5, device="cpu")


def test_nonlinear_input_warns_and_falls_back(unet):
    meta = MammogramMeta(presentation_intent="FOR PRESENTATION", pixel_intensity_relationship="LOG")
    z = _raw((96, 96), seed=6)
    with pytest.warns(UserWarning, match=r"not linear raw data \(FOR PRESENTATION or LOG\)"):
        out = denoise(z, unet, meta=meta, device="cpu")
    assert np.isfinite(out).all() and out.shape == z.shape
    flat = np.full((32, 32), 7.0, dtype=np.float32)  # no noise to fit: the Gaussian fallback
    with pytest.warns(UserWarning):
        assert np.isfinite(denoise(flat, unet, meta=meta, device="cpu")).all()


def test_devices_threads_modes_and_paths(unet, tmp_path):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(MammoDenoiseError) as info:
            resolve_device("cuda")
        assert str(info.value) == ("device 'cuda' was requested but no CUDA GPU is available "
                                   "(this torch build or machine has none); use device='auto' or 'cpu'")
    with pytest.raises(MammoDenoiseError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    threads = torch.get_num_threads()
    unet.train()
    z = _raw((40, 44), seed=7)
    ref = denoise(z, unet, params=PARAMS, device="cpu", tile=None)
    assert unet.training and torch.get_num_threads() == threads
    path = save_model(unet, tmp_path / "u")
    np.testing.assert_array_equal(denoise(z, path, params=PARAMS, device="cpu", tile=None), ref)


# ----------------------------------------------------------------------------- strength
def test_strength_keeps_its_share_of_the_noise_and_of_the_contrast():
    from mammo_denoise.inference import apply_strength

    rng = np.random.default_rng(7)
    truth = np.full((256, 256), 1000.0, np.float32)
    truth[100:104, 100:104] += 60.0  # a faint bright detail the "denoiser" below lost
    noisy = (truth + rng.normal(0.0, 20.0, truth.shape)).astype(np.float32)
    denoised = np.full_like(truth, 1000.0)
    for s in (0.0, 0.3, 0.8):
        out = apply_strength(noisy, denoised, s)
        assert out.dtype == np.float32
        flat = out[150:, 150:] - truth[150:, 150:]
        assert flat.std() == pytest.approx((1.0 - s) * 20.0, rel=0.03)
        assert abs(flat.mean()) < 0.1
        detail = out[100:104, 100:104].mean() - out[150:, 150:].mean()
        assert detail == pytest.approx((1.0 - s) * (noisy[100:104, 100:104].mean() - 1000.0), abs=0.5)
    np.testing.assert_array_equal(apply_strength(noisy, denoised, 1.0), denoised)
    np.testing.assert_array_equal(apply_strength(noisy.astype(np.uint16), denoised, 0.0),
                                  noisy.astype(np.uint16).astype(np.float32))


@pytest.mark.parametrize("strength, message", [
    (1.5, "strength must be between 0 and 1, got 1.5"),
    (float("nan"), "strength must be between 0 and 1, got nan"),
])
def test_strength_out_of_range_is_refused(strength, message):
    from mammo_denoise.inference import apply_strength

    with pytest.raises(MammoDenoiseError) as err:
        apply_strength(np.zeros((4, 4)), np.zeros((4, 4)), strength)
    assert str(err.value) == message
    with pytest.raises(MammoDenoiseError, match=r"noisy image \(4, 4\) and denoised image \(4, 5\) differ in shape"):
        apply_strength(np.zeros((4, 4)), np.zeros((4, 5)), 0.5)


# ----------------------------------------------------------------------------- high-passed input
def test_highpassed_input_is_level_free_and_tiles_stay_seamless():
    from mammo_denoise.models.denoiser import gaussian_lowpass

    den = make_denoiser("unet", seed=3, input_highpass=4.0)
    plain = make_denoiser("unet", seed=3)
    assert den.receptive_radius == plain.receptive_radius + 12
    assert den.default_overlap > plain.default_overlap
    y = torch.from_numpy(np.random.default_rng(2).normal(0.0, 1.0, (1, 1, 64, 80)).astype(np.float32))
    with torch.no_grad():
        # the network sees no signal level: a constant added to the input comes straight through
        for d, same in ((den, True), (plain, False)):
            moved = d.denoise_anscombe(y + 25.0) - 25.0
            assert torch.allclose(moved, d.denoise_anscombe(y), atol=1e-4) is same
        flat = gaussian_lowpass(torch.full((1, 1, 16, 16), 3.0), 4.0)  # borders reflected, too
        assert torch.allclose(flat, torch.full_like(flat, 3.0))
    z = _raw((203, 317))
    whole = denoise(z, den, params=PARAMS, device="cpu", tile=None)
    tiled = denoise(z, den, params=PARAMS, device="cpu", tile=128, batch_size=3)
    assert np.abs(tiled - whole).max() < 1e-4 * float(np.ptp(whole))


def test_highpassed_input_needs_a_residual_network_and_survives_saving(tmp_path):
    from mammo_denoise.models import load_model

    with pytest.raises(MammoDenoiseError, match="input_highpass needs a network that predicts the noise; 'cae'"):
        make_denoiser("cae", input_highpass=4.0)
    den = make_denoiser("dncnn", seed=0, input_highpass=2.5)
    path = save_model(den, tmp_path / "hp.safetensors")
    assert load_model(path).highpass_sigma == 2.5
    assert "input_highpass" not in make_denoiser("dncnn", seed=0).card


def test_float32_on_cuda_turns_tf32_off_only_inside_the_block():
    from mammo_denoise.inference import ieee_float32

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.enabled, cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = True
    try:
        with ieee_float32():
            assert cudnn.allow_tf32 is False and matmul.allow_tf32 is False
            assert cudnn.enabled == before[0]
        assert cudnn.allow_tf32 is True and matmul.allow_tf32 == before[2]
    finally:
        cudnn.allow_tf32 = before[1]


@pytest.mark.parametrize("device, amp, nhwc", [("cpu", False, True), ("cpu", True, True),
                                               ("cuda", False, False), ("cuda", True, True),
                                               ("mps", False, False)])
def test_channels_last_only_where_it_was_measured_faster(device, amp, nhwc):
    # CPU: 2x faster; CUDA: faster under fp16 only, 1.07-1.5x slower in IEEE float32 (H100).
    from mammo_denoise.inference import use_channels_last

    assert use_channels_last(torch.device(device), amp) is nhwc


def test_a_denoiser_handed_in_gets_the_layout_of_each_call():
    den = make_denoiser("unet", seed=0, base=4, depth=2)
    img = np.random.default_rng(0).poisson(500, (40, 48)).astype(np.float32)
    params = NoiseParams(offset=0.0, gain=1.0, electronic_sigma=1.0)
    first = denoise(img, den, params, device="cpu", tile=None)
    den.to(memory_format=torch.contiguous_format)
    again = denoise(img, den, params, device="cpu", tile=None)
    conv = next(m for m in den.net.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_array_equal(first, again)
