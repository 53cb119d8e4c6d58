"""Small MG files and tool helpers shared by the io tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mammo_denoise.io import FOR_PROCESSING, MammogramMeta, write_mammogram

SHAPE = (64, 48)  # not square, so a transposed read cannot pass


@pytest.fixture
def mg_meta() -> MammogramMeta:
    return MammogramMeta(
        presentation_intent=FOR_PROCESSING,
        photometric_interpretation="MONOCHROME1",
        pixel_intensity_relationship="LIN",
        bits_stored=14,
        pixel_spacing_mm=(0.07, 0.085),
        laterality="L",
        view_position="MLO",
        manufacturer="Synthetic Detector Co",
        window_center=8000.0,
        window_width=12000.0,
    )


@pytest.fixture
def mg_pixels() -> np.ndarray:
    """Noisy 14-bit values: lossless codecs must reproduce every one of them."""
    return np.random.default_rng(1234).integers(0, 2**14, SHAPE).astype(np.float32)


@pytest.fixture
def mg_file(tmp_path, mg_pixels, mg_meta) -> Path:
    return write_mammogram(mg_pixels, tmp_path / "mg.dcm", mg_meta)


@pytest.fixture
def smooth_file(tmp_path, mg_meta) -> tuple[Path, np.ndarray]:
    """A smooth 12-bit image, for lossy codecs whose error must stay small."""
    y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    pixels = (1000 + 20 * x + 10 * y).astype(np.float32)
    meta = MammogramMeta(**{**mg_meta.__dict__, "bits_stored": 12})
    return write_mammogram(pixels, tmp_path / "smooth.dcm", meta), pixels


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt: dicom3tools / dcmtk / libgdcm-tools)")
    return path


def _run_tool(*args: str | Path) -> None:
    _need(str(args[0]))
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


def _dciodvfy_errors(path: Path) -> list[str]:
    """The 'Error' lines dciodvfy prints for a file (warnings are allowed)."""
    _need("dciodvfy")
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    lines = (out.stdout + out.stderr).splitlines()
    assert any("Mammography" in line for line in lines), lines  # it recognised the IOD
    return [line for line in lines if line.startswith("Error")]


@pytest.fixture
def run_tool():
    """Run an external converter (gdcmconv, dcmconv, ...); skip if it is not installed."""
    return _run_tool


@pytest.fixture
def dciodvfy_errors():
    """dciodvfy's Error lines for a file; skips the test if dicom3tools is absent."""
    return _dciodvfy_errors
