"""Shared helpers of the benchmark scripts (not part of the package; BM3D is imported only here
and in the scripts, never in ``src/``: its licence allows non-commercial evaluation only).

Everything the scripts measure goes through the package's public API
(``make_phantom``, ``simulate_dose``, ``anscombe``/``inverse_anscombe``, ``denoise``,
``load_model``/``list_models``, ``mammo_denoise.metrics``); this module adds the test protocol:
held-out phantoms, a crop inside the breast, the reference images, the classical baselines and
JSON output with the machine and the exact command; and what every script's command line shares
(``parser``, ``parse_models``, ``figure``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mammo_denoise import metrics

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MIAS = ROOT.parent / "shared" / "data" / "mias"  # the mini-MIAS films (physics.anatomy)

#: Test phantoms use seeds from here on. Training phantoms use
#: ``SeedSequence([seed, 0x50484E, i]).generate_state(1)[0]`` (32-bit hashes, training/data.py),
#: so a collision with 10_000..10_999 is checked explicitly by :func:`check_seed_disjoint`.
TEST_SEED0 = 10_000
#: issue #27's bar on the phantom: the default at least this far above BM3D (paired mean, dB)
PHANTOM_PSNR_BAR_DB = 0.2

#: Table 1 of the first seed (Eckert et al. 2019), 80 % dose reduction, as far as the garbled
#: text extraction allows (see BENCHMARKS.md): PSNR [dB], SSIM, sigma_image.
SEED_TABLE1 = {
    "Noisy": (30.94, 0.64, 0.057),
    "Gaussian filter": (35.48, 0.815, 0.041),
    "BM3D": (35.49, 0.801, 0.038),
    "DnCNN (seed, retrained with their method)": (33.50, 0.781, 0.038),
    "ResNet (seed, proposed)": (36.18, 0.841, None),
}
SEED_TABLE1_NOTES = (
    "Text extraction of Table 1 is garbled: it lists five rows of numbers for six method names "
    "(Noisy, Gaussian, BM3D, DNCNN, Gurprem et al., [ResNet]). The fifth numeric row reads "
    "36.08 / 0.840 / 0.041 while the text says the ResNet reached 'the highest PSNR and SSIM of "
    "36.18 and 0.841'; the Gurprem et al. row has no numbers in the extraction (the text says "
    "its output lost microcalcifications). We quote the ResNet from the text (36.18 / 0.841) and "
    "list the table's 36.08 / 0.840 / 0.041 as the unattributed fifth row. GT sigma_image = 0.042."
)


# ----------------------------------------------------------------------------- command line
#: Options several scripts share. Each means the same in every script; the script gives the
#: default (``parser(__doc__, phantoms=20)``).
OPTIONS = {
    "phantoms": dict(type=int, help="held-out phantoms"),
    "size": dict(type=int, help="side of each scored square (px)"),
    "phantom_shape": dict(type=int, nargs=2, metavar=("ROWS", "COLS"), help="phantom size (px)"),
    "dose": dict(type=float, help="dose fraction of the noisy input"),
    "seed0": dict(type=int, help="seed of the first held-out phantom"),
    "models": dict(nargs="*", metavar="LABEL=PATH|NAME",
                   help="models to score (none given: every installed and runs/ model)"),
    "model": dict(metavar="NAME|PATH", help="the model to score (default: the installed default)"),
    "threads": dict(type=int, help="torch threads (default: the cores this process may use)"),
    "name": dict(help="results/NAME.json (and NAME*.png)"),
    "mias": dict(type=Path, help="mini-MIAS folder (mdbNNN.png + annotations.txt)"),
    "regions": dict(type=int, help="regions scored"),
    "seed": dict(type=int, help="seed of the regions, their detectors and their noise"),
}
SWITCHES = {
    "no_bm3d": "leave BM3D out",
    "allow_untrained": "score random-init models too (smoke tests only)",
}


def parser(doc: str, *switches: str, **defaults) -> argparse.ArgumentParser:
    """The script's argument parser: its docstring as help, the shared ``OPTIONS`` named in
    ``defaults`` at those defaults and the ``SWITCHES`` named; the script adds its own after."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for dest, default in defaults.items():
        ap.add_argument("--" + dest.replace("_", "-"), default=default, **OPTIONS[dest])
    for dest in switches:
        ap.add_argument("--" + dest.replace("_", "-"), action="store_true", help=SWITCHES[dest])
    return ap


def test_seeds(args) -> list[int]:
    """``--phantoms`` held-out phantom seeds from ``--seed0``."""
    return [args.seed0 + i for i in range(args.phantoms)]


def figure(*args, **kwargs):
    """``plt.subplots(*args, **kwargs)`` drawn off-screen (no display needed); ``save_figure``
    writes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


# ----------------------------------------------------------------------------- environment
def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        info["torch"] = None
    try:
        import bm3d  # noqa: F401
        from importlib.metadata import version

        info["bm3d"] = version("bm3d")
    except Exception:  # noqa: BLE001
        info["bm3d"] = None
    try:
        import mammo_denoise

        info["mammo_denoise"] = mammo_denoise.__version__
    except Exception:  # noqa: BLE001
        pass
    try:
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        info["memory_gib"] = round(int(mem) / 2**20, 1)
    except Exception:  # noqa: BLE001
        pass
    return info


def command_line() -> str:
    """The exact command, relative to the repository root where possible."""
    argv = list(sys.argv)
    try:
        argv[0] = os.path.relpath(os.path.abspath(argv[0]), ROOT)
    except ValueError:
        pass
    return "python " + " ".join(shlex.quote(a) for a in argv)


def git_revision() -> str | None:
    head = ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref:"):
            return (ROOT / ".git" / ref.split(" ", 1)[1]).read_text().strip()
        return ref
    except OSError:
        return None


def source_fingerprint() -> dict:
    """sha256 (first 12 hex) of the package sources that shape the numbers, as they were when the
    run started: git HEAD does not capture uncommitted work in a shared checkout."""
    import hashlib

    src = ROOT / "src" / "mammo_denoise"
    out = {}
    for group, pattern in (("physics", "physics/*.py"), ("metrics", "metrics.py"),
                           ("inference", "inference.py"), ("models", "models/*.py"),
                           ("training", "training/*.py")):
        h = hashlib.sha256()
        for f in sorted(src.glob(pattern)):
            h.update(f.name.encode())
            h.update(f.read_bytes())
        out[group] = h.hexdigest()[:12]
    return out


SOURCE_AT_START = source_fingerprint()


def save_figure(fig, stem: str) -> str:
    """Write a matplotlib figure to ``results/<stem>.png`` and close it; returns the path
    relative to the repository (what result files and BENCHMARKS.md link to)."""
    import matplotlib.pyplot as plt

    path = RESULTS / f"{stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(ROOT))


def write_result(name: str, payload: dict, started: float, out_dir: Path | None = None) -> Path:
    """Write ``results/<name>.json`` with machine, date, command and wall time added."""
    out_dir = Path(out_dir) if out_dir else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
        "git_head": git_revision(),
        "source_sha256_at_start": SOURCE_AT_START,
        "machine": machine_info(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    doc.update(payload)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    print(f"wrote {path}")
    return path


def load_result(name: str, required: bool = True) -> dict | None:
    """A previous ``results/<name>.json`` (None if there is none and it is not ``required``)."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        if not required:
            return None
        raise SystemExit(f"{path}: no such result")
    return json.loads(path.read_text())


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def set_threads(n: int | None):
    """Pin torch's intra-op threads (default: the cores this process may use)."""
    import torch

    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:
            n = os.cpu_count() or 1
    torch.set_num_threads(int(n))
    return int(n)


def mean_std(values) -> dict:
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "n": int(a.size)}


def fmt_ms(d: dict | None, digits: int = 2) -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


# ----------------------------------------------------------------------------- metrics
# The product's own metrics, so that the benchmarks score exactly what a user's tools report.
METRICS_SOURCE = "mammo_denoise.metrics"


def psnr(img, ref, data_range, region=None) -> float:
    """``10 log10(R^2 / MSE)``, MSE over ``region`` (bool mask) or the whole image."""
    return float(metrics.psnr(img, ref, data_range=data_range, mask=region))


def ssim(img, ref, data_range, region=None) -> float:
    """SSIM (Wang et al. 2004; skimage defaults: 7x7 uniform window, as ``metrics.ssim``),
    averaged over ``region`` (the local SSIM map restricted to it) or the whole image."""
    # An all-true region keeps skimage's mean, which leaves out the map's 3 px border.
    whole = region is None or region.all()
    return float(metrics.ssim(img, ref, data_range=data_range, mask=None if whole else region))


def flat_sigma(img, flat) -> float:
    """Noise std in the flat window after removing a least-squares plane (``metrics.flat_region_sigma``)."""
    return float(metrics.flat_region_sigma(img, region=flat, detrend="plane"))


# ----------------------------------------------------------------------------- methods
def have_bm3d() -> bool:
    try:
        import bm3d  # noqa: F401

        return True
    except ImportError:
        print("BM3D not installed: pip install bm3d  (benchmark-only, non-commercial licence); "
              "skipping the BM3D rows")
        return False


def use_bm3d(args) -> bool:
    """BM3D rows unless ``--no-bm3d``, if the package is installed (``have_bm3d`` says so if not)."""
    return not args.no_bm3d and have_bm3d()


def gaussian_anscombe(z, params, sigma: float = 1.0):
    """The seed's Gaussian baseline: GAT -> gaussian_filter(sigma px) -> exact unbiased inverse."""
    from scipy import ndimage

    from mammo_denoise.physics.anscombe import anscombe, inverse_anscombe

    y = anscombe(np.asarray(z, np.float64), params)
    ys = ndimage.gaussian_filter(y, sigma, mode="reflect")
    return np.asarray(inverse_anscombe(ys, params, method="exact"), np.float32)


def bm3d_anscombe(z, params, profile: str = "np"):
    """BM3D (Dabov et al. 2007) in the GAT domain: after the GAT the noise is white with unit
    variance in the image's own units, so ``sigma_psd = 1`` (bm3d takes the noise std in the
    units of the image it is given; no rescaling needed). Exact unbiased inverse after."""
    from mammo_denoise.physics.anscombe import anscombe, inverse_anscombe

    y = anscombe(np.asarray(z, np.float64), params)
    yd = bm3d_gat_domain(y, float(np.median(y)), profile)
    return np.asarray(inverse_anscombe(yd, params, method="exact"), np.float32)


def bm3d_gat_domain(y, shift: float, profile: str = "np"):
    """BM3D on an image already in the GAT domain (unit noise variance), around ``shift``."""
    import bm3d

    return bm3d.bm3d(y - shift, sigma_psd=1.0, profile=profile) + shift


# ----------------------------------------------------------------------------- models
def _seconds_by_device(training: dict) -> dict:
    """Training time per device type ("cpu", "cuda", ...), summed over the card's stages."""
    stages = training.get("stages") or [training]
    out: dict[str, float] = {}
    for st in stages:
        kind = str(st.get("device") or "?").split(":")[0]
        out[kind] = out.get(kind, 0.0) + float(st.get("time_s") or 0.0)
    return out


@dataclass
class ModelSpec:
    label: str
    path: str
    card: dict = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.card.get("architecture", "?"))

    def describe(self) -> dict:
        tr = self.card.get("training") or {}
        return {
            "label": self.label, "path": self.path, "architecture": self.architecture,
            "noise_model": self.card.get("noise_model"), "domain": self.card.get("domain"),
            "dose_range": self.card.get("dose_range"), "parameter_count": self.card.get("parameter_count"),
            "training_command": tr.get("command"), "epochs": tr.get("epochs"),
            "patches_seen": tr.get("patches_seen"), "training_s": tr.get("time_s"),
            "training_device": tr.get("device"),
            "training_s_by_device": _seconds_by_device(tr),
            "training_seed": tr.get("seed"), "training_phantoms": (tr.get("data") or {}).get("phantoms"),
            "sha256": self.card.get("sha256"),
        }


def _read_card(path: Path) -> dict:
    try:
        return json.loads(Path(path).with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def discover_models() -> list[ModelSpec]:
    """Installed models (shipped, then user) and trained models under ``runs/`` (recursive)."""
    specs: list[ModelSpec] = []
    seen = set()
    try:
        from mammo_denoise.models import list_models

        for info in list_models():
            p = str(Path(info.path).resolve())
            if p not in seen:
                seen.add(p)
                specs.append(ModelSpec(info.name, p, dict(info.card)))
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"list_models failed: {exc}")
    shas = {s.card.get("sha256") for s in specs}
    runs = ROOT / "runs"
    if runs.is_dir():
        for w in sorted(runs.rglob("*.safetensors")):
            p = str(w.resolve())
            card = _read_card(w)
            # the same weights (sha256) under another name, e.g. a run copied into weights/
            if p in seen or not card.get("sha256") or card["sha256"] in shas:
                continue
            seen.add(p)
            shas.add(card["sha256"])
            label = w.stem
            if any(s.label == label for s in specs):
                label = f"runs/{w.relative_to(runs).with_suffix('')}"
            specs.append(ModelSpec(label, p, card))
    return specs


def parse_models(items: list[str] | None, allow_untrained: bool = True) -> list[ModelSpec]:
    """``--models label=path ...`` (a bare name or path is allowed too); default: discovered.
    Random-init models (``is_trained``) are left out unless ``allow_untrained``."""
    if not items:
        specs = discover_models()
    else:
        from mammo_denoise.models.store import _resolve  # noqa: PLC2701  (name -> path, no loading)

        specs = []
        for item in items:
            label, _, path = item.partition("=")
            if not path:
                path = label
                label = Path(label).stem if label.endswith(".safetensors") else label
            resolved = _resolve(path)
            specs.append(ModelSpec(label, str(resolved), _read_card(resolved)))
    return specs if allow_untrained else [s for s in specs if is_trained(s)]


def is_trained(spec: ModelSpec) -> bool:
    """Has the model's card a training record (random-init models are for smoke tests only)?"""
    return bool((spec.card.get("training") or {}).get("epochs"))


def default_model_spec(specs: list[ModelSpec], explicit: str | None = None) -> ModelSpec | None:
    """The model the bar applies to: ``explicit`` label, the installed default, else the first U-Net."""
    if explicit:
        for s in specs:
            if s.label == explicit:
                return s
        from mammo_denoise.models.store import _resolve  # noqa: PLC2701

        p = _resolve(explicit)
        return ModelSpec(Path(p).stem, str(p), _read_card(p))
    try:
        from mammo_denoise.models import DEFAULT_MODEL
    except ImportError:
        DEFAULT_MODEL = "mammo-unet"
    for s in specs:
        if s.label == DEFAULT_MODEL:
            return s
    for s in specs:
        if s.architecture == "unet":
            return s
    return specs[0] if specs else None


def load_default_model(explicit: str | None, allow_untrained: bool):
    """``(spec, denoiser)`` of the model a single-model benchmark scores: ``explicit`` or the
    installed default, trained (a card with epochs) unless ``allow_untrained``; exits with a
    message when there is none."""
    specs = [] if explicit else parse_models(None, allow_untrained)
    spec = default_model_spec(specs, explicit)
    if spec is None:
        raise SystemExit("no trained model found; pass --model")
    return spec, load(spec)


def load(spec: ModelSpec):
    from mammo_denoise.models import load_model

    return load_model(spec.path)


def load_all(specs: list[ModelSpec]) -> dict:
    """Each model loaded, by label."""
    return {s.label: load(s) for s in specs}


def run_model(denoiser, z, params, tile=None):
    from mammo_denoise.inference import denoise

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(denoise(z, model=denoiser, params=params, device="cpu", tile=tile),
                          np.float32)


#: Real image kept around each scored crop: more than any network's receptive radius (the Eckert
#: ResNet's ~47 px) and BM3D's reach (39 px search window plus 8 px blocks), so every method
#: gives the crop what a run on the whole frame gives it, at a fraction of the cost.
CONTEXT_PX = 64


def context_window(case) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """The crop plus ``CONTEXT_PX`` on every side (clipped to the frame), and the crop within it."""
    r0, c0, h, w = case.crop
    H, W = case.low_whole.shape
    a, b = max(r0 - CONTEXT_PX, 0), max(c0 - CONTEXT_PX, 0)
    win = (slice(a, min(r0 + h + CONTEXT_PX, H)), slice(b, min(c0 + w + CONTEXT_PX, W)))
    return win, (slice(r0 - a, r0 - a + h), slice(c0 - b, c0 - b + w))


def denoise_part(denoiser, part, transform, tile=None) -> np.ndarray:
    """One part of a frame through the network on the CPU, with the frame's ``transform``
    (``inference._Transform``): what ``denoise`` does for each of a frame's parts."""
    import torch

    from mammo_denoise.inference import _torch_settings, denoise_frame  # noqa: PLC2701

    dev = torch.device("cpu")
    denoiser.to(dev).to(memory_format=torch.channels_last).eval()
    with _torch_settings(dev):
        return denoise_frame(np.ascontiguousarray(part), transform, denoiser, dev, tile=tile,
                             overlap=denoiser.default_overlap)


def run_model_on_case(denoiser, case, tile=None) -> np.ndarray:
    """The network on the case's crop as ``denoise`` runs it on the whole low-dose frame: the
    frame's constants (the Anscombe shift is the median of the *whole* frame, as in training)
    and real image all around the crop, computed on the context window only. Equal to a
    whole-frame run on the crop up to float32 rounding."""
    from mammo_denoise.inference import _Transform, field_parts  # noqa: PLC2701

    whole = case.low_whole
    tr = _Transform(whole, denoiser.domain, case.params, True)
    # The crop lies in the exposed field, which denoise() runs apart from the collimator strips
    # (reflected at its own border): the window stops where the field does.
    (win_r, win_c), _ = context_window(case)
    field_r, field_c = field_parts(whole, tr)[0]
    # Window origins on the field's pooling grid (a U-Net is not shift-equivariant below it).
    a = denoiser.alignment
    win_r = slice(field_r.start + (max(win_r.start, field_r.start) - field_r.start) // a * a,
                  min(win_r.stop, field_r.stop))
    win_c = slice(field_c.start + (max(win_c.start, field_c.start) - field_c.start) // a * a,
                  min(win_c.stop, field_c.stop))
    r0, c0, h, w = case.crop
    assert win_r.start <= r0 and r0 + h <= win_r.stop and win_c.start <= c0 and c0 + w <= win_c.stop
    out = denoise_part(denoiser, whole[win_r, win_c], tr, tile=tile)
    return out[r0 - win_r.start:r0 - win_r.start + h, c0 - win_c.start:c0 - win_c.start + w]


def local_on_case(method, case) -> np.ndarray:
    """A local method ``method(image, params)`` (BM3D, a Gaussian filter) on the crop's context
    window, cut back to the crop: what it gives the crop on the whole frame."""
    win, inner = context_window(case)
    return np.asarray(method(np.ascontiguousarray(case.low_whole[win]), case.params), np.float32)[inner]


GAUSSIAN = "Gaussian filter (GAT, sigma 1)"
BM3D = "BM3D (GAT)"


def denoise_case(method: str, case, denoiser=None, tile=None) -> np.ndarray:
    """``method``'s output on the case's crop: "Noisy" (the input), ``GAUSSIAN``, ``BM3D``, or
    any other label for the network ``denoiser``; each run as on the whole frame."""
    if method == "Noisy":
        return case.low
    if method == GAUSSIAN:
        return local_on_case(lambda z, p: gaussian_anscombe(z, p, 1.0), case)
    if method == BM3D:
        return local_on_case(bm3d_anscombe, case)
    return run_model_on_case(denoiser, case, tile=tile)


def check_seed_disjoint(specs: list[ModelSpec], test_seeds) -> dict:
    """Verify that no test seed equals a training phantom seed of any model (as far as the
    model cards tell: training seed and number of phantoms)."""
    test = set(int(s) for s in test_seeds)
    out = {}
    for s in specs:
        tr = s.card.get("training") or {}
        seed, n = tr.get("seed"), (tr.get("data") or {}).get("phantoms")
        if seed is None or not n:
            out[s.label] = "unknown (card lacks training seed/phantoms)"
            continue
        train = {int(np.random.SeedSequence([int(seed), 0x50484E, i]).generate_state(1)[0])
                 for i in range(int(n))}
        out[s.label] = "disjoint" if not (train & test) else f"OVERLAP {sorted(train & test)}"
    return out


# ----------------------------------------------------------------------------- test cases
@dataclass
class Case:
    """One held-out test image: everything cropped to the evaluation window."""

    seed: int
    dose: float
    params: object
    low: np.ndarray  # the noisy input at ``dose`` (DN)
    truth: np.ndarray  # noise-free image at ``dose`` (DN)
    full_mapped: np.ndarray  # full-dose noisy image mapped to the low-dose level (DN)
    region: np.ndarray  # bool: pixels scored
    flat: tuple  # (slice, slice) of the flat fatty window
    calcs: list  # Calcification objects with crop coordinates
    crop: tuple  # (r0, c0, h, w) in the phantom
    data_range: float
    meta: object = None
    glandular: np.ndarray | None = None
    phantom: object = None  # the whole Phantom (for fresh noise realisations)
    low_whole: np.ndarray | None = None  # the whole low-dose image (before cropping)

    @property
    def slices(self):
        r0, c0, h, w = self.crop
        return (slice(r0, r0 + h), slice(c0, c0 + w))

    def fresh_low(self, k: int) -> np.ndarray:
        """An independent noisy realisation ``k`` at ``dose`` straight from the truth
        (``Phantom.generate_noisy``), cropped; unlike ``low`` it is not derived from the
        full-dose image, so realisations average to the truth."""
        z = self.phantom.generate_noisy(self.dose, rng=np.random.default_rng([self.seed, 0xF4E5, int(k)]))
        return z[self.slices].astype(np.float32)


def _best_crop(valid: np.ndarray, calcs, size: int, step: int = 16):
    H, W = valid.shape
    ii = np.pad(valid.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, best_key = (0, 0), None
    for r in list(range(0, H - size + 1, step)) + [H - size]:
        for c in list(range(0, W - size + 1, step)) + [W - size]:
            cov = (ii[r + size, c + size] - ii[r, c + size] - ii[r + size, c] + ii[r, c]) / size**2
            n = sum(1 for k in calcs if r + 8 <= k.row < r + size - 8 and c + 8 <= k.col < c + size - 8)
            key = (cov >= 0.999, cov >= 0.9, n if cov >= 0.9 else 0, cov)
            if best_key is None or key > best_key:
                best, best_key = (r, c), key
    return best


def _annulus_fits(row, col, diameter_px, h, w) -> bool:
    """The background annulus of ``metrics.calcification_contrast`` (outer radius
    ``r + max(1, r) + max(3, 2r)``, ``r = d/2``) lies inside an ``h x w`` image."""
    r = diameter_px / 2.0
    r_out = r + max(1.0, r) + max(3.0, 2.0 * r) + 1.0
    return row - r_out >= 0 and col - r_out >= 0 and row + r_out + 1 <= h and col + r_out + 1 <= w


FLAT_WIN = 32  # px: the window sigma_image is measured in


def _flat_window(truth, region, glandular, win: int, avoid):
    """Flattest ``win x win`` window (lowest relative local std of the truth, fatty) in region."""
    from scipy import ndimage

    t = truth.astype(np.float64)
    m = ndimage.uniform_filter(t, win)
    m2 = ndimage.uniform_filter(t * t, win)
    rel = np.sqrt(np.maximum(m2 - m * m, 0)) / np.maximum(m, 1e-9)
    ok = ndimage.binary_erosion(region, np.ones((win + 2, win + 2), bool))
    ok &= ~avoid
    if glandular is not None:
        g = ndimage.uniform_filter(glandular.astype(np.float64), win)
        if ok.any():
            ok &= g <= np.quantile(g[ok], 0.3)  # fatty: lowest 30 % of glandular fraction
    if not ok.any():
        ok = ndimage.binary_erosion(region, np.ones((win, win), bool)) if region.any() else np.ones_like(region)
    score = np.where(ok, rel, np.inf)
    r, c = np.unravel_index(int(np.argmin(score)), score.shape)
    h = win // 2
    r0, c0 = max(r - h, 0), max(c - h, 0)
    return (slice(r0, r0 + win), slice(c0, c0 + win))


def make_case(seed: int, dose: float = 0.2, phantom_shape=(1024, 1024), size: int = 512,
              phantom_kw: dict | None = None, input_mode: str = "thinning",
              crop_origin: tuple[int, int] | None = None) -> Case:
    """A held-out phantom at full dose, its ``dose`` version and the references, cropped.

    The low-dose input is the phantom's own full-dose image with photons removed by binomial
    thinning of its known photon counts (``simulate_dose(counts, dose, method="binomial")``):
    ``z_low = z_full - g*(N - N_dose)``, exactly Poisson(dose*lambda) plus the same electronic
    noise, and correlated with the full-dose image as in the seed's protocol (which derives its
    low-dose image from the full-dose one).
    """
    from dataclasses import replace

    from mammo_denoise.physics.dose import simulate_dose
    from mammo_denoise.physics.phantom import make_phantom

    kw = dict(phantom_kw or {})
    view = "CC" if seed % 2 == 0 else "MLO"
    ph = make_phantom(seed=seed, shape=tuple(phantom_shape), view=view, dose=1.0, **kw)
    p = ph.params
    full = ph.noisy.astype(np.float64)
    truth = ph.truth_at(dose).astype(np.float64)
    if input_mode == "thinning":
        kept = simulate_dose(ph.counts, dose, None, method="binomial",
                             rng=np.random.default_rng([seed, 0xD05E]))
        low = full - p.gain * (ph.counts.astype(np.float64) - kept.astype(np.float64))
        low = np.clip(low, 0, ph.max_value)
        sat = ph.truth >= ph.max_value  # full-dose image (and so the thinned one) clipped there
    elif input_mode == "fresh":
        low = ph.generate_noisy(dose, rng=np.random.default_rng([seed, 0xF4E5, 0])).astype(np.float64)
        sat = truth >= ph.max_value
    else:
        raise ValueError(f"input_mode must be 'thinning' or 'fresh', got {input_mode!r}")
    # Only the compressed breast: leave out the rim where the thickness falls off toward the
    # skin line (edge_falloff_mm), whose near-open-field brightness would otherwise set the
    # PSNR data range of the crops that touch it.
    from scipy import ndimage

    d_mm = ndimage.distance_transform_edt(ph.mask) * float(ph.meta.pixel_spacing_mm[0])
    valid = ph.mask & ~sat & ~ph.pectoral & (d_mm >= float(ph.info.get("edge_falloff_mm", 0.0)))
    H, W = valid.shape
    if size and size < min(H, W):
        r0, c0 = crop_origin if crop_origin is not None else _best_crop(valid, ph.calcifications, size)
        h = w = size
    else:
        r0, c0, h, w = 0, 0, H, W
    sl = (slice(r0, r0 + h), slice(c0, c0 + w))
    if size and size < min(H, W):
        region = valid[sl].copy()
    else:
        region = ndimage.binary_erosion(valid, np.ones((9, 9), bool))
    calcs = [replace(k, row=k.row - r0, col=k.col - c0) for k in ph.calcifications
             if r0 + 6 <= k.row < r0 + h - 6 and c0 + 6 <= k.col < c0 + w - 6]
    px_mm = float(ph.meta.pixel_spacing_mm[0]) if ph.meta.pixel_spacing_mm else 0.07
    calcs = [k for k in calcs if region[int(round(k.row)), int(round(k.col))]
             and _annulus_fits(k.row, k.col, k.diameter_mm / px_mm, h, w)]
    avoid = np.zeros((h, w), bool)
    for k in calcs:
        avoid[max(int(k.row) - 12, 0):int(k.row) + 13, max(int(k.col) - 12, 0):int(k.col) + 13] = True
    t = truth[sl]
    flat = _flat_window(t, region, ph.glandular[sl], FLAT_WIN, avoid)
    rng_ = float(t[region].max() - t[region].min())
    full_mapped = p.offset + dose * (full[sl] - p.offset)
    return Case(seed=seed, dose=dose, params=p, low=low[sl].astype(np.float32),
                truth=t.astype(np.float32), full_mapped=full_mapped.astype(np.float32),
                region=region, flat=flat, calcs=calcs, crop=(r0, c0, h, w), data_range=rng_,
                meta=ph.meta, glandular=ph.glandular[sl], phantom=ph,
                low_whole=low.astype(np.float32))


# ----------------------------------------------------------------------------- calcifications
def _calc_geometry(case: Case):
    pixel_mm = float(case.meta.pixel_spacing_mm[0]) if case.meta is not None and case.meta.pixel_spacing_mm else 0.07
    pos = np.array([[k.row, k.col] for k in case.calcs], np.float64)
    diam = np.array([k.diameter_mm / pixel_mm for k in case.calcs], np.float64)
    return pos, diam


def calc_contrast(img, case: Case) -> np.ndarray:
    """Contrast ``-(S - A)/(A - offset)`` of each calcification (``metrics.calcification_contrast``)."""
    from mammo_denoise.metrics import calcification_contrast

    pos, diam = _calc_geometry(case)
    return np.asarray(calcification_contrast(img, pos, diam, offset=float(case.params.offset)), np.float64)


def calc_cnr(img, case: Case) -> np.ndarray:
    """CNR of each calcification (``metrics.cnr``: disk vs annulus, annulus std)."""
    from mammo_denoise.errors import MammoDenoiseError
    from mammo_denoise.metrics import cnr

    pos, diam = _calc_geometry(case)
    try:
        return np.asarray(cnr(img, pos, diam), np.float64)
    except MammoDenoiseError:  # a flat output (a collapsed model): no background noise, no CNR
        return np.full(len(pos), np.nan)


def timer():
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0
