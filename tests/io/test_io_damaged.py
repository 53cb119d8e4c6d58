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
