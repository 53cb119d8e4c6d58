"""npe2 reader: DICOM mammograms (files, lists of files, folders) -> napari image layers."""

from __future__ import annotations

import os
from pathlib import Path

from ._layers import image_layer_kwargs

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom_file(path: str | os.PathLike) -> bool:
    """A ``.dcm``/``.dicom`` file, or any file with the DICM preamble (extensionless exports)."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def find_dicom_files(path: str | os.PathLike | list) -> list[Path]:
    """DICOM files behind a path: the file itself, or a folder's DICOM files (sorted, recursive)."""
    if isinstance(path, (list, tuple)):
        out: list[Path] = []
        for p in path:
            out.extend(find_dicom_files(p))
        return out
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if not f.name.startswith(".") and is_dicom_file(f))
    return [p] if is_dicom_file(p) else []


def get_reader(path):
    """Return the reader function if ``path`` holds DICOM, else ``None`` (let other readers try)."""
    paths = path if isinstance(path, (list, tuple)) else [path]
    for p in paths:
        p = Path(p)
        if p.is_dir():
            if not find_dicom_files(p):
                return None
        elif p.suffix.lower() not in DICOM_SUFFIXES and not is_dicom_file(p):
            return None
    return read_dicom


def read_layer_data(path) -> list[tuple]:
    """One file -> ``[(data, kwargs, "image")]`` via the core reader."""
    from mammo_denoise.io import read_mammogram

    data, meta = read_mammogram(path)
    return [(data, image_layer_kwargs(data, meta), "image")]


def read_dicom(path) -> list[tuple]:
    """Reader: a file gives one layer; a folder or a list gives one layer per image file.

    Mammography exams put each view (L CC, R MLO, ...) in its own file, with different sizes,
    so a folder is not stacked. Unreadable files in a folder are reported together; the readable
    ones still open.
    """
    from mammo_denoise.errors import MammoDenoiseError

    paths = path if isinstance(path, (list, tuple)) else [path]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        files.extend(find_dicom_files(p) if p.is_dir() else [p])
    if not files:
        raise MammoDenoiseError("no DICOM files found", path=paths[0] if paths else None)
    layers, errors = [], []
    for f in files:
        try:
            layers.extend(read_layer_data(f))
        except Exception as exc:  # noqa: BLE001 - reported below, other files still open
            errors.append(str(exc) if isinstance(exc, MammoDenoiseError) else f"{f}: {exc}")
    if errors:
        if not layers:
            raise MammoDenoiseError("; ".join(errors))
        from napari.utils.notifications import show_warning

        show_warning("Some files could not be read: " + "; ".join(errors))
    return layers
