"""Which torch device a name means, checked: the one place inference, training and model
loading ask (a module of its own, so that models need not import inference)."""

from __future__ import annotations

import torch

from mammo_denoise.errors import MammoDenoiseError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``."""
    if isinstance(device, torch.device):
        kind, dev = device.type, device
    else:
        text = "auto" if device is None else str(device).strip().lower()
        if text == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if _mps_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            dev = torch.device(text)
        except RuntimeError:
            raise MammoDenoiseError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'mps'") from None
        kind = dev.type
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise MammoDenoiseError("device 'cuda' was requested but no CUDA GPU is available "
                                    "(this torch build or machine has none); use device='auto' or 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MammoDenoiseError(f"device {str(dev)!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s)")
    elif kind == "mps":
        if not _mps_available():
            raise MammoDenoiseError("device 'mps' was requested but Apple Metal (MPS) is not available; "
                                    "use device='auto' or 'cpu'")
    elif kind != "cpu":
        raise MammoDenoiseError(f"unsupported device {str(dev)!r}; use 'auto', 'cpu', 'cuda' or 'mps'")
    return dev


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())
