"""``mammo-denoise``: the command line over the core API.

Thin by design: parse, call the same functions the napari widgets call, print. Every error the
user can act on is one line on stderr and exit status 2; nothing here knows any physics.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import sys
import time
import warnings
from pathlib import Path

from mammo_denoise import __version__
from mammo_denoise.safeguard import NoiseModelMismatch
from mammo_denoise.errors import MammoDenoiseError

EXIT_USER_ERROR = 2
EXIT_NOT_IMPROVED = 3  # train: the fine-tune did not beat its --init model; nothing written


# --------------------------------------------------------------------------- parsing helpers
def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"dose fraction must be in (0, 1], got {text}")
    return value


def _strength(text: str) -> float:
    # Checked here as well as in apply_strength: a bad value must fail before any file is denoised.
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"strength must be between 0 and 1, got {text}")
    return value


def _arch_option(text: str) -> tuple[str, int | float | str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    for cast in (int, float):
        try:
            return key.strip(), cast(value)
        except ValueError:
            pass
    return key.strip(), value


def _size(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like ROWSxCOLS, e.g. 3328x2560, got {text!r}") from None
    if rows < 32 or cols < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32, got {text}")
    return rows, cols


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


#: What a command writes, so that a folder never feeds it its own earlier results: the file
#: name's ending, and words of the DerivationDescription it writes (a renamed result).
_OWN_OUTPUTS = {"denoise": (r"_denoised\.dcm$", "Denoised with"),
                "simulate-dose": (r"_dose\d+\.dcm$", "Simulated dose reduction")}


def _wrote_earlier(path: Path, command: str) -> bool:
    pattern, words = _OWN_OUTPUTS[command]
    if re.search(pattern, path.name, flags=re.IGNORECASE):
        return True
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["DerivationDescription"])
    except Exception:  # noqa: BLE001 -- not DICOM: the command says so when it reads the file
        return False
    return words in str(ds.get("DerivationDescription", ""))


def _dicom_inputs(path: Path, output: Path | None = None, command: str | None = None) -> list[Path]:
    """The DICOM files a command should process: the file itself, or a folder's files in order.

    In a folder, files under ``output`` are left out, and so are the results ``command`` wrote
    there earlier (``_OWN_OUTPUTS``; one note on stderr names them), so that running a command
    again does not take its own results as inputs. A file named explicitly is always taken.
    """
    if not path.exists():
        raise MammoDenoiseError("no such file or folder", path=path)
    if path.is_file():
        return [path]
    out = output.resolve() if output is not None else None
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and not (out is not None and out in p.resolve().parents))
    earlier = [p for p in files if _wrote_earlier(p, command)] if command in _OWN_OUTPUTS else []
    if earlier:
        files = [p for p in files if p not in earlier]
        if _torchrun_rank() == 0:  # one note, not one per process
            print(f"mammo-denoise {command}: note: left out {len(earlier)} file{'s' * (len(earlier) > 1)} "
                  f"this command wrote earlier ({', '.join(map(str, earlier))})", file=sys.stderr)
    if not files:
        raise MammoDenoiseError("folder contains no files" + (" this command did not write" if earlier else ""),
                                path=path)
    return files


def _check_output(root: Path, output: Path) -> None:
    """Before any work: a folder's results need a folder, and no file may stand where a folder
    has to be made (otherwise every file is denoised and then fails to be written)."""
    for parent in (output, *output.parents):
        if not parent.exists():
            continue
        if parent == output and root.is_dir() and not output.is_dir():
            raise MammoDenoiseError("is a file: the output for a folder must be a folder (a new or an "
                                    "existing one)", path=output)
        if parent != output and not parent.is_dir():
            raise MammoDenoiseError(f"is a file: cannot hold {output}; choose another -o", path=parent)
        return


def _output_for(src: Path, inputs_root: Path, out: Path, suffix: str) -> Path:
    """Where a derived file goes: OUT itself for one file (inside it when it is a folder), else
    a mirror of the input tree.

    Never the input itself: a derived image must not replace the original it came from.
    """
    if inputs_root.is_file():
        dest = out / f"{src.stem}{suffix}.dcm" if out.is_dir() else out
    else:
        rel = src.relative_to(inputs_root)
        dest = (out / rel).with_name(f"{rel.stem}{suffix}.dcm")
    if dest.exists() and dest.resolve() == src.resolve():
        raise MammoDenoiseError("the output would overwrite this input; choose another -o", path=src)
    return dest


def _each_file(command: str, root: Path, files: list[Path], work) -> int:
    """``work(src)`` for every file. In a folder a file that fails is reported on one line
    naming it and skipped, and the others go on; the exit status is 2 if any failed. A single
    file's error propagates, naming the file. The warnings a file's work issues (an approximate
    treatment) become ``FILE: note: ...`` lines on stderr, one per note and file."""
    from mammo_denoise.notes import collected_notes

    failed = 0
    for src in files:
        notes: list[str] = []
        try:
            with collected_notes() as notes:
                work(src)
        except (MammoDenoiseError, OSError) as err:  # a bad file, or one that cannot be written
            if isinstance(err, OSError) and err.filename is not None:  # name the input too
                text = f"{src}: {err.strerror or err}: {err.filename}"
            else:
                text = str(err) if getattr(err, "path", None) else f"{src}: {err}"
            if root.is_file():
                raise MammoDenoiseError(text) from None
            failed += 1
            print(f"mammo-denoise {command}: skipped {text}", file=sys.stderr)
        finally:  # what was approximate about this file: one plain line each (mammo_denoise.notes)
            for note in notes:
                print(f"{src}: note: {note}", file=sys.stderr)
    if failed:
        print(f"mammo-denoise {command}: {failed} of {len(files)} files failed (see above)", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


class _Progress:
    """A one-line progress bar on stderr (only when it is a terminal or forced)."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled, self.start = label, enabled, time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(total, 1))
        elapsed = time.perf_counter() - self.start
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {elapsed:5.1f}s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


# --------------------------------------------------------------------------- commands
def cmd_phantom(args) -> int:
    import numpy as np

    from mammo_denoise.io import write_mammogram
    from mammo_denoise.physics.phantom import make_phantom

    phantom = make_phantom(seed=args.seed, shape=args.size, view=args.view, laterality=args.laterality, dose=args.dose)
    out = write_mammogram(phantom.noisy, args.out, phantom.meta,
                          description=f"synthetic phantom seed {args.seed}, dose {args.dose:g}")
    print(f"wrote {out} ({phantom.noisy.shape[0]}x{phantom.noisy.shape[1]}, dose {args.dose:g}, "
          f"{len(phantom.calcifications)} calcifications)")
    if args.truth:
        np.save(args.truth, phantom.truth_at(args.dose))
        print(f"wrote {args.truth} (noise-free image at dose {args.dose:g})")
    if args.png:
        from mammo_denoise.render import save_png

        save_png(args.png, phantom.noisy, meta=phantom.meta, params=phantom.params)
        print(f"wrote {args.png}")
    return 0


def _require_raw(meta, src: Path, task: str) -> None:
    """The header first: on processed data a noise fit fails for reasons that mislead."""
    if not meta.is_linear:
        header = ", ".join(v for v in (meta.presentation_intent, meta.pixel_intensity_relationship) if v)
        raise MammoDenoiseError(
            f"not raw detector data ({header or 'no FOR PROCESSING intent in the header'}): {task} needs "
            f"a linear FOR PROCESSING image, where the Poisson-Gaussian noise model holds", path=src)


def _known_params(args):
    """The detector's parameters when the user gave its gain (offset and electronic noise 0
    unless given too), else None."""
    from mammo_denoise.physics.params import NoiseParams

    if getattr(args, "gain", None) is None:
        return None
    return NoiseParams(args.offset or 0.0, args.gain, args.electronic_sigma or 0.0)


def _noise_params_for(image, meta, args):
    """Known parameters, else estimated from the image (with the offset, if that alone is
    known); one set per frame of a stack."""
    from mammo_denoise.physics.noise import estimate_noise_params

    known = _known_params(args)
    if known is not None:
        return known
    kw = {} if getattr(args, "offset", None) is None else {"offset": args.offset}
    if image.ndim == 3:
        return [estimate_noise_params(frame, **kw) for frame in image]
    return estimate_noise_params(image, **kw)


def cmd_simulate_dose(args) -> int:
    import numpy as np

    from mammo_denoise.io import read_mammogram, write_derived
    from mammo_denoise.physics.dose import simulate_dose

    rng = np.random.default_rng(args.seed)
    root, output = Path(args.input), Path(args.output)

    def work(src):
        image, meta = read_mammogram(src)
        _require_raw(meta, src, "dose simulation")
        params = _noise_params_for(image, meta, args)
        low = simulate_dose(image, args.dose, params, method=args.method, rng=rng)
        dest = _output_for(src, root, output, f"_dose{round(100 * args.dose)}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_derived(low, meta, dest, description=(
            f"Simulated dose reduction to {100 * args.dose:g} % ({args.method} method, seed {args.seed}); "
            f"noise params offset {params.offset:.1f} gain {params.gain:.3f} sigma_e {params.electronic_sigma:.2f}"),
            action=f"dose simulated to {100 * args.dose:g} %", smoothed=False)
        print(f"wrote {dest}")

    _check_output(root, output)
    return _each_file(args.command, root, _dicom_inputs(root, output, args.command), work)


def cmd_noise_params(args) -> int:
    from mammo_denoise.io import read_mammogram
    from mammo_denoise.physics.noise import estimate_noise_params

    results = []
    root = Path(args.input)

    def work(src):
        image, meta = read_mammogram(src)
        _require_raw(meta, src, "noise estimation")
        params = estimate_noise_params(image, method=args.method)
        results.append({"file": str(src), **params.to_dict(), "linear": meta.is_linear})
        if not args.json:
            print(f"{src}: offset {params.offset:.2f}  gain {params.gain:.4f}  "
                  f"electronic_sigma {params.electronic_sigma:.3f}")

    status = _each_file(args.command, root, _dicom_inputs(root), work)
    if args.json and results:
        print(json.dumps(results[0] if root.is_file() else results, indent=2))
    return status


def _torchrun_rank() -> int:
    """This process's rank under torchrun (0 when run alone)."""
    return int(os.environ.get("RANK", "0"))


def _distributed_share(files: list[Path]) -> list[Path]:
    """Under torchrun each process takes every WORLD_SIZE-th file."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return files[_torchrun_rank()::world] if world > 1 else files


def cmd_denoise(args) -> int:
    from mammo_denoise.inference import DEFAULT_TILE, apply_strength, denoise
    from mammo_denoise.io import read_mammogram, write_derived
    from mammo_denoise.io.meta import check_modality
    from mammo_denoise.models import load_model

    root, output = Path(args.input), Path(args.output)
    _check_output(root, output)
    files = _distributed_share(_dicom_inputs(root, output, args.command))
    model = load_model(args.model, device=None)
    _check_engine(args)
    show = not args.quiet and sys.stderr.isatty() or args.progress

    def work(src):
        image, meta = read_mammogram(src)
        if not args.any_modality:
            check_modality(meta, override="--any-modality denoises it anyway")
        dest = _output_for(src, root, output, "_denoised")
        t0 = time.perf_counter()
        params = _noise_params_for(image, meta, args) if meta.is_linear else _known_params(args)
        ran = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NoiseModelMismatch)
            result = denoise(image, model=model, params=params, meta=meta, device=args.device,
                             tile=args.tile or DEFAULT_TILE, overlap=args.overlap,
                             batch_size=args.batch_size, amp=args.amp, progress=_Progress(src.name, show),
                             engine=args.engine, info=ran)
        mismatch = [str(w.message) for w in caught if issubclass(w.category, NoiseModelMismatch)]
        for w in caught:  # said once per file by _each_file, like every other note
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        strength = ""
        if args.strength < 1.0:
            result = apply_strength(image, result, args.strength)
            strength = f" at strength {args.strength:g}"
        flag = f"; WARNING {'; '.join(mismatch)}"[:800] if mismatch else ""  # ST: 1024 characters
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_derived(result, meta, dest, action=f"denoised with {model.name}{strength}",
                      description=f"Denoised with {model.name}{strength} (mammo-denoise {__version__})"
                                  f"{flag}")
        print(f"wrote {dest} ({time.perf_counter() - t0:.1f} s, {_ran_on(ran)})")

    return _each_file(args.command, root, files, work)


def cmd_demo(args) -> int:
    """Phantom at low dose -> denoise with the shipped model -> DICOM + PNGs + numbers."""
    from mammo_denoise.inference import denoise
    from mammo_denoise.io import read_mammogram, write_derived, write_mammogram
    from mammo_denoise.metrics import psnr, ssim
    from mammo_denoise.models import load_model
    from mammo_denoise.physics.phantom import make_phantom
    from mammo_denoise.render import gat_residual, save_difference_png, save_panel_png, save_png

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    phantom = make_phantom(seed=args.seed, shape=args.size, dose=args.dose)
    noisy_path = write_mammogram(phantom.noisy, out / "noisy.dcm", phantom.meta,
                                 description=f"synthetic phantom seed {args.seed}, dose {args.dose:g}")
    model = load_model(args.model)
    _check_engine(args)
    t0 = time.perf_counter()
    ran = {}
    denoised = denoise(phantom.noisy, model=model, params=phantom.params, meta=phantom.meta,
                       device=args.device, progress=_Progress("denoise", sys.stderr.isatty()),
                       engine=args.engine, info=ran)
    seconds = time.perf_counter() - t0
    _, noisy_meta = read_mammogram(noisy_path)  # the written file is the derivative's source
    write_derived(denoised, noisy_meta, out / "denoised.dcm", description=f"Denoised with {model.name}",
                  action=f"denoised with {model.name}")
    truth = phantom.truth_at(args.dose)
    kw = dict(meta=phantom.meta, params=phantom.params)
    save_png(out / "noisy.png", phantom.noisy, **kw)
    save_png(out / "denoised.png", denoised, **kw)
    save_difference_png(out / "difference.png", phantom.noisy - denoised, mask=phantom.mask,
                        title="noisy - denoised (scaled inside the breast)")
    # In noise standard deviations the removed noise is ~N(0, 1) everywhere: what stands out at
    # several sigma is anatomy the network took away.
    save_difference_png(out / "residual_sigma.png", gat_residual(phantom.noisy, denoised, phantom.params),
                        limit=3.0, units="noise σ", title="noisy - denoised in noise σ (Anscombe domain)")
    save_panel_png(out / "comparison.png", [("noisy (%g %% dose)" % (100 * args.dose), phantom.noisy),
                                             ("denoised", denoised), ("truth", truth)], **kw)
    region = _scored_region(phantom)
    rng = float(truth[region].max() - truth[region].min())
    print(f"phantom {phantom.noisy.shape[0]}x{phantom.noisy.shape[1]} at {100 * args.dose:g} % dose, "
          f"model {model.name}, denoised in {seconds:.1f} s with {_ran_on(ran)}")
    print(f"PSNR (data range = breast max - min of the truth): "
          f"noisy {psnr(phantom.noisy, truth, data_range=rng, mask=region):.2f} dB -> "
          f"denoised {psnr(denoised, truth, data_range=rng, mask=region):.2f} dB; "
          f"SSIM {ssim(phantom.noisy, truth, data_range=rng, mask=region):.3f} -> "
          f"{ssim(denoised, truth, data_range=rng, mask=region):.3f}")
    print(f"(scored in the compressed breast, {rng:.0f} DN range, as README's table and BENCHMARKS.md; "
          f"the pectoral muscle, clipped pixels and the thinning rim at the skin line left out)")
    print(f"wrote {out}/noisy.dcm, denoised.dcm, noisy.png, denoised.png, difference.png, "
          "residual_sigma.png, comparison.png")
    return 0


def _scored_region(phantom):
    """Where the demo scores, as the benchmarks score a whole phantom (benchmarks/common.py,
    make_case): the breast without the pectoral muscle, clipped pixels and the rim where the
    thickness falls off toward the skin line, eroded by 4 px. That rim is nearly as bright as
    the open field; in the data range it would add ~20 dB to every PSNR and say nothing about
    the tissue."""
    import numpy as np
    from scipy import ndimage

    valid = phantom.mask & ~phantom.saturated & ~phantom.pectoral
    spacing = phantom.meta.pixel_spacing_mm[0] if phantom.meta.pixel_spacing_mm else 0.07
    valid &= ndimage.distance_transform_edt(phantom.mask) * spacing >= phantom.info.get("edge_falloff_mm", 0.0)
    return ndimage.binary_erosion(valid, np.ones((9, 9), bool))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cmd_train(args) -> int:
    from mammo_denoise.training import TrainConfig, describe, train

    dose_kw = {"dose_range": tuple(args.dose_range)} if args.dose_range else {"dose": args.dose}
    config = TrainConfig(
        architecture=args.architecture, arch_kwargs=dict(args.arch_option), init=args.init, paths=[Path(p) for p in args.data],
        phantoms=args.phantoms, phantom_shape=args.phantom_size, epochs=args.epochs, iters_per_epoch=args.iters_per_epoch,
        patch=args.patch, batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule,
        patience=args.patience, loss=args.loss, calc_weight=args.calc_weight,
        boundary_fraction=args.boundary_fraction, input_highpass=args.input_highpass,
        time_budget_s=None if args.time_budget is None else 60.0 * args.time_budget,
        noise_model=args.noise_model, seed=args.seed, device=args.device,
        num_workers=args.workers, amp=args.amp, clip_grad_norm=args.clip_grad_norm or None, out=args.out,
        name=args.name, resume=args.resume, command="mammo-denoise " + shlex.join(args.argv),
        anatomy=args.anatomy, anatomy_fraction=args.anatomy_fraction,
        dose_distribution=args.dose_distribution, detector=_known_params(args),
        objective=args.objective, **dose_kw)
    if _torchrun_rank() == 0:  # as with the epoch lines, rank 0 alone speaks
        print(describe(config))
        # The demo's and README's definition, but over the whole breast: the thin, bright rim at
        # the skin line widens the range (mammo_denoise.training computes it).
        if config.objective == "noisier2noise":
            print("val PSNR: estimated without truth in the GAT domain (corrected MSE less the target's own "
                  "noise), on the same noise draws for every epoch and for the start model")
        else:
            print("val PSNR: data range = breast max - min of the truth (of each patch's image at its dose, "
                  "skin-line rim included, so higher than the demo's and README's figures)")
        if args.workers == 0 and args.device in ("auto", "cuda") and _cuda_available():
            print("note: training on CUDA with --workers 0: the GPU will wait for noisy patches "
                  "made on one CPU core; --workers 4 (or more) makes them in parallel", file=sys.stderr)

    def report(msg):
        kind = type(msg).__name__
        if kind == "EpochEnd":
            print(f"epoch {msg.epoch}/{msg.epochs}: train loss {msg.train_loss:.4f}  val loss "
                  f"{msg.val_loss:.4f}  val PSNR {msg.val_psnr:.2f} dB  ({msg.seconds:.0f} s)", flush=True)
        elif kind == "TrainDone":
            print(f"wrote {msg.path} (best val PSNR {msg.best_val_psnr:.2f} dB)", flush=True)
        elif kind == "Baseline":
            print(f"start ({config.init}): val loss {msg.val_loss:.4f}  val PSNR {msg.val_psnr:.2f} dB "
                  "(only a better epoch is saved)", flush=True)

    from mammo_denoise.training import NotImproved

    try:
        train(config, progress=report)
    except NotImproved as exc:  # an outcome, said plainly: not a failure of the command
        print(f"mammo-denoise train: {exc}", flush=True)
        return EXIT_NOT_IMPROVED
    return 0


def cmd_models(args) -> int:
    from mammo_denoise.models import DEFAULT_MODEL, card_summary, list_models, user_model_dir

    infos = list_models()
    if args.json:
        print(json.dumps([{"name": i.name, "source": i.source, "path": str(i.path), "card": i.card}
                          for i in infos], indent=2))
        return 0
    if not infos:
        print("no models found")
    for info in infos:
        card = info.card
        print(f"{info.name:24s} {info.source:8s} {card.get('architecture', '?'):14s} "
              f"{card.get('parameter_count', 0):>9,d} params  {card_summary(card)}")
        if args.verbose:
            print(json.dumps(card, indent=2))
    print(f"your models (trained with --out here, or saved from napari): {user_model_dir()}")
    if any(i.name == DEFAULT_MODEL for i in infos):
        print(f"default (used when --model is not given): {DEFAULT_MODEL}")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammo-denoise",
        description="Physics-driven denoising of low-dose mammograms (DICOM in, derived DICOM out).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("phantom", help="write a synthetic MG For Processing DICOM phantom",
                       description="Generate a physics-based synthetic mammogram (seeded) as an MG "
                                   "For Processing DICOM file.")
    p.add_argument("out", metavar="OUT.dcm", type=Path)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=_size, default=(1024, 768), metavar="ROWSxCOLS",
                   help="image size (default 1024x768; full field is 3328x2560)")
    p.add_argument("--dose", type=_fraction, default=1.0, metavar="FRACTION",
                   help="dose as a fraction of full dose (default 1.0)")
    p.add_argument("--view", choices=["CC", "MLO"], default="CC")
    p.add_argument("--laterality", choices=["L", "R"], default="L")
    p.add_argument("--truth", type=Path, metavar="TRUTH.npy", help="also save the noise-free image (.npy)")
    p.add_argument("--png", type=Path, metavar="PNG", help="also save a display rendering")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("simulate-dose", help="simulate a lower dose acquisition",
                       description="Simulate a dose reduction on raw (FOR PROCESSING) DICOM files and "
                                   "write derived DICOM.")
    p.add_argument("input", metavar="IN", help="DICOM file or folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file (for a file) or folder (for a folder)")
    p.add_argument("--dose", type=_fraction, required=True, metavar="FRACTION",
                   help="fraction of the original dose, e.g. 0.2 for an 80 %% reduction")
    p.add_argument("--method", choices=["moments", "binomial", "seed"], default="moments",
                   help="moments (default, exact mean and variance), binomial (integer photon "
                        "counts), seed (the Poisson re-sampling of Eckert et al. 2019)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _noise_options(p)
    p.set_defaults(func=cmd_simulate_dose)

    p = sub.add_parser("noise-params", help="estimate detector offset, gain and electronic noise",
                       description="Estimate the Poisson-Gaussian noise parameters of raw DICOM images.")
    p.add_argument("input", metavar="IN", help="DICOM file or folder")
    p.add_argument("--method", choices=["foi", "seed"], default="foi",
                   help="foi (default: robust variance-vs-mean fit) or seed (var/mean, eq. 2 of Eckert et al. 2019)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_noise_params)

    p = sub.add_parser("denoise", help="denoise DICOM files with a trained model",
                       description="Denoise DICOM files or folders and write derived DICOM. Under "
                                   "torchrun the files of a folder are shared among the processes.")
    p.add_argument("input", metavar="IN", help="DICOM file or folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file (for a file) or folder (for a folder)")
    _model_options(p)
    p.add_argument("--tile", type=_positive_int, default=None,
                   help="largest tile side in pixels (default: mammo_denoise.inference.DEFAULT_TILE, 1024)")
    p.add_argument("--overlap", type=_non_negative_int, default=None,
                   help="pixels shared by neighbouring tiles (default: the model's, 72 for the default "
                        "U-Net); any value gives the one-tile result, since the model's context is "
                        "always kept: what exceeds twice the context is cross-faded, 0 means a hard cut")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="tiles per batch")
    p.add_argument("--amp", action="store_true",
                   help="fp16 autocast on CUDA (default: IEEE float32; measured 1.35x faster for "
                        "eckert-resnet on an H100, 1.1x for the default U-Net, which loses up to "
                        "0.05 dB in fp16); no effect on CPU")
    p.add_argument("--strength", type=_strength, default=1.0, metavar="S",
                   help="denoising strength in [0, 1] (default 1): the result is noisy + S * "
                        "(denoised - noisy), keeping 1 - S of the noise and of the contrast lost")
    p.add_argument("--any-modality", action="store_true",
                   help="also denoise images whose modality is not MG, DX or CR (CT, MR, ...: "
                        "the models were not made for them)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="progress bar even when not a terminal")
    _noise_options(p)
    p.set_defaults(func=cmd_denoise)

    p = sub.add_parser("demo", help="denoise a synthetic phantom and write DICOM and PNG results",
                       description="The main job on the embedded default data: a synthetic phantom at "
                                   "low dose, denoised with the shipped model; writes noisy/denoised DICOM "
                                   "and noisy/denoised/difference PNGs and prints PSNR and SSIM.")
    p.add_argument("output", metavar="OUTDIR", type=Path, nargs="?", default=Path("mammo-demo"),
                   help="folder for the results (default: mammo-demo)")
    p.add_argument("--seed", type=int, default=1000,
                   help="phantom seed (default: 1000)")
    p.add_argument("--size", type=_size, default=(1536, 1152), metavar="ROWSxCOLS",
                   help="phantom size (default: 1536x1152)")
    p.add_argument("--dose", type=_fraction, default=0.2, metavar="FRACTION",
                   help="dose as a fraction of full dose (default: 0.2)")
    _model_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train or fine-tune a denoiser",
                       description="Train on physics-driven pairs: synthetic phantoms and/or folders of "
                                   "curated full-dose FOR PROCESSING DICOMs (lower dose simulated on the "
                                   "fly, fresh noise every iteration). On several GPUs or nodes: "
                                   "torchrun --nproc_per_node N -m mammo_denoise.cli train ... (DDP).")
    p.add_argument("data", nargs="*", metavar="DATA", help="DICOM files or folders of full-dose images")
    p.add_argument("--out", required=True, type=Path, metavar="WEIGHTS", help="output .safetensors path")
    p.add_argument("--name", default=None, help="model name for the card (default: file stem)")
    p.add_argument("--architecture", choices=["unet", "eckert-resnet", "dncnn", "cae"],
                   help="network to train from scratch (default: unet); with --init the model's own")
    p.add_argument("--arch-option", type=_arch_option, action="append", default=[], metavar="KEY=VALUE",
                   help="architecture argument, repeatable (e.g. --arch-option depth=4 --arch-option base=12)")
    p.add_argument("--init", default=None, metavar="MODEL", help="start from this model (fine-tuning)")
    dose = p.add_mutually_exclusive_group()
    dose.add_argument("--dose", type=_fraction, default=0.2, metavar="F", help="dose fraction (default 0.2)")
    dose.add_argument("--dose-range", type=_fraction, nargs=2, metavar=("A", "B"),
                      help="draw the dose fraction per patch from [A, B]")
    p.add_argument("--phantoms", type=int, default=None,
                   help="number of synthetic training phantoms (default 16 when no DATA or "
                        "--anatomy is given)")
    p.add_argument("--anatomy", type=Path, default=None, metavar="DIR",
                   help="a mini-MIAS folder (mdbNNN.png): real breast anatomy behind simulated "
                        "detectors, split by woman (research-use licence)")
    p.add_argument("--anatomy-fraction", type=float, default=0.7, metavar="F",
                   help="share of patches from --anatomy when phantoms or DATA are used too (default 0.7)")
    p.add_argument("--dose-distribution", choices=["uniform", "log-uniform"], default="uniform",
                   help="how --dose-range is drawn per patch (log-uniform: as many at 5-10 %% as at 50-100 %%)")
    p.add_argument("--phantom-size", type=_size, default=(512, 512), metavar="ROWSxCOLS")
    p.add_argument("--epochs", type=_positive_int, default=10)
    p.add_argument("--iters-per-epoch", type=_positive_int, default=200)
    p.add_argument("--patch", type=_positive_int, default=64)
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4, the seed's)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--patience", type=_positive_int, default=10, help="early-stopping patience in epochs")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="stop after this much training time (validated and saved as usual)")
    p.add_argument("--loss", choices=["mse+ssim", "mse"],
                   help="default: the --init model's own (its card's), else mse+ssim (as Eckert et al. 2019)")
    p.add_argument("--calc-weight", type=float, metavar="W",
                   help="count phantom microcalcification pixels 1+W times in the loss "
                        "(default: the --init model's own, else 0)")
    p.add_argument("--boundary-fraction", type=float, default=0.05, metavar="F",
                   help="fraction of patches on the edge of the exposed field, the collimator "
                        "shadow (default 0.05)")
    p.add_argument("--input-highpass", type=float, default=0.0, metavar="SIGMA",
                   help="the network sees its input minus a Gaussian low-pass of SIGMA pixels "
                        "(fresh residual networks; helps the seeds' BatchNorm networks; default 0: off)")
    p.add_argument("--noise-model", choices=["poisson-gaussian", "gaussian-saltpepper"],
                   default="poisson-gaussian")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--amp", action="store_true",
                   help="fp16 autocast on CUDA (default: float32, TF32 off; the U-Net sees the signal "
                        "level itself and loses precision in half precision)")
    p.add_argument("--clip-grad-norm", type=float, default=10.0, metavar="N",
                   help="scale each step's gradient down to this global norm where it is larger "
                        "(rare outlier batches; default 10, about 10x a typical step's; 0: off)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="processes that make the phantoms and the noisy patches (a GPU trains "
                        "faster than one CPU core makes patches; the results do not depend on N; "
                        "default 0: the training process itself)")
    p.add_argument("--objective", choices=["auto", "supervised", "noisier2noise", "seed"], default="auto",
                   help="what DATA images (noisy, no clean truth) are trained against: auto (default) = "
                        "noisier2noise when DATA is given (unbiased without clean images; doses up to "
                        "0.5), supervised for phantoms/--anatomy alone; seed = the full-dose image as "
                        "target, as in Eckert et al. 2019 (keeps part of the noise). A fine-tune that does not beat "
                        f"its --init model on validation saves nothing (exit status {EXIT_NOT_IMPROVED})")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint next to --out")
    _noise_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("models", help="list available models and their cards",
                       description="List the shipped and user models with their model cards.")
    p.add_argument("--json", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="print each full card")
    p.set_defaults(func=cmd_models)
    return parser


def _model_options(p):
    p.add_argument("--model", default="default", metavar="NAME|PATH",
                   help="model name (see `mammo-denoise models`) or .safetensors path")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--engine", default="auto", choices=["auto", "torch", "openvino", "onnxruntime"],
                   help="what runs the network on the CPU (default auto: OpenVINO when installed, "
                        "pip install \"napari-mammo-denoise[cpu-fast]\", else ONNX Runtime when "
                        "installed, else PyTorch); GPUs always use PyTorch; every engine gives the "
                        "same result")


def _check_engine(args) -> None:
    """An engine that is not installed is one error before any file is read, not one per file."""
    from mammo_denoise.devices import resolve_device
    from mammo_denoise.engines import resolve_engine

    resolve_engine(args.engine, resolve_device(args.device))


def _ran_on(ran: dict) -> str:
    """'openvino on cpu, 2 threads': what ``denoise(..., info=ran)`` says ran."""
    return ran.get("ran", "")


def _noise_options(p):
    p.add_argument("--gain", type=float, default=None, help="known detector gain (DN per quantum), "
                   "for every image; default: estimated from each image")
    p.add_argument("--offset", type=float, default=None, help="known detector offset (DN)")
    p.add_argument("--electronic-sigma", type=float, default=None, help="known electronic noise (DN)")


@contextlib.contextmanager
def _plain_notes(command: str):
    """A warning that no command collects per file (training's, say) is one plain line, every
    time, never Python's source path and line of code."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserWarning):
            print(f"mammo-denoise {command}: note: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in model cards
    try:
        with _plain_notes(args.command):
            return args.func(args)
    except (MammoDenoiseError, OSError) as err:
        print(f"mammo-denoise {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"mammo-denoise {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
