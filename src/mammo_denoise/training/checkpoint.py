"""Training checkpoints without pickle: one safetensors file, scalars as JSON in its header.

Keeping the JSON inside the safetensors metadata (rather than a second file) makes a checkpoint
a single file, so one ``os.replace`` publishes it atomically and a crash can never pair new
weights with old optimizer scalars.

Layout: ``model/<key>``, ``best/<key>`` (the best weights so far, for early stopping) and
``optim/<param index>/<state key>`` tensors; the metadata key ``"checkpoint"`` holds JSON with
the Adam ``param_groups``, non-tensor optimizer state, the epoch counter and loop state.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from mammo_denoise.errors import MammoDenoiseError

FORMAT = "mammo-denoise-checkpoint/1"


def _cpu(t: torch.Tensor) -> torch.Tensor:
    # safetensors refuses shared or non-contiguous storage; a private copy is always accepted.
    return t.detach().to("cpu").contiguous().clone()


def save_checkpoint(path: Path, model_state: dict, optim_state: dict, meta: dict,
                    best_state: dict | None = None) -> Path:
    from safetensors.torch import save

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model_state.items():
        tensors[f"model/{k}"] = _cpu(v)
    for k, v in (best_state or {}).items():
        tensors[f"best/{k}"] = _cpu(v)
    scalars: dict[str, dict] = {}
    for pid, state in optim_state["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{key}"] = _cpu(value)
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in optim_state["param_groups"]]
    header = dict(meta, optim_param_groups=groups, optim_scalars=scalars,
                  has_best=best_state is not None)
    data = save(tensors, metadata={"format": FORMAT, "checkpoint": json.dumps(header)})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: Path, device="cpu"):
    """Returns ``(model_state, optim_state, meta, best_state or None)``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MammoDenoiseError("no training checkpoint to resume from", path=path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            md = f.metadata() or {}
            if md.get("format") != FORMAT:
                raise MammoDenoiseError("not a mammo-denoise training checkpoint", path=path)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except MammoDenoiseError:
        raise
    except Exception as exc:  # safetensors raises its own types for truncated/corrupt files
        raise MammoDenoiseError(f"unreadable training checkpoint ({exc})", path=path) from exc
    meta = json.loads(md["checkpoint"])
    model, best, state = {}, {}, {}
    for k, v in tensors.items():
        kind, _, rest = k.partition("/")
        if kind == "model":
            model[rest] = v
        elif kind == "best":
            best[rest] = v
        elif kind == "optim":
            pid, _, key = rest.partition("/")
            state.setdefault(int(pid), {})[key] = v
    for pid, values in meta.pop("optim_scalars").items():
        state.setdefault(int(pid), {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
              for g in meta.pop("optim_param_groups")]
    has_best = meta.pop("has_best")
    return model, {"state": state, "param_groups": groups}, meta, (best if has_best else None)
