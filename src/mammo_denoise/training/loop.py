"""The training loop: Adam, MSE(+SSIM) loss, validation, early stopping, checkpoints, DDP.

Process model
-------------
- One process (default): ``train(config)``.
- ``torchrun --nproc_per_node N script.py`` where the script calls ``train(config)``: every
  process runs the loop; the process group is initialised from the environment.
- ``train(config, world_size=N)`` from a plain process (e.g. the napari worker thread): the
  caller becomes a coordinator that spawns N ranks, forwards rank 0's progress messages to
  ``progress`` and turns ``cancel()`` into a shared event the ranks poll.

Under DDP each rank draws its own patches (the rank is part of every batch seed), gradients are
averaged by DistributedDataParallel, validation patches are split over ranks and the sums
all-reduced (every rank takes the same early-stopping decision), and only rank 0 writes files.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mammo_denoise.errors import Cancelled, MammoDenoiseError
from mammo_denoise.inference import ieee_float32, use_channels_last

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, learning_rate
from .data import ANATOMY_DETECTOR, GS, PatchSampler, batch_rng, build_sources, split_sources, validation_set
from .messages import Baseline, EpochEnd, TrainDone, TrainStep

SSIM_WEIGHT = 10.0  # first seed: L = MSE + 10 * (1 - SSIM)


class NotImproved(MammoDenoiseError):
    """A fine-tune whose every epoch scored no better on the validation patches than the model
    it started from: nothing was written."""


# ----------------------------------------------------------------------------- distributed
@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised it, so we destroy it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def _init_from_env(device_pref: str) -> _Dist:
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    world = _env_world_size()
    if dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), local, owns_group=False)
    device = _pick_device(device_pref, local, distributed=True, local_world=_local_world_size())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(_backend_for(device), rank=rank, world_size=world)
    return _Dist(rank, world, local, owns_group=True)


# ----------------------------------------------------------------------------- devices
def _local_world_size() -> int:
    """Training processes on this machine: torchrun's LOCAL_WORLD_SIZE, else the whole world."""
    try:
        return int(os.environ["LOCAL_WORLD_SIZE"])
    except (KeyError, ValueError):
        return _env_world_size()


def _cuda_for_rank(local_rank: int, distributed: bool, local_world: int) -> torch.device:
    # NCCL refuses two ranks on one GPU ("Duplicate GPU detected"); say so before it does.
    count = torch.cuda.device_count()
    if distributed and local_world > count:
        raise MammoDenoiseError(
            f"{local_world} training processes on this machine but {count} CUDA GPU"
            f"{'' if count == 1 else 's'}: distributed training needs one GPU per process; start "
            f"at most {count} (torchrun --nproc_per_node {count}), or train on the CPU with --device cpu")
    return torch.device("cuda", local_rank % count)


def _pick_device(pref: str, local_rank: int = 0, distributed: bool = False,
                 local_world: int = 1) -> torch.device:
    if pref == "auto":
        if torch.cuda.is_available():
            return _cuda_for_rank(local_rank, distributed, local_world)
        mps = getattr(torch.backends, "mps", None)
        # MPS has no multi-process backend: DDP on a Mac runs on the CPU.
        if not distributed and mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MammoDenoiseError(f"device {pref!r} requested but CUDA is not available")
        if pref == "cuda":
            return _cuda_for_rank(local_rank, distributed, local_world)
    if pref == "mps" and distributed:
        raise MammoDenoiseError("distributed training is not supported on MPS; use device='cpu'")
    return torch.device(pref)


def _grad_scaler():
    try:
        return torch.amp.GradScaler("cuda")
    except (AttributeError, TypeError):  # torch < 2.3
        return torch.cuda.amp.GradScaler()


def _to_device(arr: np.ndarray, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    t = torch.from_numpy(arr)
    if device.type == "cuda":
        # Pinned host memory lets the copy overlap with the previous step's kernels.
        t = t.pin_memory().to(device, non_blocking=True)
    else:
        t = t.to(device)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


# ----------------------------------------------------------------------------- loss
def compute_loss(out, target, data_range, kind: str, weight=None) -> torch.Tensor:
    """``MSE`` or ``MSE + 10 * (1 - SSIM)`` (first seed), in float32 even under autocast.

    ``weight`` (same shape as ``target``, optional) makes the MSE term the weighted mean
    ``sum(w * err^2) / sum(w)``: a per-pixel emphasis (calcifications) that leaves the loss on
    the scale of a plain MSE.

    SSIM uses each patch's own data range: the range of its source image's clean target at the
    patch's dose (``data_range``, per sample), so its constants match what a whole-image SSIM
    would use instead of depending on what else landed in the batch. Units are those of the
    domain: GAT units (unit noise variance) or [0, 1] intensities.
    """
    out = out.float()
    target = target.float()
    if weight is None:
        mse = torch.mean((out - target) ** 2)
    else:
        weight = weight.float()
        mse = torch.sum(weight * (out - target) ** 2) / torch.sum(weight)
    if kind == "mse":
        return mse
    from pytorch_msssim import ssim

    r = data_range.float().view(-1, 1, 1, 1)
    s = ssim(out / r, target / r, data_range=1.0, size_average=False)
    return mse + SSIM_WEIGHT * (1.0 - s.mean())


# ----------------------------------------------------------------------------- model
def domain_for(noise_model: str) -> str:
    """Physics-driven noise is learnt in the Anscombe domain; the second seed's Gaussian +
    salt-and-pepper noise in the intensity domain ([0, 1] images), as that seed did."""
    return "intensity" if noise_model == GS else "anscombe"


def _make_model(config: TrainConfig):
    from mammo_denoise.models import load_model, make_denoiser

    domain = domain_for(config.noise_model)
    if config.init is not None:
        den = load_model(config.init)
        if den.domain != domain:
            raise MammoDenoiseError(
                f"cannot fine-tune {config.init} (a model for the {den.domain} domain) with "
                f"noise_model={config.noise_model!r}, which trains in the {domain} domain"
            )
        card_arch = den.card.get("architecture")
        if config.architecture and config.architecture != card_arch:
            raise MammoDenoiseError(
                f"cannot fine-tune {config.init} as a {config.architecture}: it is a {card_arch} "
                "(leave out the architecture to keep the model's own)"
            )
        if config.arch_kwargs and config.arch_kwargs != den.card.get("arch_kwargs", {}):
            raise MammoDenoiseError(
                f"cannot fine-tune {config.init} with architecture options {config.arch_kwargs}: "
                f"its card says {den.card.get('arch_kwargs', {})} (leave them out to keep the model's own)"
            )
        if config.input_highpass and config.input_highpass != den.highpass_sigma:
            raise MammoDenoiseError(
                f"cannot fine-tune {config.init} with input_highpass={config.input_highpass:g}: a model "
                f"keeps the input it was trained on (its card says {den.highpass_sigma:g})"
            )
    else:
        # Seeded so that the fresh initialisation is the same on every rank and every run.
        den = make_denoiser(config.fresh_architecture, domain=domain, seed=config.seed,
                            input_highpass=config.input_highpass, **config.arch_kwargs)
    den.card["name"] = config.resolved_name()
    den.card["noise_model"] = config.noise_model
    return den


# ----------------------------------------------------------------------------- public
def train(
    config: TrainConfig,
    progress: Callable[[object], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    *,
    world_size: int | None = None,
) -> Path:
    """Train (or fine-tune) a denoiser; returns the path of the written weights.

    ``progress(msg)`` receives :class:`TrainStep`, :class:`EpochEnd` and :class:`TrainDone`
    messages (from the calling thread; under DDP only rank 0's). ``cancel()`` is polled every
    iteration; when it returns True, :class:`~mammo_denoise.errors.Cancelled` is raised. A
    cancelled or failed run never touches ``config.out``; the checkpoint of the last finished
    epoch stays, so ``resume=True`` continues from there.
    """
    if not isinstance(config, TrainConfig):
        raise MammoDenoiseError(f"train() needs a TrainConfig, got {type(config).__name__}")
    if world_size is not None and world_size > 1 and _env_world_size() <= 1:
        _pick_device(config.device, 0, distributed=True, local_world=world_size)  # fail before spawning
        return _spawn(config, progress, cancel, world_size)
    dist_ctx = _init_from_env(config.device) if _env_world_size() > 1 else _Dist()
    try:
        # Float32 on CUDA means IEEE float32: the U-Net sees the Anscombe signal level itself,
        # and reduced-precision inputs cost it PSNR where the signal is far from the frame's
        # median (BENCHMARKS.md section 7). TF32 stays off for the run; the caller's flags return.
        with ieee_float32() if not config.amp else nullcontext():
            return _run(config, progress, cancel, dist_ctx)
    finally:
        if dist_ctx.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(config: TrainConfig, progress, cancel, dctx: _Dist) -> Path:
    import torch.distributed as dist

    device = _pick_device(config.device, dctx.local_rank, dctx.enabled, _local_world_size())
    is_main = dctx.rank == 0
    emit = progress if (progress is not None and is_main) else (lambda msg: None)
    out = config.resolved_out()
    ckpt_path = config.resolved_checkpoint()
    # Opt-in fp16 (11-bit mantissa, with loss scaling), never bf16: three U-Nets trained under
    # bf16 autocast on an H100 lost 0.08-0.19 dB on the two held-out phantoms whose signal lies
    # far from the frame median, where bf16 inference of the default loses 2 dB (fp16 0.05).
    use_amp = bool(config.amp) and device.type == "cuda"
    amp_dtype = torch.float16
    scaler = _grad_scaler() if use_amp else None

    # -- data ---------------------------------------------------------------------------------
    # A cancel here is seen by this rank alone; under DDP its exit ends the others (torchrun's
    # agent, or the spawning coordinator, tears the group down).
    sources = build_sources(config, cancel)
    train_src, val_src, held_out = split_sources(sources, config.val_fraction, config.seed)
    sampler = PatchSampler(train_src, config)
    val = validation_set(val_src, config)
    # Each rank scores its share of the fixed validation patches; sums are all-reduced.
    val_idx = np.arange(dctx.rank, len(val["y"]), dctx.world_size)
    val_params = [s.params for s in val_src]
    no_truth = "tvar" in val  # noisier2noise: PSNR estimated in the GAT domain
    if no_truth:
        noisy_psnr = _gat_psnr(float(np.mean((val["y"] - val["t"]) ** 2) - np.mean(val["tvar"])), val)
    else:
        noisy_psnr = _psnr_dn(val["noisy_dn"], val, val_params, config.noise_model, is_dn=True)

    # -- model, optimizer, resume -----------------------------------------------------------------
    den = _make_model(config).to(device)
    # As in inference (a training step of the U-Net on 16 patches of 128² took 2.1 s instead of
    # 3.9 s on the CPU). Saved weights and checkpoints are made contiguous, so files do not
    # depend on it.
    channels_last = use_channels_last(device, config.amp)
    if channels_last:
        den.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(den.parameters(), lr=config.lr)
    state = {"epoch": 0, "best_val_loss": math.inf, "best_val_psnr": float("nan"), "best_epoch": 0,
             "bad_epochs": 0, "history": [], "time_s": 0.0, "patches_seen": 0}
    best_weights = None
    if config.resume:
        model_sd, opt_sd, meta, best_sd = load_checkpoint(ckpt_path)
        differences = _fingerprint_differences(meta.get("fingerprint") or {},
                                               _jsonable(config.fingerprint()))
        if differences:
            raise MammoDenoiseError(
                "checkpoint was written by a different training configuration (only epochs, "
                "patience, device and output may change when resuming): "
                + "; ".join(differences), path=ckpt_path)
        if meta.get("world_size", 1) != dctx.world_size:
            raise MammoDenoiseError(
                f"checkpoint was written with {meta.get('world_size')} processes, "
                f"not {dctx.world_size}", path=ckpt_path)
        den.load_state_dict(model_sd)
        opt.load_state_dict(opt_sd)
        state.update(meta["state"])
        best_weights = best_sd
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
    model = den
    if dctx.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(den, device_ids=[device.index] if device.type == "cuda" else None)

    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if use_amp else nullcontext
    stop_flag = torch.zeros(1, device=device)

    def cancelled() -> bool:
        flag = bool(cancel is not None and cancel())
        if dctx.enabled:
            # Every rank must leave at the same iteration, or the others block in all-reduce.
            stop_flag.fill_(1.0 if flag else 0.0)
            dist.all_reduce(stop_flag, op=dist.ReduceOp.MAX)
            flag = bool(stop_flag.item())
        return flag

    # A wall-clock budget gives architectures of very different cost the same stated training
    # budget; time already spent before a resume counts against it. The fraction spent is
    # all-reduced so that every rank stops, and sets its learning rate, alike.
    budget_clock = time.perf_counter() - state["time_s"]
    spent = torch.zeros(1, dtype=torch.float64, device=device)
    budget = {"spent": 0.0 if config.time_budget_s is None else state["time_s"] / config.time_budget_s}

    def out_of_time() -> bool:
        if config.time_budget_s is None:
            return False
        spent.fill_((time.perf_counter() - budget_clock) / config.time_budget_s)
        if dctx.enabled:
            dist.all_reduce(spent, op=dist.ReduceOp.MAX)
        budget["spent"] = float(spent.item())
        return budget["spent"] >= 1.0

    # -- epochs -----------------------------------------------------------------------------------
    def patience_spent() -> bool:
        return config.patience is not None and state["bad_epochs"] >= config.patience

    if config.init is not None and state["epoch"] == 0:
        # The model it starts from, on the same validation patches and noise: the bar to beat.
        start_loss, start_psnr, start_info = _validate(den, val, val_idx, val_params, config, device,
                                                       autocast, dctx, details=True)
        state["start"] = {"val_loss": start_loss, "val_psnr": start_psnr, **start_info}
        if config.require_improvement:
            state.update(best_val_loss=start_loss, best_val_psnr=start_psnr, best_epoch=0)
        emit(Baseline(start_loss, start_psnr, noisy_psnr))
    stopped_early = patience_spent() and state["epoch"] < config.epochs
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if stopped_early:
            break
        t0 = time.perf_counter()
        den.train()
        # Dropout-like layers draw from torch's generator: re-seed it per epoch so that a
        # resumed run matches an uninterrupted one without storing generator state.
        torch.manual_seed(int(np.random.SeedSequence(
            [config.seed, dctx.rank, epoch]).generate_state(1)[0]))
        # Losses are summed on the device and read back only at log points: a .item() per
        # iteration would stall the GPU pipeline.
        running = torch.zeros((), dtype=torch.float64, device=device)
        total = torch.zeros((), dtype=torch.float64, device=device)
        clipped = torch.zeros((), dtype=torch.int64, device=device)
        n_run = 0
        for it, batch in enumerate(_batches(sampler, config, dctx.rank, epoch), start=1):
            if cancelled():
                raise Cancelled("training cancelled")
            y = _to_device(batch["y"], device, channels_last)
            t = _to_device(batch["t"], device)
            shift = _to_device(batch["shift"], device).view(-1, 1, 1, 1)
            rng_ = _to_device(batch["data_range"], device)
            w = _to_device(batch["w"], device) if "w" in batch else None
            with autocast():
                pred = model(y, shift)
            loss = compute_loss(pred, t, rng_, config.loss, w)
            for group in opt.param_groups:
                group["lr"] = learning_rate(config, epoch, it, budget["spent"])
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)  # the cap is on the true gradient, not the scaled one
                clipped += _clip_gradients(den, config.clip_grad_norm)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                clipped += _clip_gradients(den, config.clip_grad_norm)
                opt.step()
            running += loss.detach()
            total += loss.detach()
            n_run += 1
            if it % config.log_every == 0 or it == config.iters_per_epoch:
                value = float(running) / n_run
                if not math.isfinite(value):
                    # Nothing is written on this path, so earlier files stay as they were.
                    raise MammoDenoiseError(
                        f"training diverged (loss {value}) in epoch {epoch} before iteration "
                        f"{it}; try a lower learning rate")
                emit(TrainStep(epoch, it, config.iters_per_epoch, value))
                running.zero_()
                n_run = 0
            if out_of_time():
                break
        iterations_done = it
        state["patches_seen"] += iterations_done * config.batch_size * dctx.world_size

        val_loss, val_psnr = _validate(den, val, val_idx, val_params, config, device, autocast,
                                       dctx)
        train_loss = float(total) / iterations_done
        if dctx.enabled:
            tl = torch.tensor([train_loss], dtype=torch.float64, device=device)
            dist.all_reduce(tl)
            train_loss = float(tl.item()) / dctx.world_size
        improved = val_loss < state["best_val_loss"]
        if improved:
            state.update(best_val_loss=val_loss, best_val_psnr=val_psnr, best_epoch=epoch,
                         bad_epochs=0)
            best_weights = {k: v.detach().to("cpu").clone() for k, v in den.state_dict().items()}
        else:
            state["bad_epochs"] += 1
        seconds = time.perf_counter() - t0
        state["epoch"] = epoch
        state["time_s"] += seconds
        state["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                 "val_psnr": val_psnr, "seconds": round(seconds, 3),
                                 "clipped_steps": int(clipped)})
        if is_main:
            meta = {"fingerprint": _jsonable(config.fingerprint()), "state": state,
                    "world_size": dctx.world_size,
                    "rng": "per batch: numpy default_rng([seed, tag, rank, epoch, iteration]); "
                           "torch re-seeded per epoch",
                    "scaler": scaler.state_dict() if scaler is not None else None}
            save_checkpoint(ckpt_path, den.state_dict(), opt.state_dict(), _jsonable(meta),
                            best_state=best_weights)
        emit(EpochEnd(epoch, config.epochs, train_loss, val_loss, val_psnr, seconds,
                      noisy_psnr, improved))
        stopped_early = (patience_spent() or out_of_time()) and epoch < config.epochs

    # -- final weights (rank 0) ------------------------------------------------------------------
    if config.init is not None and config.require_improvement and state["best_epoch"] == 0:
        after = min((h["val_loss"] for h in state["history"]), default=float("nan"))
        raise NotImproved(
            f"fine-tuning did not improve on {config.init}: validation loss "
            f"{state['start']['val_loss']:.4f} before, best {after:.4f} after "
            f"{len(state['history'])} epoch{'s' if len(state['history']) != 1 else ''} "
            f"({_validation_words(config, held_out)}); nothing saved, existing models unchanged")
    if best_weights is not None:
        den.load_state_dict(best_weights)
    if config.init is not None or "tvar" in val:
        _, _, state["final"] = _validate(den, val, val_idx, val_params, config, device, autocast,
                                         dctx, details=True)
    if is_main:
        _write_model(den, config, out, state, noisy_psnr, held_out, dctx, device,
                     stopped_early, use_amp, sources)
    if dctx.enabled:
        # Nobody returns (or tears the group down) before rank 0 has written the weights. Only
        # on success: after a failure the peers are not at a barrier, and waiting would hang.
        dist.barrier()
    emit(TrainDone(out, float(state["best_val_psnr"])))
    return out


def _clip_gradients(model, max_norm: float | None) -> torch.Tensor | int:
    """Scale the gradients down to a global L2 norm of ``max_norm`` where they exceed it.

    Returns 1 if they did, else 0, as a tensor on the gradients' device: reading it back each
    step would stall a GPU. Under DDP the gradients are already all-reduced, so every rank
    scales alike.
    """
    if max_norm is None:
        return 0
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return (norm > max_norm).to(torch.int64)


def _batches(sampler: PatchSampler, config: TrainConfig, rank: int, epoch: int):
    n = config.iters_per_epoch
    if config.num_workers <= 0:
        for i in range(n):
            yield sampler.batch(batch_rng(config.seed, rank, epoch, i), config.batch_size)
        return
    loader = torch.utils.data.DataLoader(
        _BatchStream(sampler, config.seed, rank, epoch, n, config.batch_size),
        batch_size=None, num_workers=config.num_workers,
        pin_memory=False,  # _to_device pins on CUDA; pinning numpy dicts here would be a copy more
    )
    for b in loader:
        yield {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in b.items()}


class _BatchStream(torch.utils.data.IterableDataset):
    """Batch ``i`` comes from worker ``i % num_workers``; the DataLoader interleaves workers
    round-robin, so the batch order (and content) is the same for any number of workers."""

    def __init__(self, sampler, seed, rank, epoch, n, batch_size):
        super().__init__()
        self.sampler, self.seed, self.rank, self.epoch = sampler, seed, rank, epoch
        self.n, self.batch_size = n, batch_size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in range(wid, self.n, nw):
            yield self.sampler.batch(batch_rng(self.seed, self.rank, self.epoch, i), self.batch_size)


def _validation_words(config, held_out: bool) -> str:
    where = "held-out images" if held_out else "the training images with fixed noise"
    if config.objective == "noisier2noise":
        return f"noisier2noise-corrected MSE on {where}, the same noise draws"
    return f"{config.loss} on {where}, the same noise draws"


def _gat_psnr(mse: float, val) -> float:
    """PSNR in the GAT domain from an (estimated) MSE: each patch's clean range at its dose."""
    r2 = float(np.mean(np.asarray(val["data_range"], np.float64) ** 2))
    return 10.0 * math.log10(r2 / max(mse, 1e-6))


@torch.no_grad()
def _validate(den, val, idx, params, config, device, autocast, dctx, details: bool = False):
    """Mean loss and PSNR over the validation patches; with ``details`` also a dict of the
    noise-only checks (no truth needed): the residual ``y - prediction`` in GAT units, its
    variance and neighbour correlation, and with the noisier2noise objective the estimated
    true MSE (corrected MSE minus the target's own noise variance)."""
    import torch.distributed as dist

    den.eval()
    loss_sum = 0.0
    psnr_sum = 0.0
    sums = np.zeros(5)  # squared error to t, tvar, residual var, residual neighbour products x, y
    bs = max(config.batch_size, 1)
    no_truth = "tvar" in val
    for start in range(0, len(idx), bs):
        sel = idx[start:start + bs]
        y = _to_device(val["y"][sel], device)
        t = _to_device(val["t"][sel], device)
        shift = _to_device(val["shift"][sel], device).view(-1, 1, 1, 1)
        with autocast():
            pred = den.denoise_anscombe(y, shift)
        w = _to_device(val["w"][sel], device) if "w" in val else None
        loss_sum += float(compute_loss(pred, t, _to_device(val["data_range"][sel], device),
                                       config.loss, w)) * len(sel)
        pred_np = pred.float().cpu().numpy()[:, 0]
        if no_truth or details:
            err = (pred_np - val["t"][sel][:, 0]).astype(np.float64)
            res = (val["y"][sel][:, 0] - pred_np).astype(np.float64)
            res -= res.mean(axis=(1, 2), keepdims=True)
            sums += [float(np.mean(err ** 2, axis=(1, 2)).sum()),
                     float(np.sum(val["tvar"][sel])) if no_truth else 0.0,
                     float(np.mean(res ** 2, axis=(1, 2)).sum()),
                     float(np.mean(res[:, :, 1:] * res[:, :, :-1], axis=(1, 2)).sum()),
                     float(np.mean(res[:, 1:] * res[:, :-1], axis=(1, 2)).sum())]
        if not no_truth:
            sub = {k: val[k][sel] for k in ("target_dn", "range_dn", "source")}
            psnr_sum += _psnr_dn(pred_np, sub, params, config.noise_model, is_dn=False) * len(sel)
    den.train()
    totals = torch.tensor([loss_sum, psnr_sum, float(len(idx)), *sums], dtype=torch.float64,
                          device=device)
    if dctx.enabled:
        dist.all_reduce(totals)
    tot = totals.cpu().numpy()
    n = max(float(tot[2]), 1.0)
    mse, tv, rv, rx, ry = (float(v) / n for v in tot[3:])
    psnr = _gat_psnr(mse - tv, val) if no_truth else float(tot[1]) / n
    if not details:
        return float(tot[0]) / n, psnr
    info = {"residual_variance_gat": rv,
            "residual_neighbour_correlation": 0.5 * (rx + ry) / max(rv, 1e-12)}
    if no_truth:
        info.update(corrected_mse=mse, target_noise_variance=tv, estimated_mse_gat=mse - tv)
    return float(tot[0]) / n, psnr, info


def _psnr_dn(values, val, params, noise_model, is_dn: bool) -> float:
    """Mean PSNR (dB) of patches against the noise-free target in DN (0..255 for the seed's
    Gaussian+salt-and-pepper model: 0..1), with the source image's target range as data range."""
    from mammo_denoise.physics.anscombe import inverse_anscombe

    vals = []
    for k in range(len(values)):
        v = np.asarray(values[k], np.float64)
        if not is_dn and noise_model != GS:
            v = inverse_anscombe(v, params[int(val["source"][k])], method="exact")
        mse = float(np.mean((v - val["target_dn"][k]) ** 2))
        rng_ = float(val["range_dn"][k])
        vals.append(10.0 * math.log10(rng_ * rng_ / max(mse, 1e-20)))
    return float(np.mean(vals)) if vals else float("nan")


def _phantom_detector() -> dict:
    """The detector the training phantoms were simulated with (make_phantom's defaults), so a
    card says which gain, offset and electronic noise the model has seen."""
    import inspect

    from mammo_denoise.physics.phantom import make_phantom

    keys = ("pixel_mm", "photons", "gain", "offset", "electronic_sigma", "energy_kev", "thickness_mm",
            "blur_sigma_px", "bits")
    params = inspect.signature(make_phantom).parameters
    return {k: params[k].default for k in keys}


def _anatomy_record(config) -> dict:
    """What the card says about film anatomy: which films, how mapped, how split, and the licence."""
    from mammo_denoise.physics import anatomy

    films = {split: [p.stem.lower() for p, _ in anatomy.film_paths(config.anatomy, split=split)]
             for split in ("train", "val")}
    return {
        "source": "mini-MIAS (Suckling et al. 1994): screen-film MLO mammograms, 200 um, 8 bit",
        "licence": "MIAS research-use-only licence: weights trained on it are for research use",
        "folder": config.anatomy.name,
        "train_films": len(films["train"]), "val_films": len(films["val"]),
        "train_women": len({(int(r[3:]) + 1) // 2 for r in films["train"]}),
        "val_refs": films["val"],
        "split": "by woman (mdb 2k-1, 2k = woman k): k % 5 == 0 test, never read; "
                 "k % 5 == 1 validation; the rest training",
        "mapping": "q = q_max * exp(-ln(q_max/q_min) v), v the film value normalised to the "
                   "breast's 1st-99th percentiles, clipped at -1 (physics/anatomy.py)",
        "detector": _jsonable(ANATOMY_DETECTOR),
        "patch_fraction": config.anatomy_fraction if config.phantoms or config.paths
        or config.images else 1.0,
    }


_OBJECTIVE_CARD = {
    "supervised": "supervised: noise-free images (phantoms, film anatomy) against their truth",
    "noisier2noise": "noisier2noise: real images without clean truth; input the simulated lower "
                     "dose, target the full-dose image at that dose corrected per pixel, "
                     "t' = (t - rho y)/(1 - rho), E[t'|y] = E[clean|y] (Moran et al. 2020; "
                     "PHYSICS.md section 7); added noise with the measured detector correlation",
    "seed": "seed: the first seed's protocol (Eckert et al. 2019), target = the full-dose image "
            "at the simulated dose; the network keeps a fraction d of the input's noise variance",
}


def _real_record(sources) -> dict | None:
    """The card's account of the real (noisy, truth-less) images: how many, their sizes, and the
    detector measured from them (noise parameters, noise variance and correlation in GAT units)."""
    real = [s for s in sources if s.kind == "real"]
    if not real:
        return None
    rec = {
        "count": len(real),
        "sizes": [list(s.clean.shape) for s in real],
        "noise_params": [{"offset": round(float(s.params.offset), 3), "gain": round(float(s.params.gain), 5),
                          "electronic_sigma": round(float(s.params.electronic_sigma), 3)} for s in real],
    }
    measured = [s.measured for s in real if s.measured is not None]
    if measured:
        from mammo_denoise.physics.correlation import pooled

        rec["noise_measured"] = pooled(measured).as_dict()
        rec["noise_measured_per_image"] = [{k: v for k, v in m.as_dict().items() if k != "model"}
                                           for m in measured]
        used = real[0].noise
        rec["noise_used"] = ("white (neighbour correlation below 0.15, or fewer than 200000 pixels "
                             "to measure it on)" if used is None or used.white
                             else {"neighbour_correlation_x": round(used.rho_x, 4),
                                   "neighbour_correlation_y": round(used.rho_y, 4),
                                   "variance_gat": [round(s.noise.variance, 4) for s in real]})
    return rec


def _validation_record(config, state, held_out) -> dict | None:
    """Start model against the fine-tuned one on the same validation patches (noise-only checks)."""
    if "final" not in state:
        return None
    rec = {"measured_on": _validation_words(config, held_out),
           "fine_tuned": {"val_loss": state["best_val_loss"], "val_psnr": state["best_val_psnr"],
                          **state["final"]}}
    if "start" in state:
        rec["start"] = state["start"]
        rec["improved"] = bool(state["best_val_loss"] < state["start"]["val_loss"])
        rec["saved_only_if_improved"] = bool(config.require_improvement)
    if config.objective == "noisier2noise":
        rec["val_psnr"] = ("estimated without truth in the GAT domain: 10 log10(range^2 / "
                           "(corrected MSE - target noise variance))")
    return rec


def _write_model(den, config, out, state, noisy_psnr, held_out, dctx, device,
                 stopped_early, use_amp, sources=()):
    from mammo_denoise.models import save_model

    lo, hi = config.doses
    data = {
        "phantoms": config.phantoms,
        "phantom_shape": list(config.phantom_shape) if config.phantoms else None,
        "phantom_detector": _phantom_detector() if config.phantoms else None,
        # File names only: folder names of clinical data can carry patient details.
        "files": [Path(p).name for p in config.paths],
        **({"files_noise_params": "given: " + str(config.detector) if config.detector
            else "estimated per image"} if config.paths else {}),
        "images": len(config.images),
        "validation": "held-out images" if held_out else "training images, fixed noise",
        "dose": config.dose if config.dose_range is None else None,
        "dose_range": list(config.dose_range) if config.dose_range else None,
        "noise_model": config.noise_model,
        **({"dose_distribution": config.dose_distribution}
           if config.dose_distribution != "uniform" else {}),
        **({"anatomy": _anatomy_record(config)} if config.anatomy else {}),
    }
    real = _real_record(sources)
    if real:
        data["real"] = real
    training = {
        "objective": config.objective,
        "objective_chosen": "automatically from the data" if getattr(config, "objective_auto", False)
        else "given",
        "objective_description": _OBJECTIVE_CARD[config.objective],
        "data": data,
        "command": config.command if config.command else " ".join(sys.argv),
        "init": None if config.init is None else str(config.init),
        "epochs": state["epoch"],
        "patch": config.patch,
        "batch_size": config.batch_size,
        "world_size": dctx.world_size,
        "lr": config.lr,
        "lr_schedule": config.lr_schedule,
        "time_budget_s": config.time_budget_s,
        "loss": config.loss,
        "calc_weight": config.calc_weight,
        "boundary_fraction": config.boundary_fraction,
        "seed": config.seed,
        "time_s": round(state["time_s"], 1),
        "device": str(device),
        "amp": use_amp,
        "clip_grad_norm": config.clip_grad_norm,
        "patches_seen": state["patches_seen"],
        "history": state["history"],
    }
    if config.init is not None:
        training = _with_lineage(training, den.card.get("training"))
    metrics = {
        "val_psnr": state["best_val_psnr"],
        "val_loss": state["best_val_loss"],
        "val_psnr_noisy": noisy_psnr,
        "best_epoch": state["best_epoch"],
        "stopped_early": bool(stopped_early),
    }
    validation = _validation_record(config, state, held_out)
    if validation:
        metrics["validation"] = validation
    card_den = den.to("cpu")
    save_model(
        card_den, out,
        noise_model=config.noise_model,
        dose_range=None if config.noise_model == GS else [lo, hi],
        training=_jsonable(training),
        metrics=_jsonable(metrics),
    )
    den.to(device)


def _with_lineage(training: dict, init_training: dict | None) -> dict:
    """``training`` with ``stages``: the runs that made the init model, oldest first, then this one.

    A fine-tuned model's card then still says what the model it started from was trained on
    and how. ``time_s`` and ``patches_seen`` become the totals over the stages (what the weights
    cost); each stage keeps its own, without its per-epoch history.
    """
    if not isinstance(init_training, dict) or not init_training:
        return training
    earlier = init_training.get("stages") or [
        {"stage": 1, **{k: v for k, v in init_training.items() if k != "history"}}]
    this = {k: v for k, v in training.items() if k != "history"}
    stages = [*earlier, {"stage": len(earlier) + 1, **this}]
    return {**training, "stages": stages,
            "time_s": round(sum(float(s.get("time_s") or 0.0) for s in stages), 1),
            "patches_seen": sum(int(s.get("patches_seen") or 0) for s in stages)}


def _fingerprint_differences(saved: dict, now: dict) -> list[str]:
    """``"name: checkpoint X, now Y"`` for each setting a resume would change."""
    return [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}"
            for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]


def _jsonable(obj):
    """Plain JSON types (tuples -> lists, numpy scalars -> float/int, inf/nan kept as float)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


# ----------------------------------------------------------------------------- spawn
@dataclass
class _RankFailed:
    """A rank's own error (NotImproved, a bad image...), sent to the parent so that it raises
    that error with its words rather than a generic failure with a child's traceback."""

    error: MammoDenoiseError


def _spawn_entry(rank, world_size, init_method, config, queue, stop_event):
    import torch.distributed as dist

    device = _pick_device(config.device, rank, distributed=True, local_world=world_size)
    if device.type == "cpu":
        # The ranks share the machine's cores; oversubscription slows every rank down.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    else:
        torch.cuda.set_device(device)
    dist.init_process_group(_backend_for(device), init_method=init_method, rank=rank,
                            world_size=world_size)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    dctx = _Dist(rank, world_size, rank, owns_group=True)
    try:
        _run(config, queue.put if rank == 0 else None, stop_event.is_set, dctx)
    except MammoDenoiseError as exc:
        queue.put(_RankFailed(exc))
        raise
    finally:
        dist.destroy_process_group()


def _spawn(config, progress, cancel, world_size) -> Path:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    stop = ctx.Event()
    tmpdir = tempfile.mkdtemp(prefix="mammo-ddp-")
    init_method = f"file://{Path(tmpdir, 'rendezvous').as_posix()}"

    failures: list[MammoDenoiseError] = []

    def drain(wait: float = 0.0):
        while True:
            try:
                msg = queue.get(timeout=wait) if wait else queue.get_nowait()
            except Exception:
                return
            if isinstance(msg, _RankFailed):
                failures.append(msg.error)
            elif progress is not None:
                progress(msg)

    pc = mp.start_processes(_spawn_entry, args=(world_size, init_method, config, queue, stop),
                            nprocs=world_size, join=False, start_method="spawn")
    try:
        while True:
            try:
                done = pc.join(timeout=0.2)
            except Exception as exc:  # a rank failed; the others were terminated by join()
                drain(wait=1.0)  # a dying rank's last put may still be in its queue's pipe
                if stop.is_set():
                    raise Cancelled("training cancelled") from None
                if failures:
                    raise failures[0] from None
                text = str(exc).strip().splitlines()
                raise MammoDenoiseError(
                    f"distributed training failed: {text[-1] if text else exc}") from exc
            drain()
            if done:
                break
            if cancel is not None and not stop.is_set() and cancel():
                stop.set()
    finally:
        for p in pc.processes:
            if p.is_alive():
                p.terminate()
        shutil.rmtree(tmpdir, ignore_errors=True)
    # A cancel() that came after the ranks' last iteration is not seen, as in one process: the
    # run completed and its weights are written.
    return config.resolved_out()
