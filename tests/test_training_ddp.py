"""Distributed training on CPU (gloo): two ranks, identical parameters, one set of weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


SCRIPT = textwrap.dedent('''
    import hashlib, os, sys
    from pathlib import Path
    import torch
    import mammo_denoise.training.loop as loop
    from mammo_denoise.training import TrainConfig, train

    out_dir = Path(sys.argv[1])
    held = {}
    make = loop._make_model

    def keep(config):  # hold on to this rank's network to fingerprint it after training
        held["den"] = make(config)
        return held["den"]

    loop._make_model = keep
    cfg = TrainConfig(phantoms=3, phantom_shape=(64, 64), arch_kwargs={"base": 4, "depth": 2},
                      patch=16, batch_size=2, epochs=2, iters_per_epoch=3, val_patches=4,
                      seed=11, device="cpu", out=out_dir / "ddp.safetensors", command="ddp test")
    path = train(cfg)
    flat = torch.cat([p.detach().flatten() for p in held["den"].net.parameters()])
    digest = hashlib.sha256(flat.numpy().tobytes()).hexdigest()
    (out_dir / f"rank{os.environ['RANK']}.txt").write_text(f"{digest} {path}")
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_two_cpu_ranks(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def _digest_of_saved(path: Path) -> str:
    import hashlib

    import torch

    from mammo_denoise.models import load_model

    den = load_model(path)
    flat = torch.cat([p.detach().flatten() for p in den.net.parameters()])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


def test_torchrun_two_cpu_ranks_end_identical_and_write_once(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    t0 = time.monotonic()
    proc = _torchrun_two_cpu_ranks(str(script), str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.monotonic() - t0 < 240
    r0 = (tmp_path / "rank0.txt").read_text().split()
    r1 = (tmp_path / "rank1.txt").read_text().split()
    assert r0[0] == r1[0]  # DDP averaged the gradients: both ranks hold the same network
    weights = tmp_path / "ddp.safetensors"
    assert Path(r0[1]) == Path(r1[1]) == weights and weights.is_file()
    assert _digest_of_saved(weights) == r0[0]  # rank 0 wrote the (best) weights it trained
    card = json.loads(weights.with_suffix(".json").read_text())
    tr = card["training"]
    assert tr["world_size"] == 2
    assert tr["patches_seen"] == 2 * 3 * 2 * 2  # epochs * iterations * batch * ranks
    # Only rank 0 writes: one model, one card, one checkpoint, no stray temporary files.
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("rank"))
    assert names == ["ddp.ckpt", "ddp.json", "ddp.safetensors", "ddp_train.py"]


def test_world_size_argument_spawns_ranks_and_forwards_progress(tmp_path):
    from mammo_denoise.training import EpochEnd, TrainConfig, TrainDone, train

    cfg = TrainConfig(phantoms=3, phantom_shape=(64, 64), arch_kwargs={"base": 4, "depth": 2},
                      patch=16, batch_size=2, epochs=1, iters_per_epoch=2, val_patches=4,
                      seed=12, device="cpu", out=tmp_path / "spawned.safetensors", command="spawn test")
    msgs = []
    path = train(cfg, progress=msgs.append, world_size=2)
    assert path == cfg.out and path.is_file()
    assert any(isinstance(m, EpochEnd) for m in msgs)
    assert isinstance(msgs[-1], TrainDone)
    assert json.loads(path.with_suffix(".json").read_text())["training"]["world_size"] == 2


def test_the_train_command_runs_under_torchrun_and_speaks_once(tmp_path):
    # The README's multi-GPU recipe, on two CPU ranks: one model trained by both, one log.
    proc = _torchrun_two_cpu_ranks(
        "-m", "mammo_denoise.cli", "train", "--out", str(tmp_path / "cli.safetensors"),
        "--phantoms", "3", "--phantom-size", "64x64", "--patch", "16", "--batch-size", "2",
        "--epochs", "2", "--iters-per-epoch", "2", "--arch-option", "base=4",
        "--arch-option", "depth=2", "--seed", "5", "--device", "cpu")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("unet (fresh) on 3 phantoms") for line in lines) == 1
    assert sum(line.startswith("epoch 2/2:") for line in lines) == 1
    card = json.loads((tmp_path / "cli.json").read_text())
    assert card["training"]["world_size"] == 2
    assert card["training"]["patches_seen"] == 2 * 2 * 2 * 2  # epochs * iterations * batch * ranks


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch):
    # NCCL would fail later with "Duplicate GPU detected"; a 1-GPU machine asked for 2 ranks.
    import torch

    from mammo_denoise.errors import MammoDenoiseError
    from mammo_denoise.training.loop import _pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for pref in ("auto", "cuda"):
        with pytest.raises(MammoDenoiseError) as info:
            _pick_device(pref, 1, distributed=True, local_world=2)
        assert str(info.value) == (
            "2 training processes on this machine but 1 CUDA GPU: distributed training needs one "
            "GPU per process; start at most 1 (torchrun --nproc_per_node 1), or train on the CPU "
            "with --device cpu")
    from mammo_denoise.training import TrainConfig, train

    with pytest.raises(MammoDenoiseError, match=r"^2 training processes on this machine but 1 CUDA GPU"):
        train(TrainConfig(phantoms=1, phantom_shape=(64, 64)), world_size=2)  # before any rank starts
    assert _pick_device("auto", 0, distributed=True, local_world=1) == torch.device("cuda", 0)
    assert _pick_device("cuda", 0, distributed=False, local_world=2) == torch.device("cuda", 0)
    assert _pick_device("cpu", 1, distributed=True, local_world=2) == torch.device("cpu")


def test_a_spawned_fine_tune_that_does_not_improve_says_so(tmp_path):
    # Each rank's NotImproved reaches the caller as NotImproved with its words, not as a
    # generic "distributed training failed" (the CLI exits 3 on it, the panel keeps the model).
    from mammo_denoise.training import NotImproved, TrainConfig, train

    small = dict(phantoms=3, phantom_shape=(64, 64), arch_kwargs={"base": 4, "depth": 2}, patch=16,
                 batch_size=2, epochs=1, iters_per_epoch=2, val_patches=4, seed=13, device="cpu")
    base = train(TrainConfig(**small, out=tmp_path / "base.safetensors", command="base"))
    still = tmp_path / "still.safetensors"
    with pytest.raises(NotImproved, match=f"^fine-tuning did not improve on {base}: validation loss"):
        train(TrainConfig(**small, init=base, lr=1e-12, out=still, command="still"), world_size=2)
    assert not still.exists()
