"""Write DICOM: a derived (e.g. denoised) instance of a source, or a brand-new MG instance.

Everything is written uncompressed, Explicit VR Little Endian. Pixel values arrive in modality
units and go back through the inverse rescale, rounded and clipped to the stored bit depth.
"""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom import dcmwrite
from pydicom import uid as dcm_uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.io.meta import (
    FOR_PROCESSING,
    FOR_PRESENTATION,
    MG_FOR_PRESENTATION_SOP,
    MG_FOR_PROCESSING_SOP,
    MammogramMeta,
)
from mammo_denoise.io.read import (
    LOSSY_TRANSFER_SYNTAXES,
    MG_VIEW_CODES,
    PIXEL_KEYWORDS,
    _read_dataset,
    _rescale,
)

PathLike = str | os.PathLike
DEFAULT_DESCRIPTION = "Denoised by napari-mammo-denoise"
DEFAULT_ACTION = "denoised"
DERIVED_SERIES_OFFSET = 1000  # derived series number = source series number + this

# Attributes of the source that would be false in the derived instance.
_DROP_FROM_DERIVED = (
    *PIXEL_KEYWORDS,
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "DigitalSignaturesSequence",  # signatures cover the source's bytes
    "MACParametersSequence",
    "ModalityLUTSequence",  # replaced by an identity rescale (values are modality units)
)


def _version() -> str:
    from mammo_denoise import __version__

    return __version__


# --- shared helpers ------------------------------------------------------------------------

def _to_stored(array: np.ndarray, slope: float, intercept: float, bits_stored: int,
               signed: bool, bits_allocated: int) -> np.ndarray:
    """Modality units -> stored integers: inverse rescale, round, clip to the stored range."""
    values = np.asarray(array, dtype=np.float64)
    if not np.isfinite(values).all():
        raise MammoDenoiseError("cannot write DICOM: the image contains NaN or infinite values")
    if not slope:
        raise MammoDenoiseError("cannot write DICOM: rescale slope is 0")
    if bits_allocated not in (8, 16, 32) or not 1 <= bits_stored <= bits_allocated:
        raise MammoDenoiseError(
            f"cannot write DICOM: unsupported bit depth (allocated {bits_allocated}, "
            f"stored {bits_stored})")
    stored = np.rint((values - intercept) / slope)
    low, high = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (
        0, 2**bits_stored - 1)
    dtype = np.dtype(f"{'<i' if signed else '<u'}{bits_allocated // 8}")
    return np.clip(stored, low, high).astype(dtype)


def _now() -> tuple[str, str]:
    now = datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _save(ds: Dataset, path: PathLike) -> Path:
    path = Path(path)
    ds.file_meta = ds.file_meta if "file_meta" in ds.__dict__ else FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = dcm_uid.ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = dcm_uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = f"MAMMODN_{_version()}"[:16]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # dcmwrite, not save_as: save_as refuses to re-encode a big endian source header.
        dcmwrite(path, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    except OSError as err:
        raise MammoDenoiseError(f"cannot write: {err.strerror or err}", path=path) from err
    return path


def _set_pixels(ds: Dataset, stored: np.ndarray) -> None:
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OB" if stored.dtype.itemsize == 1 else "OW"


# --- derived instances -----------------------------------------------------------------------

def write_derived(array: np.ndarray, source_meta: MammogramMeta, path: PathLike,
                  description: str = DEFAULT_DESCRIPTION, *, action: str = DEFAULT_ACTION,
                  smoothed: bool = True) -> Path:
    """Write ``array`` (modality units) as a new instance derived from ``source_meta``'s file.

    New SOP Instance and Series Instance UIDs, same patient and study, ImageType
    DERIVED\\SECONDARY, DerivationDescription = ``description``, Source Image Sequence pointing
    at the source. The source header (``source_meta.dataset``) supplies everything else.
    ``action`` says in a few words what was done (``"dose simulated to 20 %"``); it leads the
    SeriesDescription, before the source's. ``smoothed`` (denoising) adds the derivation code
    Smoothing; without it no code is written (CID 7203 has none for a dose simulation).

    A 2D array (or an (N, H, W) array for a multi-frame source) writes one file at ``path``.
    An (N, H, W) stack read from a folder or list of 2D files writes one file per frame into
    the folder ``path`` (see :func:`write_derived_series`); the folder is returned.
    """
    array = np.asarray(array)
    if array.ndim == 3 and source_meta.n_frames == array.shape[0] and len(source_meta.files) > 1:
        write_derived_series(array, source_meta, path, description, action=action, smoothed=smoothed)
        return Path(path)
    if source_meta.dataset is None:
        raise MammoDenoiseError("cannot write a derived image: the source meta has no DICOM "
                                "header (use write_mammogram for a new instance)")
    series_uid = dcm_uid.generate_uid()
    ds = _derive(source_meta.dataset, array, source_meta, (description, action, smoothed),
                 series_uid, path)
    return _save(ds, path)


def write_derived_series(stack: np.ndarray, source_meta: MammogramMeta, folder: PathLike,
                         description: str = DEFAULT_DESCRIPTION, *, action: str = DEFAULT_ACTION,
                         smoothed: bool = True) -> list[Path]:
    """One derived file per frame of a stack read from several 2D files, in one new series.

    Frame i derives from ``source_meta.files[i]`` (re-read for its header); files are named
    after their sources (``<stem>.dcm``) inside ``folder``.
    """
    stack = np.asarray(stack)
    files = [Path(f) for f in source_meta.files]
    if stack.ndim != 3 or stack.shape[0] != len(files):
        raise MammoDenoiseError(
            f"cannot write a derived series: {stack.shape[0] if stack.ndim == 3 else 1} "
            f"frame(s) for {len(files)} source file(s)")
    folder = Path(folder)
    stems = [f.stem for f in files]
    names = stems if len(set(stems)) == len(stems) else [f"{i + 1:04d}_{s}" for i, s in enumerate(stems)]
    series_uid = dcm_uid.generate_uid()
    written = []
    for frame, source, name in zip(stack, files, names):
        header = _read_dataset(source, defer=True)
        frame_meta = _geometry_meta(header, source_meta)
        out = folder / f"{name}.dcm"
        what = (description, action, smoothed)
        written.append(_save(_derive(header, frame, frame_meta, what, series_uid, out), out))
    return written


def _geometry_meta(ds: Dataset, fallback: MammogramMeta) -> MammogramMeta:
    """The few per-file fields _derive needs, from a series member's own header."""
    slope, intercept = (1.0, 0.0) if "ModalityLUTSequence" in ds else _rescale(ds, 1)
    return replace(
        fallback, rescale_slope=float(slope), rescale_intercept=float(intercept),
        bits_stored=int(ds.get("BitsStored", fallback.bits_stored)),
        bits_allocated=int(ds.get("BitsAllocated", fallback.bits_allocated)),
        pixel_representation=int(ds.get("PixelRepresentation", fallback.pixel_representation)),
        n_frames=1)


def _derive(source: Dataset, array: np.ndarray, meta: MammogramMeta, what: tuple[str, str, bool],
            series_uid: str, path: PathLike) -> Dataset:
    """``what``: (description, action, smoothed) as given to write_derived."""
    description, action, smoothed = what
    ds = copy.deepcopy(source)
    _check_derived_shape(ds, array, path)
    if "ModalityLUTSequence" in source:
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        slope, intercept = 1.0, 0.0
    else:
        slope, intercept = meta.rescale_slope, meta.rescale_intercept
    stored = _to_stored(array, slope, intercept, meta.bits_stored,
                        meta.pixel_representation == 1, meta.bits_allocated)
    for keyword in _DROP_FROM_DERIVED:
        if keyword in ds:
            del ds[keyword]
    source_ts = getattr(getattr(source, "file_meta", None), "TransferSyntaxUID", None)
    _set_derivation(ds, source, description, source_ts, smoothed)
    _set_new_series(ds, series_uid, action)
    _set_pixels(ds, stored)
    return ds


def _check_derived_shape(ds: Dataset, array: np.ndarray, path: PathLike) -> None:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = (int(ds.Rows), int(ds.Columns))
    if frames > 1:
        expected = (frames, *expected)
    if tuple(array.shape) != expected:
        raise MammoDenoiseError(
            f"cannot write a derived image of shape {tuple(array.shape)}: the source is "
            f"{'x'.join(map(str, expected))}", path=path)


def _set_derivation(ds: Dataset, source: Dataset, description: str, source_ts,
                    smoothed: bool) -> None:
    image_type = list(source.get("ImageType") or ["ORIGINAL", "PRIMARY"])
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:]]
    ds.DerivationDescription = description[:1024]  # ST holds 1024 characters
    if smoothed:
        # Denoising has no code of its own in CID 7203 (Image Derivation); Smoothing is nearest.
        ds.DerivationCodeSequence = DicomSequence([_code("113087", "DCM", "Smoothing")])
    elif "DerivationCodeSequence" in ds:
        del ds.DerivationCodeSequence  # the source's codes describe the source's derivation
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ref.PurposeOfReferenceCodeSequence = DicomSequence(
        [_code("121322", "DCM", "Source image for image processing operation")])
    ds.SourceImageSequence = DicomSequence([ref])
    # Once lossy compressed, always marked lossy (PS3.3 C.7.6.1.1.5): keep or add the flag.
    method = LOSSY_TRANSFER_SYNTAXES.get(source_ts)
    lossy = method is not None or str(source.get("LossyImageCompression", "")) == "01"
    ds.LossyImageCompression = "01" if lossy else "00"
    if method and not ds.get("LossyImageCompressionMethod"):
        ds.LossyImageCompressionMethod = method
    if "BurnedInAnnotation" not in ds:
        ds.BurnedInAnnotation = "NO"


def _set_new_series(ds: Dataset, series_uid: str, action: str) -> None:
    date, time = _now()
    ds.SOPInstanceUID = dcm_uid.generate_uid()
    ds.SeriesInstanceUID = series_uid
    try:
        number = int(ds.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        number = 0
    ds.SeriesNumber = number + DERIVED_SERIES_OFFSET
    ds.SeriesDescription = series_description(action, str(ds.get("SeriesDescription", "") or ""))
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time


def series_description(action: str, source: str = "") -> str:
    """``action`` then the source's description, "; "-separated, in whole parts that fit the 64
    characters of a LO: a chain of derivations reads newest first and never repeats a step."""
    parts = [p.strip() for p in [*action.split("; "), *source.split("; ")] if p.strip()]
    text = parts[0][:64] if parts else ""
    for part in parts[1:]:
        if len(text) + 2 + len(part) > 64:
            break
        text = f"{text}; {part}"
    return text


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


# --- brand-new MG instances ------------------------------------------------------------------

def write_mammogram(array: np.ndarray, path: PathLike, meta: MammogramMeta, *,
                    patient_name: str = "PHANTOM^SYNTHETIC", patient_id: str = "PHANTOM",
                    description: str | None = None) -> Path:
    """Write a 2D image as a new Digital Mammography X-Ray Image instance (a new study).

    The SOP class is For Processing when ``meta.presentation_intent`` is FOR PROCESSING, else
    For Presentation. Values (modality units) go through the inverse of ``meta``'s rescale,
    are rounded and clipped to ``meta.bits_stored`` unsigned bits (the DX family forbids signed
    pixels). Spacing, laterality, view, photometric interpretation, intensity relationship,
    manufacturer and window come from ``meta``; the window is written For Presentation only
    (the IOD forbids it For Processing) and defaults to the data's min..max range.
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise MammoDenoiseError(f"a mammogram must be a 2D image, got shape {array.shape}",
                                path=path)
    stored = _to_stored(array, meta.rescale_slope, meta.rescale_intercept, meta.bits_stored,
                        False, 16)
    ds = Dataset()
    processing = meta.presentation_intent == FOR_PROCESSING
    _set_patient_study_series(ds, meta, patient_name, patient_id, description, processing)
    _set_mammography_image(ds, meta)
    _set_pixel_module(ds, meta, stored, array, processing)
    return _save(ds, path)


def _set_patient_study_series(ds: Dataset, meta: MammogramMeta, patient_name: str,
                              patient_id: str, description: str | None, processing: bool) -> None:
    date, time = _now()
    ds.SOPClassUID = MG_FOR_PROCESSING_SOP if processing else MG_FOR_PRESENTATION_SOP
    ds.SOPInstanceUID = dcm_uid.generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.PatientBirthDate, ds.PatientSex = "", "F"
    ds.StudyInstanceUID = dcm_uid.generate_uid()
    ds.StudyDate, ds.StudyTime = date, time
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.Modality = "MG"
    ds.SeriesInstanceUID = dcm_uid.generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.AcquisitionDate, ds.AcquisitionTime = date, time
    if description:
        ds.SeriesDescription = description[:64]
    ds.PresentationIntentType = FOR_PROCESSING if processing else FOR_PRESENTATION
    ds.Manufacturer = meta.manufacturer
    ds.SoftwareVersions = f"napari-mammo-denoise {_version()}"
    ds.BodyPartExamined = "BREAST"


def _set_mammography_image(ds: Dataset, meta: MammogramMeta) -> None:
    laterality = meta.laterality if meta.laterality in ("L", "R", "B") else "U"
    view = meta.view_position.upper()
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImageLaterality = laterality
    ds.PatientOrientation = _patient_orientation(laterality, view)
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.OrganExposed = "BREAST"
    ds.DetectorType = ""
    ds.AnatomicRegionSequence = DicomSequence([_code("76752008", "SCT", "Breast")])
    if view in MG_VIEW_CODES:
        ds.ViewPosition = view
        value, meaning = MG_VIEW_CODES[view]
        item = _code(value, "SCT", meaning)
        item.ViewModifierCodeSequence = DicomSequence([])
        ds.ViewCodeSequence = DicomSequence([item])
    else:
        ds.ViewCodeSequence = DicomSequence([])
    ds.AcquisitionContextSequence = DicomSequence([])
    if meta.pixel_spacing_mm is not None:
        spacing = [float(v) for v in meta.pixel_spacing_mm]
        ds.ImagerPixelSpacing = spacing
        # Also as PixelSpacing (at the detector plane): what most viewers measure with.
        ds.PixelSpacing = spacing
    ds.BurnedInAnnotation = meta.burned_in_annotation or "NO"
    ds.LossyImageCompression = "00"


def _patient_orientation(laterality: str, view: str) -> list[str]:
    """Row and column directions for the usual hanging (nipple pointing away from chest wall)."""
    if laterality not in ("L", "R"):
        return ["A", "F"]
    row = "A" if laterality == "L" else "P"
    if view.startswith("CC") or view.startswith("XCC") or view == "FB":
        return [row, "R" if laterality == "L" else "L"]
    return [row, "F"]


def _set_pixel_module(ds: Dataset, meta: MammogramMeta, stored: np.ndarray, array: np.ndarray,
                      processing: bool) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = meta.photometric_interpretation
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored = 16, meta.bits_stored
    ds.HighBit, ds.PixelRepresentation = meta.bits_stored - 1, 0
    ds.RescaleIntercept, ds.RescaleSlope = meta.rescale_intercept, meta.rescale_slope
    ds.RescaleType = "US"
    ds.PixelIntensityRelationship = meta.pixel_intensity_relationship or "LIN"
    ds.PixelIntensityRelationshipSign = meta.pixel_intensity_relationship_sign or 1
    ds.PresentationLUTShape = "INVERSE" if meta.display_inverted else "IDENTITY"
    if not processing:  # the MG IOD allows a VOI window only For Presentation
        center, width = meta.window_center, meta.window_width
        if center is None or not width:
            low, high = float(array.min()), float(array.max())
            center, width = (low + high) / 2, max(high - low, 1.0)
        ds.WindowCenter, ds.WindowWidth = float(center), float(width)
    _set_pixels(ds, stored)
