"""What a mammogram's DICOM header tells the rest of the product."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

FOR_PROCESSING = "FOR PROCESSING"
FOR_PRESENTATION = "FOR PRESENTATION"
MG_FOR_PRESENTATION_SOP = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING_SOP = "1.2.840.10008.5.1.4.1.1.1.2.1"


# Projection radiographs: what the denoising models were made for (MG) and the same physics (DX, CR).
DENOISABLE_MODALITIES = ("MG", "DX", "CR")


def check_modality(meta: "MammogramMeta", override: str = "") -> None:
    """Refuse an image of another modality (CT, MR, ...); one without a modality passes.

    ``override`` says how the caller lets the user go ahead anyway (appended to the message).
    """
    modality = (meta.modality or "").strip().upper()
    if modality and modality not in DENOISABLE_MODALITIES:
        from mammo_denoise.errors import MammoDenoiseError

        raise MammoDenoiseError(
            f"modality {modality}: the denoising models are made for mammograms and radiographs "
            f"({', '.join(DENOISABLE_MODALITIES)}), not {modality} images"
            + (f"; {override}" if override else ""), path=meta.path)


def known_spacing(value) -> tuple[float, float] | None:
    """``(row, column)`` spacing in mm, or None where it is unknown: missing, not two numbers,
    zero, negative or non-finite (real files carry ``0\\0``, and a scale of 0 breaks viewers)."""
    try:
        row, column = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    ok = all(math.isfinite(v) and v > 0 for v in (row, column))
    return (row, column) if ok else None


@dataclass(frozen=True)
class MammogramMeta:
    """Typed view of the header fields that matter for physics, display and derivation.

    Pixel arrays returned next to this meta are in *modality units* (rescale slope and
    intercept applied) and never inverted: MONOCHROME1 keeps its raw values, and
    ``display_inverted`` tells a viewer to flip the grey scale.
    """

    path: str | None = None
    modality: str = ""
    sop_class_uid: str = ""
    presentation_intent: str = ""  # FOR PROCESSING / FOR PRESENTATION / "" when absent
    photometric_interpretation: str = "MONOCHROME2"
    pixel_intensity_relationship: str = ""  # LIN / LOG / "" when absent
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    bits_stored: int = 16
    bits_allocated: int = 16
    pixel_representation: int = 0  # 0 unsigned, 1 signed
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column)
    laterality: str = ""  # L / R
    view_position: str = ""  # CC / MLO / ...
    manufacturer: str = ""
    window_center: float | None = None
    window_width: float | None = None
    n_frames: int = 1
    shape: tuple[int, ...] = ()
    transfer_syntax_uid: str = ""
    files: tuple[str, ...] = ()  # every file behind the array (a folder or list)
    sop_instance_uid: str = ""
    image_type: tuple[str, ...] = ()
    pixel_intensity_relationship_sign: int | None = None  # +1: higher value = more X-rays
    has_voi_lut: bool = False  # a VOI LUT Sequence is present (window values may be absent)
    lossy_compressed: bool = False  # LossyImageCompression "01" or a lossy transfer syntax
    burned_in_annotation: str = ""  # YES / NO / "" when absent
    # Header of the source instance without PixelData, for write_derived; not compared or shown.
    dataset: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        # Every user of the spacing (layer scale, writer, plots in mm) sees a usable one or None.
        object.__setattr__(self, "pixel_spacing_mm", known_spacing(self.pixel_spacing_mm))

    @property
    def display_inverted(self) -> bool:
        """True for MONOCHROME1: high values must be displayed dark."""
        return self.photometric_interpretation == "MONOCHROME1"

    @property
    def is_linear(self) -> bool:
        """Raw data proportional to detected quanta, where the Poisson-Gaussian model holds."""
        if self.pixel_intensity_relationship:
            return self.pixel_intensity_relationship.upper() == "LIN" and (
                self.presentation_intent != FOR_PRESENTATION
            )
        return self.presentation_intent == FOR_PROCESSING

    @property
    def layer_name(self) -> str:
        """A display name from laterality and view only (never patient data)."""
        parts = [p for p in (self.laterality, self.view_position) if p]
        return " ".join(parts) if parts else (self.modality or "image")

    @property
    def contrast_limits(self) -> tuple[float, float] | None:
        """Display range from the VOI window (centre/width), if the header has one."""
        if self.window_center is None or not self.window_width:
            return None
        half = self.window_width / 2.0
        return (self.window_center - half, self.window_center + half)
