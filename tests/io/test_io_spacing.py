"""A pixel spacing that is missing, zero, negative or non-finite is unknown (None), everywhere."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file

from mammo_denoise.io import MammogramMeta, read_mammogram, write_mammogram


@pytest.mark.parametrize("value", [[0, 0], [0.1, 0], [-0.1, -0.1], ["nan", "0.1"], ["inf", "inf"]])
def test_unusable_pixel_spacing_reads_as_unknown(mg_file, tmp_path, value):
    ds = pydicom.dcmread(mg_file)
    del ds.ImagerPixelSpacing
    ds.PixelSpacing = value
    ds.save_as(tmp_path / "odd.dcm")
    assert read_mammogram(tmp_path / "odd.dcm")[1].pixel_spacing_mm is None


def test_a_zero_imager_spacing_falls_back_to_pixel_spacing(mg_file, tmp_path):
    ds = pydicom.dcmread(mg_file)
    ds.ImagerPixelSpacing = [0, 0]
    ds.PixelSpacing = [0.1, 0.2]
    ds.save_as(tmp_path / "imager_zero.dcm")
    assert read_mammogram(tmp_path / "imager_zero.dcm")[1].pixel_spacing_mm == (0.1, 0.2)


def test_the_meta_itself_never_holds_an_unusable_spacing():
    assert MammogramMeta(pixel_spacing_mm=(0.0, 0.0)).pixel_spacing_mm is None
    assert MammogramMeta(pixel_spacing_mm=(float("nan"), 0.1)).pixel_spacing_mm is None
    assert MammogramMeta(pixel_spacing_mm=(0.07, 0.085)).pixel_spacing_mm == (0.07, 0.085)


def test_writer_leaves_an_unknown_spacing_out(mg_pixels, mg_meta, tmp_path):
    meta = MammogramMeta(**{**mg_meta.__dict__, "pixel_spacing_mm": (0.0, 0.0)})
    ds = pydicom.dcmread(write_mammogram(mg_pixels, tmp_path / "no_spacing.dcm", meta))
    assert "ImagerPixelSpacing" not in ds and "PixelSpacing" not in ds


def test_pydicom_data_cr_with_zero_spacing():
    path = get_testdata_file("RG1_J2KR.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    assert str(pydicom.dcmread(path, stop_before_pixels=True).PixelSpacing) == "[0.000, 0.000]"
    assert read_mammogram(path)[1].pixel_spacing_mm is None
