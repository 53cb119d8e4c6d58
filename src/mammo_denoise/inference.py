"""Tiled network inference: Anscombe transform, tiles, blend, exact unbiased inverse.

The flow for one linear raw image ``z`` (docs/ARCHITECTURE.md, "Anscombe-domain denoising")::

    params = given or estimate_noise_params(z)
    shift  = anscombe(median(z), params)                    (whole image: tiles agree)
    y_hat  = blend(Denoiser.denoise_anscombe(anscombe(tile, params) - shift) for each tile)
    out    = inverse_anscombe(y_hat + shift, params, method="exact")

Field edges. A raw frame with collimator shadow along its border is denoised in parts: the
exposed field, then each shadow strip (``field_parts``), each tiled and reflected at its own
borders with the frame's constants, so the network never sees the ~100 sigma step between them.

Tiling. Along each axis the image is reflect-padded (virtually: tiles index the image through
mirrored coordinates) by a *context* margin ``c`` (``tile_context``: fixed by the model, at least
its receptive radius, whatever the overlap), then up to a multiple of the model's ``alignment``,
giving a canvas. Tiles of ``tile`` pixels are cut from the canvas at origins that are multiples
of ``alignment``, so every tile's pooling grid is the whole canvas's, and the image sits at the
same place on it for every tile and overlap. Neighbours share ``max(overlap, 2c)`` pixels at
least. At a shared border a tile's weight is 0 for the outer ``c`` pixels (those outputs saw the
tile's zero padding), then rises as a raised cosine over the rest of the shared band (the
cross-fade band, ``overlap - 2c`` pixels; none for overlap 0), where the neighbour's weight falls
as its complement; weights at canvas borders stay 1. Outputs are summed with these weights and
divided by the summed weights. Every output pixel that gets weight saw exactly the context it
would see in the whole canvas, so the tiled result equals the one-tile result up to float
rounding for any tile and overlap; the cross-fade is a second line of defence against seams.

Memory: the only image-sized array is the float32 output, which doubles as the blend
accumulator (the weights are separable: their sums are two 1-D arrays). Tiles are transformed
one by one and the result is normalised and inverted in blocks of rows, so everything else grows
with the tile and batch size, not with the image; the device only ever holds one batch of tiles
(and the model).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from functools import partial

import numpy as np
import torch

from mammo_denoise.devices import resolve_device  # noqa: F401  (part of this module's API)
from mammo_denoise.engines import load_engine, resolve_engine
from mammo_denoise.errors import Cancelled, MammoDenoiseError

#: Tile side (pixels) when the caller doesn't say. Each inner tile border spends the overlap
#: on context, so larger tiles waste less: on a 3328 x 2560 image with the default U-Net's
#: overlap, tiles of 1024 compute 1.17x the image's pixels against 1.36x for 512 (a full field
#: ran 25 % faster). One 1024^2 tile keeps the U-Net under ~0.5 GB on the CPU.
DEFAULT_TILE = 1024
#: Tiles per forward pass: per-pixel CPU throughput is flat beyond one 1024^2 tile; on a GPU two
#: keep it busy and the largest architecture's batch under ~4 GB (fp16).
DEFAULT_BATCH_CPU = 1
DEFAULT_BATCH_GPU = 2


# ----------------------------------------------------------------------------- devices
def _cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use, not the machine's
    except AttributeError:
        return os.cpu_count() or 1


@contextmanager
def _torch_settings(device: torch.device, threads: int | None = None):
    """Threads on CPU (``threads``, default all usable cores), cuDNN autotuning on CUDA (all
    tiles share one shape); restored after."""
    if device.type == "cpu":
        old = torch.get_num_threads()
        torch.set_num_threads(threads or _cpu_threads())
        try:
            yield
        finally:
            torch.set_num_threads(old)
    elif device.type == "cuda":
        old = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = old
    else:
        yield


# ----------------------------------------------------------------------------- tiling
def _align_up(n: int, a: int) -> int:
    return -(-n // a) * a


def tile_context(denoiser) -> int:
    """Context pixels (each side) of every tile output that gets weight: 3/8 of the model's
    default overlap, which covers its receptive radius (``Denoiser.default_overlap``). Fixed by
    the model alone, so the image's place on the pooling grid never depends on the overlap."""
    return 3 * denoiser.default_overlap // 8


def tile_layout(n: int, tile: int | None, overlap: int, alignment: int = 1, context: int | None = None):
    """Tiling of one axis of length ``n``: ``(origins, tile_len, context, canvas_len)``.

    ``tile`` is the largest tile side; the one used is the smallest that needs no more tiles.
    ``context`` is ``tile_context(model)``; None: 3/8 of ``overlap`` (right for the model's
    default overlap only). Neighbours share at least ``max(overlap, 2 * context)`` pixels.

    Origins are in canvas coordinates; the image occupies ``[context, context + n)`` of the
    canvas. One tile covers the whole canvas when ``tile`` is None or not smaller than it.
    """
    a = max(1, int(alignment))
    asked = max(0, int(overlap))
    if context is None:
        context = 3 * _align_up(asked, a) // 8
    overlap = _align_up(max(asked, 2 * context), a)
    canvas = _align_up(n + 2 * context, a)
    if tile is None or tile >= canvas:
        return [0], canvas, context, canvas
    t = (int(tile) // a) * a
    step = t - overlap
    if step < a:
        if overlap > _align_up(asked, a):
            raise MammoDenoiseError(
                f"tile ({tile}) must exceed the model's smallest overlap ({overlap}: twice its "
                f"{context} px of context) by at least its alignment ({a})")
        raise MammoDenoiseError(
            f"tile ({tile}) must exceed overlap ({overlap}) by at least the model's alignment ({a})")
    k = 1 + math.ceil((canvas - t) / step)
    # The fewest tiles of at most `tile` pixels, then the smallest aligned tile giving that
    # count: e.g. 3328 px rows take 8 tiles of 488 instead of 8 of 512 (5 % less work).
    t = _align_up(math.ceil((canvas - overlap) / k) + overlap, a)
    step = t - overlap
    k = 1 + math.ceil((canvas - t) / step)
    # Evenly spread, aligned down: consecutive origins are at most `step` apart (step is a
    # multiple of a), so neighbours always share at least `overlap` pixels.
    origins = [((i * (canvas - t)) // (k - 1)) // a * a for i in range(k - 1)] + [canvas - t]
    return origins, t, context, canvas


def _ramp(length: int) -> np.ndarray:
    # sin^2 rising over the band; its complement 1 - sin^2 = cos^2 falls over the same pixels,
    # so two neighbours' weights sum to 1 there.
    return np.sin(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2


def _axis_weights(origins: Sequence[int], t: int, context: int) -> list[np.ndarray]:
    weights = []
    for i, o in enumerate(origins):
        w = np.ones(t, dtype=np.float64)
        if i > 0:
            shared = origins[i - 1] + t - o
            w[:context] = 0.0
            w[context:shared - context] *= _ramp(shared - 2 * context)
        if i + 1 < len(origins):
            start = origins[i + 1] - o
            w[t - context:] = 0.0
            w[start + context:t - context] *= 1.0 - _ramp(t - start - 2 * context)
        weights.append(w)
    return weights


# ----------------------------------------------------------------------------- transforms
def _robust_gaussian_sigma(z: np.ndarray) -> float:
    """Noise std from the finest diagonal wavelet detail (MAD / 0.6745; Donoho 1995)."""
    h, w = (z.shape[0] // 2) * 2, (z.shape[1] // 2) * 2
    if h < 2 or w < 2:
        return 1.0
    q = z[:h, :w]
    d = (q[0::2, 0::2] - q[0::2, 1::2] - q[1::2, 0::2] + q[1::2, 1::2]) / 2.0
    sigma = float(np.median(np.abs(d - np.median(d))) / 0.6745)
    return sigma if sigma > 0 and math.isfinite(sigma) else 1.0


def _subsample_median(frame: np.ndarray, max_pixels: int = 1 << 20) -> float:
    """Median of a regular subsample of at most ~``max_pixels``: no full-size sorted copy."""
    step = max(1, math.ceil(math.sqrt(frame.size / max_pixels)))
    return float(np.median(frame[::step, ::step]))


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map positions outside ``[0, n)`` back inside by mirror reflection without repeating the
    edge pixel, periodically for pads longer than the image: numpy's ``np.pad(mode="reflect")``."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


class _Transform:
    """The map of one frame into the network's domain, and its inverse back to image units.

    Its constants (noise model, ``shift``, scaling) are fixed once from the whole frame, so every
    tile goes through the same map; the maps themselves run per tile (``forward``) and per
    block of rows (``inverse``), so no float64 copy of the whole frame is ever made. ``forward``
    returns ``y - shift`` in float32: subtracting the signal level before the cast keeps float32
    precision whatever the level; ``inverse`` adds ``shift`` back in float64.
    """

    def __init__(self, frame: np.ndarray, domain: str, params, linear: bool):
        self.kind = domain
        self.params = params
        self.shift = 0.0
        if domain == "intensity":
            # The second seed's recipe: global min/max scaling, no variance stabilisation.
            self.lo = float(frame.min())
            span = float(frame.max()) - self.lo
            self.span = span if span > 0 else 1.0
            return
        from mammo_denoise.physics.anscombe import anscombe

        if params is None:
            params = self._estimate(frame, linear)
        if isinstance(params, str):  # "gaussian"
            self.kind = "gaussian"
            self.sigma = _robust_gaussian_sigma(frame)
            self.shift = _subsample_median(frame) / self.sigma
        else:
            self.params = params
            # The transform is increasing, so the median of y is the transform of the median.
            self.shift = float(anscombe(_subsample_median(frame), params))

    @staticmethod
    def _estimate(frame, linear):
        from mammo_denoise.physics.noise import estimate_noise_params

        if linear:
            return estimate_noise_params(frame)
        # Non-linear (processed / log) data: the affine variance model still describes a
        # signal-dependent noise level locally, and the GAT stabilises it; when the fit fails or
        # finds no signal dependence (the GAT would then be a huge constant plus tiny changes),
        # fall back to a plain Gaussian model.
        try:
            p = estimate_noise_params(frame)
        except (MammoDenoiseError, ValueError, FloatingPointError):
            return "gaussian"
        hi = float(np.percentile(frame, 99))
        if p.gain * max(hi - p.offset, 0.0) < 0.05 * p.electronic_sigma**2:
            return "gaussian"
        return p

    def forward(self, z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64)
        if self.kind == "intensity":
            return ((z - self.lo) / self.span).astype(np.float32)
        if self.kind == "gaussian":
            return (z / self.sigma - self.shift).astype(np.float32)
        from mammo_denoise.physics.anscombe import anscombe

        return (anscombe(z, self.params) - self.shift).astype(np.float32)

    def inverse(self, y_rel: np.ndarray) -> np.ndarray:
        y = y_rel.astype(np.float64) + self.shift
        if self.kind == "intensity":
            return (y * self.span + self.lo).astype(np.float32)
        if self.kind == "gaussian":
            return (y * self.sigma).astype(np.float32)
        from mammo_denoise.physics.anscombe import inverse_anscombe

        return np.asarray(inverse_anscombe(y, self.params, method="exact"), dtype=np.float32)


# ----------------------------------------------------------------------------- field edges
#: A border row or column is collimator shadow when its mean count is below this fraction of
#: the frame's bright level (99th percentile count: the open field, even in a spot view that is
#: mostly shadow).
SHADOW_FRACTION = 0.02


def field_parts(frame: np.ndarray, transform: _Transform) -> list[tuple[slice, slice]]:
    """The rectangles of a raw frame denoised one by one: the exposed field, then the collimator
    shadow strips along the image border (top, bottom, left, right).

    From shadow (offset plus electronic noise) to open field the signal jumps ~100 noise sigma
    in one pixel; a network sees that step rarely in training and dips on the corner pixel of
    the field (a bright, calcification-like dot on a display; BENCHMARKS.md section 6). Denoised
    apart, each part is reflected at its own borders as a frame is at the image's, so the
    network never sees the step. Strips are whole border rows or columns whose mean count is
    below ``SHADOW_FRACTION`` of the frame's bright level; a tilted or partial shadow stays in
    the field, as before. Non-raw data (no Poisson-Gaussian model) and frames without such strips
    are one part.
    """
    h, w = frame.shape
    whole = [(slice(0, h), slice(0, w))]
    if transform.kind != "anscombe" or transform.params is None or transform.params.gain <= 0:
        return whole
    p = transform.params
    step = max(1, math.ceil(math.sqrt(frame.size / (1 << 20))))
    bright = (float(np.percentile(frame[::step, ::step], 99)) - p.offset) / p.gain
    if not bright > 0:
        return whole
    limit = p.offset + p.gain * SHADOW_FRACTION * bright
    row_shadow = frame.mean(axis=1, dtype=np.float64) < limit
    col_shadow = frame.mean(axis=0, dtype=np.float64) < limit

    def run(flags) -> int:  # leading shadow lines
        lit = np.flatnonzero(~flags)
        return int(lit[0]) if lit.size else len(flags)

    top, bottom = run(row_shadow), run(row_shadow[::-1])
    left, right = run(col_shadow), run(col_shadow[::-1])
    r0, r1, c0, c1 = top, h - bottom, left, w - right
    if r1 - r0 < 8 or c1 - c0 < 8 or not (top or bottom or left or right):
        return whole
    field = (slice(r0, r1), slice(c0, c1))
    strips = [(slice(0, r0), slice(0, w)), (slice(r1, h), slice(0, w)),
              (slice(r0, r1), slice(0, c0)), (slice(r0, r1), slice(c1, w))]
    return [field] + [(a, b) for a, b in strips if a.stop > a.start and b.stop > b.start]


# ----------------------------------------------------------------------------- the engine
#: Pixels per block of rows when checking, normalising and inverting whole frames: bounds the
#: float64 temporaries (~2 MB each) whatever the image size.
_BLOCK_PIXELS = 1 << 18


def _row_blocks(h: int, w: int):
    step = max(1, _BLOCK_PIXELS // max(w, 1))
    return (slice(r, min(r + step, h)) for r in range(0, h, step))


def use_channels_last(device: torch.device, amp: bool) -> bool:
    """NHWC activations where they are faster: on the CPU always (oneDNN; the default U-Net ran
    2x faster), on CUDA only under fp16 autocast, where tensor cores want them. In IEEE float32
    they made the networks 1.07-1.5x slower on an H100 (``benchmarks/cuda_check.py --part
    layout``, BENCHMARKS.md section 7)."""
    return device.type == "cpu" or (device.type == "cuda" and amp)


def ieee_float32():
    """cuDNN and matmul in IEEE float32 inside the block; the global settings are restored."""
    cudnn = torch.backends.cudnn
    stack = ExitStack()
    stack.enter_context(cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                                    deterministic=cudnn.deterministic, allow_tf32=False))
    matmul = torch.backends.cuda.matmul
    previous = matmul.allow_tf32
    matmul.allow_tf32 = False
    stack.callback(setattr, matmul, "allow_tf32", previous)
    return stack


def denoise_frame(frame: np.ndarray, transform: _Transform, denoiser, device: torch.device, *,
                  tile: int | None = DEFAULT_TILE, overlap: int | None = None, batch_size: int = 1,
                  amp: bool = False, on_batch: Callable[[int], None] | None = None,
                  cancel: Callable[[], bool] | None = None, out: np.ndarray | None = None,
                  net: Callable | None = None) -> np.ndarray:
    """Tile, transform, run, blend and invert one 2-D frame; float32 in image units.

    ``denoiser`` must already be on ``device`` and in eval mode. Tiles are cut from the frame
    itself (reflected at its borders) and transformed one by one; the blend accumulates in the
    float32 output (``out`` when given, else a new array), which is then normalised and
    inverted in blocks of rows. Beyond the output, memory is a batch of tiles and the model's
    activations: it grows with ``tile`` and ``batch_size``, not with the image.
    ``on_batch(n_tiles)`` is called after each batch; ``cancel()`` is checked before each.
    ``net`` runs the network on each batch instead of ``denoiser.net`` (a CPU engine from
    ``mammo_denoise.engines``); the batch is then handed over in the contiguous layout.
    """
    h, w = frame.shape
    a = denoiser.alignment
    if overlap is None:
        overlap = denoiser.default_overlap
    c = tile_context(denoiser)
    oy, ty, cy, _ = tile_layout(h, tile, overlap, a, c)
    ox, tx, cx, _ = tile_layout(w, tile, overlap, a, c)
    wy, wx = _axis_weights(oy, ty, cy), _axis_weights(ox, tx, cx)
    if out is None:
        out = np.zeros((h, w), dtype=np.float32)
    else:
        out[...] = 0.0
    jobs = [(i, j) for i in range(len(oy)) for j in range(len(ox))]

    def cut(i, j):
        rows, cols = np.arange(oy[i], oy[i] + ty) - cy, np.arange(ox[j], ox[j] + tx) - cx
        if rows[0] >= 0 and rows[-1] < h and cols[0] >= 0 and cols[-1] < w:
            return frame[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        return frame[np.ix_(_reflect_index(rows, h), _reflect_index(cols, w))]

    cuda = device.type == "cuda"
    channels_last = use_channels_last(device, amp) and net is None
    # On CUDA either fp16 autocast (amp) or IEEE float32. fp16 rather than bf16: its 11-bit
    # mantissa; a network that sees the signal level loses 2 dB in bf16 (benchmarks/precision.py).
    # Float32 with TF32 off: cuDNN's default TF32 moved the U-Net's output by 7e-4 of the data
    # range between tile layouts on an H100 (benchmarks/cuda_check.py).
    if not cuda:
        precision = nullcontext
    elif amp:
        precision = partial(torch.autocast, "cuda", dtype=torch.float16)
    else:
        precision = ieee_float32

    for start in range(0, len(jobs), batch_size):
        if cancel is not None and cancel():
            raise Cancelled("denoising cancelled")
        batch = jobs[start:start + batch_size]
        tiles = np.stack([transform.forward(cut(i, j)) for i, j in batch])[:, None]
        x = torch.from_numpy(tiles)
        if cuda:
            x = x.pin_memory().to(device, non_blocking=True)
        else:
            x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            stack.enter_context(precision())
            res = denoiser.denoise_anscombe(x, 0.0, net=net)
        res = res.float().cpu().numpy()[:, 0]
        for (i, j), r in zip(batch, res):
            # Part of this tile inside the image, in tile and in image coordinates.
            y0, y1 = max(oy[i], cy), min(oy[i] + ty, cy + h)
            x0, x1 = max(ox[j], cx), min(ox[j] + tx, cx + w)
            ry, rx = slice(y0 - oy[i], y1 - oy[i]), slice(x0 - ox[j], x1 - ox[j])
            wt = np.outer(wy[i][ry], wx[j][rx]).astype(np.float32)
            out[y0 - cy:y1 - cy, x0 - cx:x1 - cx] += wt * r[ry, rx]
        if on_batch is not None:
            on_batch(len(batch))
    # The weights are separable, so their sum over tiles is the outer product of the per-axis
    # sums: > 0 everywhere, since neighbouring tiles' weighted cores tile each axis.
    sy, sx = _weight_sums(oy, ty, cy, h, wy), _weight_sums(ox, tx, cx, w, wx)
    for rows in _row_blocks(h, w):
        if not np.isfinite(out[rows]).all():
            raise MammoDenoiseError(f"model {denoiser.name!r} produced NaN or infinite values"
                                    + (" (half-precision overflow? try amp=False)" if cuda and amp else ""))
        out[rows] = transform.inverse(out[rows] / np.outer(sy[rows], sx))
    return out


def _weight_sums(origins: Sequence[int], t: int, context: int, n: int, weights) -> np.ndarray:
    total = np.zeros(n + 2 * context + t, dtype=np.float64)
    for o, wt in zip(origins, weights):
        total[o:o + t] += wt
    return total[context:context + n].astype(np.float32)


def _tiles_per_frame(shape, tile, overlap, alignment, context) -> int:
    ny = len(tile_layout(shape[0], tile, overlap, alignment, context)[0])
    nx = len(tile_layout(shape[1], tile, overlap, alignment, context)[0])
    return ny * nx


def _registry_net(denoiser) -> bool:
    from mammo_denoise.models import ARCHITECTURES

    return type(denoiser.net) is ARCHITECTURES.get(str(denoiser.card.get("architecture")))


def _as_denoiser(model):
    from mammo_denoise.models import Denoiser, load_model

    if isinstance(model, Denoiser):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    raise MammoDenoiseError(f"model must be a Denoiser, a model name or a path, got {type(model).__name__}")


def denoise(image, model="default", params=None, meta=None, device="auto", tile: int | None = DEFAULT_TILE,
            overlap: int | None = None, batch_size: int | None = None,
            progress: Callable[[int, int], object] | None = None,
            cancel: Callable[[], bool] | None = None, *, amp: bool = False,
            safeguard: bool = True, engine: str = "auto", info: dict | None = None) -> np.ndarray:
    """Denoise a mammogram ``(H, W)`` or a stack ``(N, H, W)`` (frame by frame); float32 out.

    Parameters
    ----------
    image : array in modality units (raw linear DN for Anscombe-domain models).
    model : a ``Denoiser``, a model name (``"default"``, shipped or user) or a .safetensors path.
        A ``Denoiser`` is moved to ``device`` and left there; its train/eval mode is restored.
    params : ``NoiseParams`` (one for all frames, or a sequence with one per frame); estimated
        per frame with ``estimate_noise_params`` when None.
    meta : ``MammogramMeta``; if it says the data are not linear raw (FOR PRESENTATION / LOG) a
        warning is issued and the noise model is fitted to the image itself (Gaussian if that
        fit is degenerate).
    device : "auto" (CUDA, MPS, CPU), "cpu", "cuda", "mps".
    tile : largest tile side in pixels (None: whole image in one pass); tiles are shrunk to the
        smallest aligned size that needs no more tiles.
    overlap : pixels shared by neighbouring tiles, at least twice the model's context
        (``tile_context``, 27 px for the default U-Net) whatever is asked: tiled output equals
        whole-image output for any value. What exceeds that is cross-faded (0: a hard cut);
        None: the model's ``default_overlap`` (72 for the default U-Net).
    batch_size : tiles per forward pass; None: ``DEFAULT_BATCH_CPU`` (1) on CPU,
        ``DEFAULT_BATCH_GPU`` (2) on a GPU.
    progress : ``progress(done, total)`` in tiles, called after each batch.
    cancel : called before each batch; True raises ``Cancelled("denoising cancelled")``.
    amp : fp16 autocast on CUDA: 1.1x (default U-Net) to 1.35x (Eckert ResNet) faster on an
        H100, but the U-Net, which sees the signal level itself, loses up to 0.05 dB where the
        signal lies far from the frame's median. False (default): IEEE float32 there (no TF32),
        the CPU's answer.
    safeguard : check each Anscombe-domain frame's removed part against its noise model
        (``mammo_denoise.safeguard``): where it removed more than the noise allows the result is
        blended back toward the input, and a frame whose noise does not fit the model gets a
        ``NoiseModelMismatch`` warning saying what was measured. False: the network's output.
        A model fine-tuned on a correlated detector is judged against the noise its card
        records (``Denoiser.trained_noise``), every other model against white noise.
    engine : what runs the network on the CPU (``mammo_denoise.engines``): "auto" (OpenVINO,
        else ONNX Runtime, when installed, else PyTorch), "torch", "openvino", "onnxruntime".
        Other devices always use "torch". Under "auto" only the registry's architectures are
        converted, and a model the engine cannot convert runs in PyTorch. Every engine gives the
        same result within float rounding (~1e-6 of the data range).
    info : a dict to fill in with what ran: ``engine``, ``device``, ``threads`` (CPU), ``seconds``
        (wall time of this call), ``ran`` ("openvino on cpu, 2 threads") and ``summary``, one
        line for a status bar ("openvino on cpu, 2 threads: 2.4 s").
    """
    started = time.perf_counter()
    arr = np.asarray(image)
    if arr.dtype.kind not in "biuf":
        raise MammoDenoiseError(f"image must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise MammoDenoiseError(f"image must be a non-empty 2-D array or a (N, H, W) stack, got shape {arr.shape}")
    stack = arr.ndim == 3
    frames = arr if stack else arr[None]
    n = frames.shape[0]
    if arr.dtype.kind == "f":
        for k in range(n):  # in blocks of rows: no image-sized temporaries
            if not all(np.isfinite(frames[k, rows]).all() for rows in _row_blocks(*frames.shape[1:])):
                raise MammoDenoiseError("image contains NaN or infinite values; denoising needs finite pixel values")
    if params is None or not isinstance(params, (list, tuple)):
        frame_params = [params] * n
    else:
        frame_params = list(params)
        if len(frame_params) != n:
            raise MammoDenoiseError(f"got {len(frame_params)} NoiseParams for {n} frames")
    if tile is not None and tile < 1:
        raise MammoDenoiseError(f"tile must be a positive number of pixels or None, got {tile}")
    if overlap is not None and overlap < 0:
        raise MammoDenoiseError(f"overlap must be >= 0, got {overlap}")

    denoiser = _as_denoiser(model)
    dev = resolve_device(device)
    engine_name = resolve_engine(engine, dev)
    auto = engine is None or str(engine).strip().lower() == "auto"
    if engine_name != "torch" and auto and not _registry_net(denoiser):
        engine_name = "torch"  # "auto" converts only the architectures whose graphs are tested
    if batch_size is None:
        batch_size = DEFAULT_BATCH_CPU if dev.type == "cpu" else DEFAULT_BATCH_GPU
    if batch_size < 1:
        raise MammoDenoiseError(f"batch_size must be >= 1, got {batch_size}")

    linear = True if meta is None else bool(meta.is_linear)
    if not linear and denoiser.domain == "anscombe":
        warnings.warn(
            "image is not linear raw data (FOR PRESENTATION or LOG): the Poisson-Gaussian noise model "
            "does not hold, so the noise model is fitted to the image itself (Gaussian if that fit "
            "is degenerate) and the result is approximate; denoise FOR PROCESSING images where "
            "possible", UserWarning, stacklevel=2)

    ov = denoiser.default_overlap if overlap is None else int(overlap)
    # Each frame's map into the network's domain, fixed from the whole frame, and its parts
    # (field_parts): known up front so that progress counts every tile.
    plans = []
    for k in range(n):
        if cancel is not None and cancel():
            raise Cancelled("denoising cancelled")
        tr = _Transform(frames[k], denoiser.domain, frame_params[k], linear)
        plans.append((tr, field_parts(frames[k], tr)))
    context = tile_context(denoiser)
    total = sum(_tiles_per_frame((r.stop - r.start, c.stop - c.start), tile, ov, denoiser.alignment, context)
                for _, parts in plans for r, c in parts)
    done = 0

    def on_batch(k):
        nonlocal done
        done += k
        if progress is not None:
            progress(done, total)

    was_training = denoiser.training
    denoiser.to(dev)
    # A Denoiser handed in keeps its layout between calls, so set it both ways (an engine's
    # graph holds its own copy of the weights, whatever their layout here).
    denoiser.to(memory_format=torch.channels_last if use_channels_last(dev, amp) else torch.contiguous_format)
    denoiser.eval()
    out = np.empty(frames.shape, dtype=np.float32)
    threads = _cpu_threads()
    net = None
    try:
        if engine_name != "torch":
            try:
                net = load_engine(engine_name, denoiser.net, denoiser.card, threads)
            except MammoDenoiseError:
                if not auto:
                    raise
                engine_name = "torch"  # "auto": a model the engine can't convert runs in PyTorch
        # With an engine, torch only scales the tiles: one thread, so that its idle OpenMP
        # workers don't spin on the cores the engine's threads need.
        with _torch_settings(dev, threads=1 if net is not None else threads):
            for k, (tr, parts) in enumerate(plans):
                for part in parts:
                    denoise_frame(frames[k][part], tr, denoiser, dev, tile=tile, overlap=ov,
                                  batch_size=batch_size, amp=amp, on_batch=on_batch, cancel=cancel,
                                  out=out[k][part], net=net)
                if safeguard and tr.kind == "anscombe":
                    if net is not None:
                        # The engine's activations (~240 MB for OpenVINO at the default tile) go
                        # before the safeguard's frames come, so the two peaks don't add up; it
                        # rebuilds them on its next call (~0.15 s on a full field).
                        net.release()
                    _safeguard_frame(frames[k], out[k], tr.params, f"frame {k}: " if stack else "",
                                     denoiser.trained_noise)
    finally:
        denoiser.train(was_training)
        if net is not None:
            net.release()  # nothing held between calls (napari keeps the engine for the next)
    if info is not None:
        seconds = time.perf_counter() - started
        where = f"{dev.type}, {threads} threads" if dev.type == "cpu" else str(dev)
        info.update(engine=engine_name, device=str(dev), threads=threads if dev.type == "cpu" else None,
                    seconds=seconds, ran=f"{engine_name} on {where}",
                    summary=f"{engine_name} on {where}: {seconds:.1f} s")
    return out if stack else out[0]


def _safeguard_frame(frame: np.ndarray, out: np.ndarray, params, label: str,
                     expected_noise=None) -> None:
    """``out`` blended back toward ``frame`` where it removed more than noise (in place), with a
    warning when the frame's noise does not fit the model (mammo_denoise.safeguard).
    ``expected_noise``: the correlated noise a fine-tuned model's card says it was trained for
    (``Denoiser.trained_noise``); None: white unit noise, as the shipped models."""
    from mammo_denoise.safeguard import NoiseModelMismatch, safeguard

    out[...], check = safeguard(frame, out, params, expected_noise)
    if check.problems:
        warnings.warn(NoiseModelMismatch(f"{label}noise model mismatch: {check.summary()}"),
                      stacklevel=3)


def apply_strength(noisy, denoised, strength: float) -> np.ndarray:
    """The denoised image at a chosen strength: ``noisy + strength * (denoised - noisy)``, float32.

    ``strength`` 1 is the network's estimate, 0 the input. In between, ``1 - strength`` of the
    input's noise is kept (its standard deviation scales by that factor) and every feature's
    contrast moves by the same fraction back toward the input's: the smallest calcifications,
    which a denoiser shrinks most, regain contrast together with some grain (BENCHMARKS.md,
    section 1, "strength"). For readers who find a fully denoised image too smooth; a linear
    blend adds no structure of its own.
    """
    s = float(strength)
    if not 0.0 <= s <= 1.0:
        raise MammoDenoiseError(f"strength must be between 0 and 1, got {strength!r}")
    noisy, denoised = np.asarray(noisy), np.asarray(denoised)
    if noisy.shape != denoised.shape:
        raise MammoDenoiseError(f"noisy image {noisy.shape} and denoised image {denoised.shape} differ in shape")
    out = np.multiply(denoised, s, dtype=np.float32)
    out += np.multiply(noisy, 1.0 - s, dtype=np.float32)
    return out
