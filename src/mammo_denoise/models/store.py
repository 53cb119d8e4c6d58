"""Weights on disk: ``<name>.safetensors`` plus a JSON model card ``<name>.json`` next to it.

Loading never unpickles: weights are read only through safetensors (a JSON header plus raw
tensor bytes, which cannot run code), and the card's sha256 must match the weights file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.models.denoiser import CARD_VERSION, Denoiser

#: The model ``load_model("default")`` and ``denoise(model="default")`` use.
DEFAULT_MODEL = "mammo-unet"

WEIGHTS_SUFFIX = ".safetensors"
CARD_SUFFIX = ".json"
#: Pickle-based checkpoint formats; refused by suffix before anything reads them.
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar")
ENV_MODEL_DIR = "MAMMO_DENOISE_MODEL_DIR"

REQUIRED_CARD_FIELDS = ("architecture", "arch_kwargs", "residual", "input_scale", "sha256")


@dataclass(frozen=True)
class ModelInfo:
    """One installed model, as listed by the CLI ``models`` command and the napari dropdown."""

    name: str
    source: str  # "shipped" or "user"
    path: Path  # the .safetensors file
    card: dict = field(default_factory=dict, compare=False, repr=False)


def user_model_dir() -> Path:
    """Where user-trained models live: ``$MAMMO_DENOISE_MODEL_DIR`` or the platform data dir."""
    env = os.environ.get(ENV_MODEL_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-mammo-denoise", appauthor=False)) / "models"


def shipped_model_dir() -> Path | None:
    """The package-data folder of shipped weights, or None if it isn't on the file system."""
    try:
        res = resources.files("mammo_denoise.models").joinpath("weights")
    except (ModuleNotFoundError, TypeError):
        return None
    path = Path(str(res))
    return path if path.is_dir() else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_card(card_path: Path) -> dict:
    try:
        text = card_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MammoDenoiseError("model card not found (every .safetensors needs its .json card next to it)",
                                card_path) from None
    except OSError as exc:
        raise MammoDenoiseError(f"cannot read model card ({exc.strerror})", card_path) from None
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MammoDenoiseError(f"model card is not valid JSON ({exc.msg} at line {exc.lineno})", card_path) from None
    if not isinstance(card, dict):
        raise MammoDenoiseError("model card must be a JSON object", card_path)
    return card


def _scan(directory: Path | None, source: str) -> list[ModelInfo]:
    if directory is None or not directory.is_dir():
        return []
    found = []
    for weights in sorted(directory.glob("*" + WEIGHTS_SUFFIX)):
        card_path = weights.with_suffix(CARD_SUFFIX)
        try:
            card = _read_card(card_path)
        except MammoDenoiseError:
            continue  # half-written or foreign file: not offered in menus; load_model explains
        found.append(ModelInfo(name=weights.stem, source=source, path=weights, card=card))
    return found


def macs_per_pixel(net) -> int:
    """Convolution multiply-accumulates per image pixel: what a model costs to run, whatever the
    device (tile overlap adds ~17 % on a full field at the default tile)."""
    from mammo_denoise.models.architectures import count_macs

    side = 64
    return round(count_macs(net, (1, 1, side, side)) / side**2)


def card_summary(card: dict) -> str:
    """One line about a model for a model list: what it was trained on, its dose range, then the
    held-out benchmark numbers when the card has them (else the validation PSNR)."""
    parts = []
    if card.get("macs_per_pixel"):
        parts.append(f"{_thousands(card['macs_per_pixel'])} MAC/pixel")
    training = card.get("training") or {}
    # A fine-tuned model's card lists every run that made it (``stages``, oldest first): the
    # data is all of theirs, and only a first stage that started from elsewhere has an init.
    stages = training.get("stages") or [training]
    datas = [s.get("data") or {} for s in stages]
    phantoms = any(d.get("phantoms") for d in datas)
    files = {f for d in datas for f in (d.get("files") or [])}
    n_images = len(files) + sum(int(d.get("images") or 0) for d in datas)
    anatomy = next((d["anatomy"] for d in datas if d.get("anatomy")), None)
    seen = ([f"mini-MIAS anatomy ({anatomy.get('train_women')} women, research use only)"] if anatomy else []) \
        + (["synthetic phantoms"] if phantoms else []) + ([f"{n_images} images"] if n_images else [])
    if seen == ["synthetic phantoms"]:
        parts.append("trained on synthetic phantoms only")
    elif seen:
        parts.append("trained on " + (", ".join(seen[:-1]) + " and " if len(seen) > 1 else "") + seen[-1])
    init = stages[0].get("init")
    if init:
        parts[-1:] = [", ".join(parts[-1:] + [f"from {Path(str(init)).stem}"])]
    if card.get("dose_range"):
        parts.append("dose {:g}-{:g}".format(*card["dose_range"]))
    metrics = card.get("metrics") or {}
    held = metrics.get("held_out")
    if isinstance(held, dict) and held.get("psnr_db") is not None:
        line = f"held-out {held.get('phantoms')} phantoms at dose {held.get('dose'):g}: PSNR {held['psnr_db']:.2f} dB"
        if held.get("bm3d_psnr_db") is not None:
            line += f" (BM3D {held['bm3d_psnr_db']:.2f})"
        if held.get("ssim") is not None:
            line += f", SSIM {held['ssim']:.4f}"
        if held.get("calc_contrast_ratio") is not None:
            line += f", calcification contrast {held['calc_contrast_ratio']:.2f}"
        parts.append(line)
    real = metrics.get("held_out_real_anatomy")
    if isinstance(real, dict) and (real.get("smoothed") or {}).get("psnr_minus_bm3d_db") is not None:
        parts.append(f"held-out women at dose {real.get('dose'):g}: "
                     f"{real['smoothed']['psnr_minus_bm3d_db']:+.2f} dB over BM3D without film grain, "
                     f"{real['film']['psnr_minus_bm3d_db']:+.2f} dB on the film")
    if held is None and real is None and metrics.get("val_psnr") is not None:
        parts.append(f"validation PSNR {metrics['val_psnr']:.1f} dB (noisy {metrics.get('val_psnr_noisy', float('nan')):.1f})")
    return "; ".join(parts)


def _thousands(n: float) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def list_models() -> list[ModelInfo]:
    """Shipped models first, then the user's (``user_model_dir()``), each sorted by name."""
    return _scan(shipped_model_dir(), "shipped") + _scan(user_model_dir(), "user")


def _json_default(obj):
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _atomic_write(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and fsync it; return the temp path."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _weights_bytes(denoiser: Denoiser, metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    # safetensors refuses shared or non-contiguous storage; a CPU clone of each tensor is neither.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in denoiser.net.state_dict().items()}
    return save(state, metadata=metadata)


def save_model(denoiser: Denoiser, path: str | os.PathLike, **card_fields) -> Path:
    """Write ``<path>.safetensors`` and its card ``<path>.json``; return the .safetensors path.

    ``path`` may end in .safetensors or .json or have no suffix, or be an existing folder (the
    file is then named after ``card["name"]``). ``card_fields`` update the denoiser's card
    (e.g. ``training={...}, metrics={...}, dose_range=[0.1, 0.5]``); ``name``, ``created`` and
    ``sha256`` are filled in. Each file is written to a temporary file in the same folder and
    moved into place with ``os.replace``, so a failure while writing leaves the previous files
    untouched. (The two moves are not one atomic step: a crash between them leaves a card whose
    sha256 doesn't match, which ``load_model`` reports instead of loading the wrong weights.)
    """
    if not isinstance(denoiser, Denoiser):
        raise MammoDenoiseError(f"save_model needs a Denoiser, got {type(denoiser).__name__}")
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / (str(card_fields.get("name") or denoiser.name) + WEIGHTS_SUFFIX)
    elif path.suffix.lower() in (WEIGHTS_SUFFIX, CARD_SUFFIX):
        path = path.with_suffix(WEIGHTS_SUFFIX)
    elif path.suffix.lower() in PICKLE_SUFFIXES:
        raise MammoDenoiseError("models are saved as .safetensors (pickle formats are not written)", path)
    else:
        path = path.with_name(path.name + WEIGHTS_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    card_path = path.with_suffix(CARD_SUFFIX)

    card = dict(denoiser.card)
    card.update(card_fields)
    card["name"] = path.stem
    card.setdefault("version", CARD_VERSION)
    card["parameter_count"] = sum(p.numel() for p in denoiser.net.parameters() if p.requires_grad)
    card["macs_per_pixel"] = macs_per_pixel(denoiser.net)
    card["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    data = _weights_bytes(denoiser, {"format": "pt", "architecture": str(card.get("architecture", ""))})
    card["sha256"] = _sha256(data)
    try:
        card_text = json.dumps(card, indent=2, sort_keys=False, default=_json_default) + "\n"
    except TypeError as exc:
        raise MammoDenoiseError(f"model card field is not JSON serialisable: {exc}", card_path) from None

    tmp_weights = tmp_card = None
    try:
        tmp_weights = _atomic_write(path, data)
        tmp_card = _atomic_write(card_path, card_text.encode("utf-8"))
        os.replace(tmp_weights, path)
        tmp_weights = None
        os.replace(tmp_card, card_path)
        tmp_card = None
    finally:
        for tmp in (tmp_weights, tmp_card):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    denoiser.card = card
    return path


def _resolve(name_or_path) -> Path:
    """Map a model name or file path to its .safetensors path (without reading it)."""
    if isinstance(name_or_path, (str, os.PathLike)):
        text = os.fspath(name_or_path)
    else:
        raise MammoDenoiseError(f"model must be a name or a path, got {type(name_or_path).__name__}")
    p = Path(text).expanduser()
    suffix = p.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise MammoDenoiseError(
            "refusing to load a pickle checkpoint: unpickling can run arbitrary code; "
            "only .safetensors weights with a .json model card are loaded", p)
    looks_like_path = isinstance(name_or_path, os.PathLike) or suffix in (WEIGHTS_SUFFIX, CARD_SUFFIX) \
        or os.sep in text or (os.altsep and os.altsep in text)
    if looks_like_path or p.is_file():
        if suffix == CARD_SUFFIX:
            return p.with_suffix(WEIGHTS_SUFFIX)
        if suffix != WEIGHTS_SUFFIX:
            raise MammoDenoiseError("not a model file: expected a .safetensors file (with its .json card)", p)
        return p
    name = DEFAULT_MODEL if text == "default" else text
    for directory in (shipped_model_dir(), user_model_dir()):
        if directory is not None and (directory / (name + WEIGHTS_SUFFIX)).is_file():
            return directory / (name + WEIGHTS_SUFFIX)
    if name == DEFAULT_MODEL:
        raise MammoDenoiseError(
            f"no trained weights for the default model {DEFAULT_MODEL!r} are installed; "
            "train one with `mammo-denoise train` or pass a .safetensors model file")
    known = sorted({m.name for m in list_models()})
    raise MammoDenoiseError(f"unknown model {name!r}; installed models: {', '.join(known) if known else 'none'}"
                            f" (user models are looked for in {user_model_dir()})")


def read_card(name_or_path) -> dict:
    """The model card of a model name or file, without loading the weights."""
    return _read_card(_resolve(name_or_path).with_suffix(CARD_SUFFIX))


def load_model(name_or_path="default", device=None) -> Denoiser:
    """Load a ``Denoiser`` (in eval mode) from a shipped or user model name, or a file path.

    ``"default"`` is ``DEFAULT_MODEL``. Paths may name the .safetensors or the .json card.
    Pickle checkpoints (.pt/.pth/.ckpt/...) and files that aren't safetensors are refused; the
    card's sha256 must match the weights; keys and shapes must match the card's architecture.
    ``device`` (e.g. "cuda", "auto") moves the model there; default CPU.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    from mammo_denoise.models.architectures import build_model

    weights_path = _resolve(name_or_path)
    card_path = weights_path.with_suffix(CARD_SUFFIX)
    try:
        data = weights_path.read_bytes()
    except FileNotFoundError:
        raise MammoDenoiseError("model weights file not found", weights_path) from None
    except OSError as exc:
        raise MammoDenoiseError(f"cannot read model weights ({exc.strerror})", weights_path) from None
    # Parse (safetensors only reads a JSON header and raw bytes) before trusting anything else;
    # hashing and parsing the same bytes leaves no window for the file to change in between.
    try:
        if len(data) < 8 or int.from_bytes(data[:8], "little") > len(data) - 8:
            raise ValueError("bad header length")
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError):
        raise MammoDenoiseError(
            "not a valid safetensors file; refusing to load it (pickled checkpoints are never loaded)",
            weights_path) from None
    card = _read_card(card_path)
    missing = [k for k in REQUIRED_CARD_FIELDS if k not in card]
    if missing:
        raise MammoDenoiseError(f"model card lacks {', '.join(missing)}", card_path)
    if card["sha256"] != _sha256(data):
        raise MammoDenoiseError("sha256 of the weights does not match the model card "
                                "(file changed or replaced after the card was written)", weights_path)
    arch_kwargs = card.get("arch_kwargs") or {}
    if not isinstance(arch_kwargs, dict):
        raise MammoDenoiseError("model card arch_kwargs must be an object", card_path)
    try:
        net = build_model(card["architecture"], **arch_kwargs)
    except MammoDenoiseError as exc:
        raise MammoDenoiseError(str(exc), card_path) from None
    expected = net.state_dict()
    missing_keys = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing_keys or unexpected:
        detail = []
        if missing_keys:
            detail.append(f"missing {', '.join(missing_keys[:5])}{' ...' if len(missing_keys) > 5 else ''}")
        if unexpected:
            detail.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        raise MammoDenoiseError(f"weights do not match architecture {card['architecture']!r}: "
                                + "; ".join(detail), weights_path)
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(tensors[k].shape)]
    if bad:
        k = bad[0]
        raise MammoDenoiseError(f"weights do not match architecture {card['architecture']!r}: {k} has shape "
                                f"{tuple(tensors[k].shape)}, expected {tuple(expected[k].shape)}", weights_path)
    net.load_state_dict(tensors, strict=True)
    card.setdefault("name", weights_path.stem)
    denoiser = Denoiser(net, card).eval()
    if device is not None:
        from mammo_denoise.devices import resolve_device

        denoiser.to(resolve_device(device))
    return denoiser
