"""Damaged and oversized files: one clear line naming the file, no library warning, no traceback."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.io import read_mammogram

CUT_J2K = "the pixel data are truncated (the file ends inside them; the header is complete)"


def pydicom_data_file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom-data file {name} is not available (pip install pydicom-data)")
    return path


def _read_error(path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a library warning that gets through fails the test
        with pytest.raises(MammoDenoiseError) as info:
            read_mammogram(path)
    return str(info.value)


def test_jpeg2000_cut_inside_its_pixel_data(mg_file, tmp_path):
    ds = pydicom.dcmread(mg_file)
    ds.compress(JPEG2000Lossless)
    whole = tmp_path / "j2k.dcm"
    ds.save_as(whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 2000])
    assert _read_error(cut) == f"{cut}: {CUT_J2K}"


def test_pydicom_data_jpeg2000_too_short():
    path = pydicom_data_file("emri_small_jpeg_2k_lossless_too_short.dcm")
    assert _read_error(path) == f"{path}: {CUT_J2K}"


def test_pydicom_data_cr_cut_at_2_mb(tmp_path):
    cut = tmp_path / "RG1_cut.dcm"
    cut.write_bytes(open(pydicom_data_file("RG1_J2KR.dcm"), "rb").read(2_000_000))
    assert _read_error(cut) == f"{cut}: {CUT_J2K}"


def _declaring(mg_file, tmp_path, rows, columns, frames=None):
    """The small file with a header that declares another size (its pixel data stay small)."""
    ds = pydicom.dcmread(mg_file)
    ds.Rows, ds.Columns = rows, columns
    if frames:
        ds.NumberOfFrames = frames
    out = tmp_path / "huge.dcm"
    ds.save_as(out)
    return out


def test_a_huge_declared_size_is_refused_before_decoding(mg_file, tmp_path):
    huge = _declaring(mg_file, tmp_path, 40000, 40000)
    assert _read_error(huge) == (
        f"{huge}: the header declares 40000 x 40000 pixels x 1 frame(s) of 2 bytes "
        "(1.6e+09 pixels, 3.2 GB stored); the limit is 2e+08 pixels "
        "(set MAMMO_DENOISE_MAX_PIXELS to raise it)")


def test_frames_count_towards_the_limit(mg_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMMO_DENOISE_MAX_PIXELS", "1e6")
    huge = _declaring(mg_file, tmp_path, 1000, 500, frames=3)
    assert "1000 x 500 pixels x 3 frame(s)" in _read_error(huge)
    assert "the limit is 1e+06 pixels" in _read_error(huge)


def test_the_limit_is_configurable(mg_file, mg_pixels, monkeypatch):
    monkeypatch.setenv("MAMMO_DENOISE_MAX_PIXELS", "1000")
    assert "the limit is 1000 pixels" in _read_error(mg_file)
    monkeypatch.setenv("MAMMO_DENOISE_MAX_PIXELS", str(mg_pixels.size))
    np.testing.assert_array_equal(read_mammogram(mg_file)[0], mg_pixels)
    monkeypatch.setenv("MAMMO_DENOISE_MAX_PIXELS", "lots")
    assert _read_error(mg_file) == (
        "MAMMO_DENOISE_MAX_PIXELS must be a positive number of pixels, got 'lots'")


def test_running_out_of_memory_while_reading_is_one_line(mg_file, monkeypatch):
    import mammo_denoise.io.read as read

    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 5.96 GiB for an array")

    monkeypatch.setattr(read, "_decode", exhausted)
    assert _read_error(mg_file) == (
        f"{mg_file}: not enough memory to read this image (Unable to allocate 5.96 GiB for an array)")


def test_cli_reports_a_huge_file_on_one_line(mg_file, tmp_path, capsys):
    from mammo_denoise.cli import main

    huge = _declaring(mg_file, tmp_path, 40000, 40000)
    assert main(["noise-params", str(huge)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"mammo-denoise noise-params: error: {huge}: the header declares 40000 x 40000")
