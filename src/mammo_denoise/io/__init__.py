"""DICOM input/output: read any transfer syntax into modality units, write derived or new MG."""

from mammo_denoise.io.meta import FOR_PRESENTATION, FOR_PROCESSING, MammogramMeta
from mammo_denoise.io.read import read_mammogram
from mammo_denoise.io.write import write_derived, write_derived_series, write_mammogram

__all__ = [
    "FOR_PRESENTATION",
    "FOR_PROCESSING",
    "MammogramMeta",
    "read_mammogram",
    "write_derived",
    "write_derived_series",
    "write_mammogram",
]
