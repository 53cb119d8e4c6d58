"""CPU engines for the network's forward pass on a batch of tiles.

Everything around the network (tiling, the Anscombe transform, the ``Denoiser``'s input scale,
high-pass, alignment padding and residual, the blend, the safeguard) stays in ``inference`` and
``models.denoiser``; an engine only replaces ``denoiser.net(x)`` for an aligned float32 batch
``(B, 1, H, W)``. So every engine sees the same tiles and the outputs agree to float rounding
(tests/test_engines.py: within 1e-5 of the data range).

- ``torch``: PyTorch eager, always available; the only engine on CUDA and MPS.
- ``openvino``: the net converted with ``openvino.convert_model`` (dynamic batch, height and
  width), float32 inference (``INFERENCE_PRECISION_HINT`` f32: never bf16/fp16).
  ``pip install "napari-mammo-denoise[cpu-fast]"`` installs it.
- ``onnxruntime``: the net exported with ``torch.onnx.export`` (TorchScript exporter, opset 17,
  dynamic batch, height and width), run by ONNX Runtime's CPU provider.

The converted graph is built from the weights the ``Denoiser`` holds (the safetensors weights
it was loaded from, or a fine-tuned net in memory) and cached in the user cache directory
(``platformdirs.user_cache_dir``, or ``$MAMMO_DENOISE_CACHE_DIR``) under a key that hashes the
architecture, its options and every weight tensor, the engine's and torch's versions: a
fine-tuned model gets its own entry. OpenVINO IR (.xml + .bin) and ONNX are graphs plus raw
tensors; nothing is pickled. An entry is written to a temporary folder and renamed into place
(atomic); an unwritable cache converts in memory, a damaged entry is converted again and replaced.
The newest ``CACHE_KEEP`` entries per engine are kept. Converted engines are also kept in memory
for the process (the last few models).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from mammo_denoise.errors import MammoDenoiseError

ENGINES = ("auto", "torch", "openvino", "onnxruntime")
#: What ``"auto"`` picks on the CPU, first installed wins. OpenVINO first: on this project's
#: 2-core CPU (benchmarks/speed.py, 2026-12-05) the default U-Net's 900x920 tile ran 1.70x
#: faster than torch eager channels_last when the machine was idle (96 % of the matmul peak),
#: ONNX Runtime 1.55x (87 %), torch.compile 1.04x; under a load of 3-6 OpenVINO stayed ahead
#: (tile 2.1-2.4x, ONNX Runtime 1.8-2.2x; full field 1.5-2.5x torch). The cpu-fast extra
#: installs OpenVINO alone: fastest, and it needs no ONNX exporter.
AUTO_ORDER = ("openvino", "onnxruntime")
#: The packages each engine needs (torch's ONNX exporter needs ``onnx``), and how to get them.
REQUIRES = {"openvino": ("openvino",), "onnxruntime": ("onnxruntime", "onnx")}
INSTALL_HINT = {
    "openvino": 'pip install "napari-mammo-denoise[cpu-fast]"',
    "onnxruntime": "pip install onnxruntime onnx",
}
ENV_CACHE_DIR = "MAMMO_DENOISE_CACHE_DIR"
#: Bump when the exported graph changes for the same weights (cache entries then rebuild).
EXPORT_VERSION = 1
_MEMO_SIZE = 4
#: Entries kept per engine in the cache (the newest; every fine-tuned model adds one).
CACHE_KEEP = 16


def _module(name: str):
    """The engine's package, or None when it is not installed (or fails to import)."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install is as good as none: torch still works
        return None


def is_installed(engine: str) -> bool:
    return engine == "torch" or all(_module(m) is not None for m in REQUIRES[engine])


def installed() -> list[str]:
    """The engines usable on the CPU here, "torch" first."""
    return ["torch"] + [e for e in AUTO_ORDER if is_installed(e)]


def resolve_engine(name: str | None, device) -> str:
    """The engine that ``name`` ("auto", "torch", "openvino", "onnxruntime") means on ``device``
    (a ``torch.device``); a one-line ``MammoDenoiseError`` for an unknown or missing engine."""
    text = "auto" if name is None else str(name).strip().lower()
    if text not in ENGINES:
        raise MammoDenoiseError(f"unknown engine {name!r}; use one of: {', '.join(ENGINES)}")
    dev = torch.device(device)
    if text in ("auto", "torch"):
        if text == "torch" or dev.type != "cpu":
            return "torch"
        return next((e for e in AUTO_ORDER if is_installed(e)), "torch")
    if dev.type != "cpu":
        raise MammoDenoiseError(f"engine {text!r} runs on the CPU only, not on {dev.type!r}; "
                                "use device 'cpu' or engine 'torch'")
    if not is_installed(text):
        raise MammoDenoiseError(f"engine {text!r} is not installed: {INSTALL_HINT[text]}")
    return text


# ----------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """Where converted graphs are kept: ``$MAMMO_DENOISE_CACHE_DIR`` or the platform cache dir."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-mammo-denoise", appauthor=False)) / "engines"


def weights_key(net: torch.nn.Module, card: dict, engine: str) -> str:
    """Hash of what the converted graph depends on: architecture and options, every weight
    tensor's name, dtype, shape and bytes, the engine's and torch's versions."""
    h = hashlib.sha256()
    mod = _module(engine)
    head = {"export": EXPORT_VERSION, "engine": engine, "engine_version": getattr(mod, "__version__", ""),
            "torch": torch.__version__, "architecture": card.get("architecture"),
            "arch_kwargs": card.get("arch_kwargs") or {}}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    for k, v in sorted(net.state_dict().items()):
        t = v.detach().to("cpu").contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, raw bytes
    return h.hexdigest()[:20]


def _entry(engine: str, card: dict, key: str) -> Path:
    arch = "".join(c for c in str(card.get("architecture") or "net") if c.isalnum() or c in "-_")
    return cache_dir() / engine / f"{arch}-{key}"


def _store(entry: Path, write) -> bool:
    """``write(folder)`` into a temporary folder beside ``entry``, then rename it into place.
    False when the cache can't be written (read-only, full, ...): the caller goes on in memory."""
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        write(tmp)
        os.replace(tmp, entry)  # atomic; fails if another process put the entry there first
        tmp = None
    except OSError:
        return entry.is_dir()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    _prune(entry.parent, keep=CACHE_KEEP)
    return True


def _prune(folder: Path, keep: int) -> None:
    """Remove all but the ``keep`` newest entries (best effort: a loaded graph lives in memory)."""
    try:
        entries = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _quiet():
    """No exporter warnings (TracerWarning, deprecations) reach the user. The exporters print
    nothing (tested); sys.stdout is left alone, so other threads' prints are not lost."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _example(net: torch.nn.Module) -> torch.Tensor:
    a = int(getattr(net, "alignment", 1))
    side = a * max(2, -(-64 // a))  # aligned, so the traced graph has no padding branch
    p = next(net.parameters())
    return torch.zeros(1, 1, side, side, dtype=torch.float32, device=p.device)


# ----------------------------------------------------------------------------- engines
class TorchEngine:
    """The network itself, eager."""

    name = "torch"

    def __init__(self, net: torch.nn.Module):
        self.net = net

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def release(self) -> None:
        pass


class _NumpyEngine:
    """Runs a converted graph on the batch as a contiguous float32 array; one call at a time."""

    name = ""

    def __init__(self):
        self._lock = threading.Lock()
        self.from_cache = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = np.ascontiguousarray(x.detach().to("cpu").numpy(), dtype=np.float32)
        with self._lock:
            y = self._run(a)
        return torch.from_numpy(y).to(x.device)

    def release(self) -> None:
        """Free the memory held for the activations (until the next call), e.g. before the
        safeguard, so that the two peaks do not add up."""


def _from_cache(entry: Path, load):
    """``load(entry)``, or None when there is no entry or it is damaged (then removed, so that
    the fresh conversion can take its place)."""
    if not entry.is_dir():
        return None
    try:
        with _quiet():
            return load(entry)
    except Exception:  # noqa: BLE001 - truncated or foreign files: convert again
        shutil.rmtree(entry, ignore_errors=True)
        return None


class OpenVINOEngine(_NumpyEngine):
    name = "openvino"

    def __init__(self, net: torch.nn.Module, card: dict, threads: int, key: str):
        super().__init__()
        ov = importlib.import_module("openvino")
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "f32"}  # never bf16, which this CPU would pick
        entry = _entry(self.name, card, key)

        def load(e):
            model = core.read_model(str(e / "model.xml"))
            return model, core.compile_model(model, "CPU", config)

        self._model, compiled = _from_cache(entry, load) or (None, None)
        self.from_cache = compiled is not None
        if compiled is None:
            with _quiet(), torch.no_grad():
                # share_weights=False: the graph owns a copy, whatever later happens to the net's
                # tensors (fine-tuning in place, a change of memory layout)
                self._model = ov.convert_model(net, example_input=_example(net), share_weights=False,
                                               input=[ov.PartialShape([-1, 1, -1, -1])])
                compiled = core.compile_model(self._model, "CPU", config)
            # compress_to_fp16=False: save_model halves the weights' precision by default.
            _store(entry, lambda d: ov.save_model(self._model, str(d / "model.xml"), compress_to_fp16=False))
        self._compile = lambda: core.compile_model(self._model, "CPU", config).create_infer_request()
        self._request = compiled.create_infer_request()

    def _run(self, a: np.ndarray) -> np.ndarray:
        if self._request is None:
            self._request = self._compile()  # ~0.05 s for the default U-Net
        return np.array(self._request.infer({0: a}, share_inputs=True)[0], dtype=np.float32, copy=True)

    def release(self) -> None:
        # The compiled model keeps the largest tile's activations (~240 MB for a 1024-class tile
        # of the default U-Net) until it is deleted; the graph itself stays.
        with self._lock:
            self._request = None


class OnnxRuntimeEngine(_NumpyEngine):
    name = "onnxruntime"

    def __init__(self, net: torch.nn.Module, card: dict, threads: int, key: str):
        super().__init__()
        ort = importlib.import_module("onnxruntime")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only: no warnings printed to the terminal
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No memory arena: with tiles of several sizes it kept ~2x PyTorch's peak memory on a full
        # field (+882 MB against +424 MB, benchmarks/speed.py), and memory must stay flat.
        so.enable_cpu_mem_arena = False

        def session(data: bytes):
            return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])

        entry = _entry(self.name, card, key)
        self._session = _from_cache(entry, lambda e: session((e / "model.onnx").read_bytes()))
        self.from_cache = self._session is not None
        if self._session is None:
            data = _onnx_bytes(net)
            self._session = session(data)
            _store(entry, lambda d: (d / "model.onnx").write_bytes(data))

    def _run(self, a: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"x": a})[0]


def _onnx_bytes(net: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    axes = {0: "b", 2: "h", 3: "w"}
    with _quiet(), torch.no_grad():
        torch.onnx.export(net, (_example(net),), buf, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": axes, "y": axes}, opset_version=17, dynamo=False)
    return buf.getvalue()


_CLASSES = {"openvino": OpenVINOEngine, "onnxruntime": OnnxRuntimeEngine}
_memo: OrderedDict = OrderedDict()
_memo_lock = threading.Lock()


def load_engine(name: str, net: torch.nn.Module, card: dict, threads: int):
    """A callable ``engine(x) -> net(x)`` for a resolved engine name (``resolve_engine``), with
    ``.name``; ``net`` must be in eval mode on the CPU. Conversion failures raise a one-line
    ``MammoDenoiseError``."""
    if name == "torch":
        return TorchEngine(net)
    weights = weights_key(net, card, name)  # hashes every weight: once per call
    key = (name, weights, int(threads))
    with _memo_lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    try:
        engine = _CLASSES[name](net, card, threads, weights)
    except MammoDenoiseError:
        raise
    except Exception as exc:  # noqa: BLE001 - say it in one line; the caller may fall back
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MammoDenoiseError(f"engine {name!r} could not convert model "
                                f"{card.get('name', card.get('architecture', ''))!r}: {first}") from None
    with _memo_lock:
        _memo[key] = engine
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)
    return engine
