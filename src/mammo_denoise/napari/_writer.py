"""npe2 writer: an image layer -> a derived DICOM instance next to its source."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._layers import DERIVATION_KEY, META_KEY


def write_dicom(path: str, data, attributes: dict) -> list[str]:
    """Write ``data`` as a derived DICOM of the layer's source (``metadata["mammo_meta"]``).

    A layer read from DICOM (or derived from one: denoised, dose-simulated) becomes a DERIVED
    instance of the same study via ``write_derived``. A synthetic phantom (meta with no source
    header) becomes a new MG instance via ``write_mammogram``. A layer with no meta cannot be
    written: there is no patient/study to put it in.
    """
    from mammo_denoise.errors import MammoDenoiseError
    from mammo_denoise.io import write_derived, write_mammogram

    name = attributes.get("name", "image")
    metadata = attributes.get("metadata") or {}
    meta = metadata.get(META_KEY)
    if meta is None:
        raise MammoDenoiseError(f"layer '{name}' has no DICOM source: open a DICOM file first")
    array = np.asarray(data, dtype=np.float32)
    if getattr(meta, "dataset", None) is None:
        out = write_mammogram(array, path, meta)
    else:
        chain = metadata.get(DERIVATION_KEY) or ""
        description = chain or f"napari-mammo-denoise: {name}"
        # The source file is the original, so the series says every step, newest first, each
        # without its details in brackets (those stay in DerivationDescription).
        steps = [step.split(" (")[0].strip() for step in reversed(chain.split("; ")) if step.strip()]
        out = write_derived(array, meta, path, description=description,
                            action="; ".join(steps) or f"saved from napari as '{name}'",
                            smoothed="model" in metadata)  # the denoise widget records its model
    return [str(Path(out))]
