"""read_mammogram on real-world files (pydicom's test data) and on every kind of bad input."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.io import read_mammogram

MR_VARIANTS = [  # the same 64x64 MR in many encodings
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
]


def pydicom_file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not available offline")
    return path


@pytest.mark.parametrize("name", MR_VARIANTS)
def test_pydicom_mr_encodings_agree(name):
    reference, _ = read_mammogram(pydicom_file("MR_small.dcm"))
    image, meta = read_mammogram(pydicom_file(name))
    np.testing.assert_array_equal(image, reference)
    assert (meta.modality, meta.pixel_spacing_mm) == ("MR", (0.3125, 0.3125))


def test_ct_rescale_gives_signed_modality_units():
    path = pydicom_file("CT_small.dcm")
    image, meta = read_mammogram(path)
    raw = pydicom.dcmread(path).pixel_array
    np.testing.assert_array_equal(image, raw.astype(np.float32) - 1024.0)
    assert (meta.rescale_intercept, meta.pixel_representation) == (-1024.0, 1)


def test_jpeg2000_lossy_nm_file():
    image, meta = read_mammogram(pydicom_file("JPEG2000.dcm"))
    assert image.shape == (1024, 256) and meta.lossy_compressed
    assert meta.transfer_syntax_uid == pydicom.uid.JPEG2000


def test_cr_monochrome1_keeps_raw_values():
    path = pydicom_file("dicomdirtests/77654033/CR1/6154")
    image, meta = read_mammogram(path)
    ds = pydicom.dcmread(path)
    np.testing.assert_allclose(image, ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept),
                               rtol=1e-6)
    assert meta.modality == "CR" and meta.display_inverted


def test_multi_frame_file_is_a_stack():
    image, meta = read_mammogram(pydicom_file("rtdose.dcm"))
    assert image.shape == meta.shape == (15, 10, 10)
    assert meta.n_frames == 15


def test_imager_pixel_spacing_is_preferred(mg_file, tmp_path):
    ds = pydicom.dcmread(mg_file)
    ds.ImagerPixelSpacing, ds.PixelSpacing = [0.1, 0.2], [0.09, 0.18]
    ds.save_as(tmp_path / "both.dcm")
    assert read_mammogram(tmp_path / "both.dcm")[1].pixel_spacing_mm == (0.1, 0.2)
    del ds.ImagerPixelSpacing
    ds.save_as(tmp_path / "pixel_only.dcm")
    assert read_mammogram(tmp_path / "pixel_only.dcm")[1].pixel_spacing_mm == (0.09, 0.18)


def test_multi_valued_window_and_voi_lut(mg_file, tmp_path):
    ds = pydicom.dcmread(mg_file)
    ds.WindowCenter, ds.WindowWidth = [2000, 3000], [400, 800]
    item = pydicom.Dataset()
    item.LUTDescriptor = [2, 0, 16]
    item.add_new("LUTData", "US", [0, 65535])
    ds.VOILUTSequence = [item]
    ds.save_as(tmp_path / "voi.dcm")
    meta = read_mammogram(tmp_path / "voi.dcm")[1]
    assert (meta.window_center, meta.window_width, meta.has_voi_lut) == (2000.0, 400.0, True)


# --- bad input -------------------------------------------------------------------------------

def expect_error(path, message: str) -> MammoDenoiseError:
    with pytest.raises(MammoDenoiseError) as info:
        read_mammogram(path)
    assert str(info.value) == f"{path}: {message}"
    return info.value


def test_nonexistent_path(tmp_path):
    expect_error(tmp_path / "nope.dcm", "no such file or folder")


def test_empty_file(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    expect_error(tmp_path / "empty.dcm", "empty file (0 bytes)")


def test_text_file_is_not_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("patient notes, not an image\n" * 20)
    expect_error(tmp_path / "notes.txt", "not a DICOM file")


def test_file_cut_inside_the_meta_header(mg_file, tmp_path):
    (tmp_path / "cut.dcm").write_bytes(mg_file.read_bytes()[:200])
    expect_error(tmp_path / "cut.dcm", "truncated DICOM file: nothing after the file meta header")


def test_file_cut_before_the_pixels(mg_file, tmp_path):
    (tmp_path / "cut.dcm").write_bytes(mg_file.read_bytes()[:600])
    expect_error(tmp_path / "cut.dcm", "no pixel data: the file ends before the pixels of this "
                 "Digital Mammography X-Ray Image Storage - For Processing (truncated file?)")


def test_file_cut_inside_the_pixels(mg_file, tmp_path):
    (tmp_path / "cut.dcm").write_bytes(mg_file.read_bytes()[:-100])
    with pytest.raises(MammoDenoiseError, match=r"cut\.dcm: cannot decode Explicit VR Little Endian "
                       r"pixel data \(truncated or corrupt\?\): .*less than expected \(6044 vs 6144") as info:
        read_mammogram(tmp_path / "cut.dcm")
    assert isinstance(info.value.__cause__, ValueError)  # pydicom's error, chained not shown


def test_structured_report_has_no_pixel_data():
    path = pydicom_file("reportsi.dcm")
    expect_error(path, "no pixel data: this is a Structured Report (Basic Text SR Storage), "
                 "not an image")


@pytest.mark.parametrize(("name", "photometric", "samples"), [
    ("SC_rgb_small_odd.dcm", "RGB", 3),
    ("examples_palette.dcm", "PALETTE COLOR", 1),
])
def test_colour_is_refused(name, photometric, samples):
    path = pydicom_file(name)
    expect_error(path, f"colour images are not supported (PhotometricInterpretation {photometric}, "
                 f"{samples} samples per pixel); a mammogram must be MONOCHROME1 or MONOCHROME2")


def test_float_pixels_with_nan_are_refused(mg_file, tmp_path):
    ds = pydicom.dcmread(mg_file)
    del ds.PixelData
    values = np.ones((64, 48), np.float32)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    ds.FloatPixelData = values.tobytes()
    ds.save_as(tmp_path / "finite.dcm")
    np.testing.assert_array_equal(read_mammogram(tmp_path / "finite.dcm")[0], values)
    values[3, 4] = np.inf
    ds.FloatPixelData = values.tobytes()
    ds.save_as(tmp_path / "inf.dcm")
    expect_error(tmp_path / "inf.dcm", "pixel data contains NaN or infinite values")


def test_empty_folder(tmp_path):
    expect_error(tmp_path, "folder contains no DICOM images")
