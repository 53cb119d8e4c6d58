"""Read DICOM radiographs (MG, DX, CR, ...) into float32 modality units plus a MammogramMeta.

Every failure the user can act on becomes a MammoDenoiseError naming the file; pydicom's own
exceptions are chained (``raise ... from err``) and never reach the user bare.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom import uid as dcm_uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.io.meta import MammogramMeta, known_spacing

PathLike = str | os.PathLike
PathInput = PathLike | Sequence[PathLike]

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# The largest image (rows x columns x frames) read without asking: a full-field mammogram is
# ~1e7 pixels, and a damaged or hostile header can declare 1e9 and more, which the decoders
# would try to allocate before noticing that the data are not there.
MAX_PIXELS_ENV = "MAMMO_DENOISE_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 2e8
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR

# View for Mammography (CID 4014): abbreviation -> (SNOMED CT code, code meaning).
MG_VIEW_CODES: dict[str, tuple[str, str]] = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "ML": ("399260004", "medio-lateral"),
    "LM": ("399352003", "latero-medial"),
    "LMO": ("399099002", "latero-medial oblique"),
    "FB": ("399196006", "caudo-cranial (from below)"),
    "SIO": ("399188001", "superolateral to inferomedial oblique"),
    "XCCL": ("399192008", "cranio-caudal exaggerated laterally"),
    "XCCM": ("399101009", "cranio-caudal exaggerated medially"),
    "XCC": ("399265009", "exaggerated cranio-caudal"),
}
# Older files use the retired SNOMED-RT (SRT) codes for the common views.
_SRT_VIEWS = {"R-10242": "CC", "R-10226": "MLO", "R-10224": "ML", "R-10228": "LM", "R-10230": "LMO"}
_VIEW_BY_CODE = {code: abbr for abbr, (code, _) in MG_VIEW_CODES.items()} | _SRT_VIEWS
_VIEW_BY_MEANING = {meaning: abbr for abbr, (_, meaning) in MG_VIEW_CODES.items()} | {
    "medial-lateral": "ML",
    "lateral-medial": "LM",
}

# Decoder plugins in order of preference per transfer syntax family. Permissive licences first:
# gdcm (BSD), pyjpegls (MIT), pylibjpeg-openjpeg / pylibjpeg-rle (MIT), pillow (HPND).
# pylibjpeg for JPEG means pylibjpeg-libjpeg (GPLv3): only a last resort if the user has it.
_JPEG = ("gdcm", "pillow", "pylibjpeg")
_JPEG_LS = ("pyjpegls", "gdcm", "pylibjpeg")
_J2K = ("pylibjpeg", "gdcm", "pillow")
_RLE = ("pylibjpeg", "pydicom", "gdcm")
_PLUGIN_ORDER = {
    dcm_uid.JPEGBaseline8Bit: _JPEG,
    dcm_uid.JPEGExtended12Bit: _JPEG,
    dcm_uid.JPEGLossless: _JPEG,
    dcm_uid.JPEGLosslessSV1: _JPEG,
    dcm_uid.JPEGLSLossless: _JPEG_LS,
    dcm_uid.JPEGLSNearLossless: _JPEG_LS,
    dcm_uid.JPEG2000Lossless: _J2K,
    dcm_uid.JPEG2000: _J2K,
    dcm_uid.HTJ2KLossless: _J2K,
    dcm_uid.HTJ2KLosslessRPCL: _J2K,
    dcm_uid.HTJ2K: _J2K,
    dcm_uid.RLELossless: _RLE,
}
# What to `pip install` when no plugin can decode a transfer syntax.
_PIP_PACKAGE = {_JPEG: "python-gdcm", _JPEG_LS: "pyjpegls", _J2K: "pylibjpeg pylibjpeg-openjpeg",
                _RLE: "pylibjpeg pylibjpeg-rle"}
LOSSY_TRANSFER_SYNTAXES = {
    dcm_uid.JPEGBaseline8Bit: "ISO_10918_1",
    dcm_uid.JPEGExtended12Bit: "ISO_10918_1",
    dcm_uid.JPEGLSNearLossless: "ISO_14495_1",
    dcm_uid.JPEG2000: "ISO_15444_1",
    dcm_uid.HTJ2K: "ISO_15444_15",
}


def read_mammogram(path: PathInput) -> tuple[np.ndarray, MammogramMeta]:
    """Read a DICOM file, a list of files or a folder into (float32 array, MammogramMeta).

    The array is in modality units (rescale applied), shaped (H, W) for one frame or
    (N, H, W) for a multi-frame file or a series of equally sized 2D images. A folder is read
    non-recursively: files that are not DICOM images (DICOMDIR, text, reports) are skipped and
    the rest sorted by InstanceNumber, then file name. ``meta`` describes the first image;
    ``meta.files`` lists every file behind the array. Images larger than
    ``MAMMO_DENOISE_MAX_PIXELS`` (default 2e8 pixels) are refused before decoding.
    """
    try:
        return _read(path)
    except MemoryError as err:  # numpy's _ArrayMemoryError included
        where = path if isinstance(path, (str, os.PathLike)) else next(iter(path), None)
        raise MammoDenoiseError(f"not enough memory to read this image ({err})", path=where) from err


def _read(path: PathInput) -> tuple[np.ndarray, MammogramMeta]:
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if p.is_dir():
            datasets = _scan_folder(p)
            origin = str(p)
        elif p.exists():
            return _read_single(p, _read_dataset(p))
        else:
            raise MammoDenoiseError("no such file or folder", path=p)
    else:
        files = [Path(f) for f in path]
        if not files:
            raise MammoDenoiseError("no files given")
        datasets = [(f, _read_dataset(f)) for f in files]
        for f, ds in datasets:
            _check_image(ds, f)
        origin = str(files[0])
    datasets.sort(key=_series_order)
    if len(datasets) == 1:
        return _read_single(*datasets[0])
    return _read_stack(datasets, origin)


def _series_order(item: tuple[Path, Dataset]) -> tuple:
    f, ds = item
    number = ds.get("InstanceNumber")
    try:
        return (0, int(number), f.name) if number not in (None, "") else (1, 0, f.name)
    except (TypeError, ValueError):
        return (1, 0, f.name)


def _read_single(path: Path, ds: Dataset) -> tuple[np.ndarray, MammogramMeta]:
    _check_image(ds, path)
    _check_size(ds, path)
    arr = _to_modality(_decode(ds, path), ds, path)
    return arr, _meta_from(ds, path, arr, files=(str(path),))


def _read_stack(datasets: list[tuple[Path, Dataset]], origin: str):
    frames = []
    first_path, first_ds = datasets[0]
    for f, ds in datasets:
        _check_size(ds, f)
        arr = _to_modality(_decode(ds, f), ds, f)
        if arr.ndim != 2:
            raise MammoDenoiseError(
                f"multi-frame file ({arr.shape[0]} frames) cannot be stacked with other files; "
                "open it on its own", path=f)
        if frames and arr.shape != frames[0].shape:
            raise MammoDenoiseError(
                f"image size {arr.shape[0]}x{arr.shape[1]} differs from "
                f"{first_path.name} ({frames[0].shape[0]}x{frames[0].shape[1]}); "
                "only equally sized images can be stacked", path=f)
        frames.append(arr)
    stack = np.stack(frames)
    meta = _meta_from(first_ds, first_path, frames[0], files=tuple(str(f) for f, _ in datasets))
    return stack, replace(meta, path=origin, n_frames=len(frames), shape=stack.shape)


# --- reading headers -------------------------------------------------------------------------

def _read_dataset(path: Path, defer: bool = False) -> Dataset:
    """The dataset of one file, or a MammoDenoiseError saying why it is not readable DICOM."""
    if not path.exists():
        raise MammoDenoiseError("no such file or folder", path=path)
    if path.is_dir():
        raise MammoDenoiseError("is a folder, not a file", path=path)
    size = path.stat().st_size
    if size == 0:
        raise MammoDenoiseError("empty file (0 bytes)", path=path)
    defer_size = "64 KB" if defer else None
    try:
        try:
            ds = _quiet(pydicom.dcmread, path, defer_size=defer_size)
        except InvalidDicomError:
            # No preamble/'DICM': accept only files that start like a bare DICOM data set.
            if not _starts_like_dataset(path):
                raise MammoDenoiseError("not a DICOM file", path=path) from None
            ds = _quiet(pydicom.dcmread, path, force=True, defer_size=defer_size)
    except MammoDenoiseError:
        raise
    except Exception as err:  # pydicom raises many types for damaged files
        raise MammoDenoiseError(
            f"cannot read the DICOM header (truncated or corrupt file?): {err}", path=path
        ) from err
    if not any(el.tag.group > 0x0002 for el in ds):
        if _has_dicm_prefix(path):
            raise MammoDenoiseError(_why_empty(path), path=path)
        raise MammoDenoiseError("not a DICOM file", path=path)
    return ds


def _quiet(function, *args, **kwargs):
    """Call a pydicom function with its warnings kept from the user: what they report about a
    damaged file becomes our own error message, never a raw Python warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def _why_empty(path: Path) -> str:
    """Why pydicom found nothing after the file meta header.

    When a file ends inside encapsulated (compressed) pixel data, pydicom drops the whole data
    set, header included; read again up to the pixels, the header turns out to be complete.
    """
    try:
        header = _quiet(pydicom.dcmread, path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - the file is damaged before its pixels as well
        header = None
    if header is not None and "Rows" in header:
        return "the pixel data are truncated (the file ends inside them; the header is complete)"
    return "truncated DICOM file: nothing after the file meta header"


def _has_dicm_prefix(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(128)
        return fh.read(4) == b"DICM"


def _starts_like_dataset(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    if len(head) < 4:
        return False
    groups = {int.from_bytes(head[:2], "little"), int.from_bytes(head[:2], "big")}
    # Files without a preamble start with group 0002 (meta) or 0008 (no meta header).
    return bool(groups & {0x0002, 0x0008})


def _scan_folder(folder: Path) -> list[tuple[Path, Dataset]]:
    found = []
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        try:
            ds = _read_dataset(f, defer=True)
        except MammoDenoiseError:
            continue  # text files, thumbnails, ...: a folder may hold more than DICOM images
        if _is_image(ds):
            found.append((f, ds))
    if not found:
        raise MammoDenoiseError("folder contains no DICOM images", path=folder)
    return found


def _is_image(ds: Dataset) -> bool:
    sop_class = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return False
    return any(k in ds for k in PIXEL_KEYWORDS)


def _check_image(ds: Dataset, path: Path) -> None:
    if not _is_image(ds):
        raise MammoDenoiseError(f"no pixel data: {_describe_non_image(ds)}", path=path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise MammoDenoiseError(
            f"colour images are not supported (PhotometricInterpretation {photometric}, "
            f"{samples} samples per pixel); a mammogram must be MONOCHROME1 or MONOCHROME2",
            path=path)


def max_pixels() -> float:
    """The pixel limit from ``MAMMO_DENOISE_MAX_PIXELS``, else the default."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise MammoDenoiseError(f"{MAX_PIXELS_ENV} must be a positive number of pixels, got {text!r}")
    return value


def _check_size(ds: Dataset, path: Path) -> None:
    """Refuse an image whose header declares more pixels than the limit, before decoding it."""
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames = int(ds.get("NumberOfFrames") or 1)
        nbytes = max(int(ds.get("BitsAllocated") or 16) // 8, 1)
    except (TypeError, ValueError):
        return  # a malformed size: the decoder says what is wrong with it
    pixels, limit = rows * columns * frames, max_pixels()
    if pixels > limit:
        raise MammoDenoiseError(
            f"the header declares {rows} x {columns} pixels x {frames} frame(s) of {nbytes} bytes "
            f"({pixels:.2g} pixels, {pixels * nbytes / 1e9:.2g} GB stored); the limit is "
            f"{limit:g} pixels (set {MAX_PIXELS_ENV} to raise it)", path=path)


def _describe_non_image(ds: Dataset) -> str:
    sop_class = ds.get("SOPClassUID") or getattr(
        getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    name = dcm_uid.UID(str(sop_class)).name if sop_class else "unknown SOP class"
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return "this is a DICOMDIR (an index of other files); open the image files or their folder"
    if "Rows" in ds or "Image Storage" in name:
        # pydicom stops quietly at the end of a cut-off file, leaving the header only.
        return f"the file ends before the pixels of this {name} (truncated file?)"
    if str(ds.get("Modality", "")) == "SR" or " SR " in f" {name} ":
        return f"this is a Structured Report ({name}), not an image"
    return f"this is not an image ({name})"


# --- pixel data ------------------------------------------------------------------------------

def _transfer_syntax(ds: Dataset) -> dcm_uid.UID:
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts:
        return dcm_uid.UID(ts)
    implicit, little = ds.original_encoding
    if little is False:
        return dcm_uid.ExplicitVRBigEndian
    return dcm_uid.ImplicitVRLittleEndian if implicit in (True, None) else dcm_uid.ExplicitVRLittleEndian


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """Stored pixel values, trying decoder plugins in our order of preference."""
    ts = _transfer_syntax(ds)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as err:
        raise MammoDenoiseError(
            f"unsupported transfer syntax {ts.name} ({ts}): no pixel data decoder exists for it",
            path=path) from err
    if not decoder.is_available:
        package = _PIP_PACKAGE.get(_PLUGIN_ORDER.get(ts, _JPEG), "python-gdcm")
        raise MammoDenoiseError(
            f"cannot decode {ts.name} ({ts}) pixel data: no decoder is installed; "
            f"install one with `pip install {package}`", path=path)
    available = decoder.available_plugins
    if ts == dcm_uid.JPEGExtended12Bit and int(ds.get("BitsStored", 8)) > 8 and (
            "pylibjpeg" not in available):
        # python-gdcm and pillow only handle 8-bit JPEG Extended; the one Python decoder for
        # 12-bit is GPL-licensed, so we name it rather than depend on it.
        raise MammoDenoiseError(
            f"cannot decode 12-bit {ts.name} ({ts}) pixel data: python-gdcm and pillow do not "
            "support it; install `pip install pylibjpeg pylibjpeg-libjpeg` (GPLv3) or "
            "decompress the file first (e.g. `dcmdjpeg in.dcm out.dcm` from dcmtk)", path=path)
    preferred = [p for p in _PLUGIN_ORDER.get(ts, ()) if p in available]
    plugins = preferred + [p for p in available if p not in preferred] or [""]
    errors = []
    for plugin in plugins:
        try:
            arr, _ = _quiet(decoder.as_array, ds, decoding_plugin=plugin)
            return arr
        except Exception as err:  # a plugin may choke on one file; the next may not
            errors.append(err)
    detail = "; ".join(f"{p or 'native'}: {e}" for p, e in zip(plugins, errors))
    raise MammoDenoiseError(
        f"cannot decode {ts.name} pixel data (truncated or corrupt?): {detail}", path=path
    ) from errors[-1]


def _to_modality(stored: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        out = apply_modality_lut(stored, ds).astype(np.float32)
    else:
        slope, intercept = _rescale(ds, stored.shape[0] if stored.ndim == 3 else 1)
        out = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    if not np.isfinite(out).all():
        raise MammoDenoiseError("pixel data contains NaN or infinite values", path=path)
    return out


def _rescale(ds: Dataset, n_frames: int) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Slope and intercept: top level, else shared functional groups, else per frame."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    item = _functional_item(ds.get("SharedFunctionalGroupsSequence"), "PixelValueTransformationSequence")
    if item is not None:
        return float(item.get("RescaleSlope", 1)), float(item.get("RescaleIntercept", 0))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and len(per_frame) == n_frames:
        items = [_functional_item([f], "PixelValueTransformationSequence") for f in per_frame]
        if all(i is not None for i in items):
            slopes = np.array([float(i.get("RescaleSlope", 1)) for i in items])[:, None, None]
            intercepts = np.array([float(i.get("RescaleIntercept", 0)) for i in items])[:, None, None]
            return slopes, intercepts
    return 1.0, 0.0


def _functional_item(groups, sequence: str) -> Dataset | None:
    if not groups:
        return None
    seq = groups[0].get(sequence)
    return seq[0] if seq else None


def _find(ds: Dataset, keyword: str, sequence: str):
    """A value at the top level, else in the first shared / per-frame functional group."""
    if keyword in ds and ds[keyword].value not in (None, ""):
        return ds[keyword].value
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        item = _functional_item(ds.get(groups), sequence)
        if item is not None and item.get(keyword) not in (None, ""):
            return item.get(keyword)
    return None


# --- header fields ---------------------------------------------------------------------------

def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _first_number(value) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return float(value[0]) if len(value) else None
    return float(value)


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    """ImagerPixelSpacing, else PixelSpacing; None (unknown) when neither is usable."""
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        spacing = known_spacing(_find(ds, keyword, "PixelMeasuresSequence"))
        if spacing is not None:
            return spacing
    return None


def _view(ds: Dataset) -> str:
    position = _text(ds, "ViewPosition")
    if position:
        return position
    seq = ds.get("ViewCodeSequence")
    if not seq:
        return ""
    code = seq[0]
    value = str(code.get("CodeValue", "")).strip()
    meaning = str(code.get("CodeMeaning", "")).strip()
    return _VIEW_BY_CODE.get(value) or _VIEW_BY_MEANING.get(meaning.lower()) or meaning


def _laterality(ds: Dataset) -> str:
    value = _text(ds, "ImageLaterality") or _text(ds, "Laterality")
    return value or str(_find(ds, "FrameLaterality", "FrameAnatomySequence") or "")


def _window(ds: Dataset) -> tuple[float | None, float | None]:
    center = _first_number(_find(ds, "WindowCenter", "FrameVOILUTSequence"))
    width = _first_number(_find(ds, "WindowWidth", "FrameVOILUTSequence"))
    return center, width


def _meta_from(ds: Dataset, path: Path, arr: np.ndarray, files: tuple[str, ...]) -> MammogramMeta:
    ts = _transfer_syntax(ds)
    has_modality_lut = "ModalityLUTSequence" in ds
    slope, intercept = (1.0, 0.0) if has_modality_lut else _rescale(ds, len(arr) if arr.ndim == 3 else 1)
    if not isinstance(slope, float):  # per-frame rescale: report the first frame's
        slope, intercept = float(slope.ravel()[0]), float(intercept.ravel()[0])
    center, width = _window(ds)
    sign = ds.get("PixelIntensityRelationshipSign")
    image_type = ds.get("ImageType") or ()
    meta = MammogramMeta(
        path=str(path),
        modality=_text(ds, "Modality"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        presentation_intent=_text(ds, "PresentationIntentType"),
        photometric_interpretation=_text(ds, "PhotometricInterpretation") or "MONOCHROME2",
        pixel_intensity_relationship=_text(ds, "PixelIntensityRelationship"),
        rescale_slope=slope,
        rescale_intercept=intercept,
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 16))),
        bits_allocated=int(ds.get("BitsAllocated", 16)),
        pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
        pixel_spacing_mm=_spacing(ds),
        laterality=_laterality(ds),
        view_position=_view(ds),
        manufacturer=_text(ds, "Manufacturer"),
        window_center=center,
        window_width=width,
        n_frames=arr.shape[0] if arr.ndim == 3 else 1,
        shape=tuple(arr.shape),
        transfer_syntax_uid=str(ts),
        files=files,
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        image_type=tuple(str(v) for v in ([image_type] if isinstance(image_type, str) else image_type)),
        pixel_intensity_relationship_sign=None if sign in (None, "") else int(sign),
        has_voi_lut="VOILUTSequence" in ds,
        lossy_compressed=_text(ds, "LossyImageCompression") == "01" or ts in LOSSY_TRANSFER_SYNTAXES,
        burned_in_annotation=_text(ds, "BurnedInAnnotation"),
        dataset=_header_only(ds),
    )
    return meta


def _header_only(ds: Dataset) -> Dataset:
    # The decoded dataset is ours: dropping the pixel data avoids copying a large buffer.
    for keyword in PIXEL_KEYWORDS:
        if keyword in ds:
            del ds[keyword]
    return ds
