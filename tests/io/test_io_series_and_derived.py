"""Folder/list stacking and derived (denoised) instances."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.io import read_mammogram, write_derived, write_mammogram


@pytest.fixture
def series_folder(tmp_path, mg_meta):
    """Three MG images whose InstanceNumber order (b, c, a) differs from name order, plus clutter."""
    folder = tmp_path / "series"
    rng = np.random.default_rng(7)
    frames = {}
    for name, number in (("a", 3), ("b", 1), ("c", 2)):
        pixels = rng.integers(0, 2**14, (32, 24)).astype(np.float32)
        path = write_mammogram(pixels, folder / f"{name}.dcm", mg_meta)
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = number
        ds.save_as(path)
        frames[number] = pixels
    (folder / "README.txt").write_text("exported by a PACS\n")
    for clutter in ("dicomdirtests/DICOMDIR", "reportsi.dcm"):
        source = get_testdata_file(clutter)
        if source:
            shutil.copy(source, folder / clutter.split("/")[-1])
    return folder, np.stack([frames[1], frames[2], frames[3]])


def test_folder_is_sorted_by_instance_number_and_skips_clutter(series_folder):
    folder, expected = series_folder
    stack, meta = read_mammogram(folder)
    np.testing.assert_array_equal(stack, expected)
    assert [p.split("/")[-1] for p in meta.files] == ["b.dcm", "c.dcm", "a.dcm"]
    assert (meta.n_frames, meta.shape, meta.path) == (3, (3, 32, 24), str(folder))


def test_list_of_files_is_stacked_in_instance_order(series_folder):
    folder, expected = series_folder
    stack, meta = read_mammogram([folder / "a.dcm", folder / "c.dcm", folder / "b.dcm"])
    np.testing.assert_array_equal(stack, expected)


def test_mismatched_sizes_are_refused(series_folder, mg_meta):
    folder, _ = series_folder
    write_mammogram(np.zeros((16, 16)), folder / "z.dcm", mg_meta)  # InstanceNumber 1, after b
    with pytest.raises(MammoDenoiseError) as info:
        read_mammogram(folder)
    assert str(info.value) == (f"{folder / 'z.dcm'}: image size 16x16 differs from b.dcm (32x24); "
                               "only equally sized images can be stacked")


def test_list_with_a_report_names_it(series_folder):
    folder, _ = series_folder
    if not (folder / "reportsi.dcm").exists():
        pytest.skip("pydicom test file reportsi.dcm is not available offline")
    with pytest.raises(MammoDenoiseError, match=r"reportsi\.dcm: no pixel data: this is a Structured Report"):
        read_mammogram([folder / "a.dcm", folder / "reportsi.dcm"])


# --- write_derived ---------------------------------------------------------------------------

def test_derived_instance_header(mg_file, dciodvfy_errors, tmp_path):
    image, meta = read_mammogram(mg_file)
    out = write_derived(image, meta, tmp_path / "out" / "denoised.dcm",
                        description="eckert-resnet, dose 0.5, Anscombe exact inverse")
    src, ds = pydicom.dcmread(mg_file), pydicom.dcmread(out)
    assert ds.SOPInstanceUID != src.SOPInstanceUID
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    for same in ("StudyInstanceUID", "PatientName", "PatientID", "SOPClassUID", "ImageLaterality",
                 "BurnedInAnnotation", "PhotometricInterpretation", "ImagerPixelSpacing"):
        assert ds[same].value == src[same].value, same
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert ds.DerivationDescription == "eckert-resnet, dose 0.5, Anscombe exact inverse"
    assert ds.DerivationCodeSequence[0].CodeValue == "113087"
    ref = ds.SourceImageSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (
        src.SOPClassUID, src.SOPInstanceUID)
    assert (ds.SeriesNumber, ds.LossyImageCompression) == (1001, "00")
    assert dciodvfy_errors(out) == []


def test_derived_values_go_back_through_rescale_rounded_and_clipped(mg_file, tmp_path):
    _, meta = read_mammogram(mg_file)
    values = np.full(meta.shape, 100.4, np.float32)
    values[0, :3] = [-5.0, 16383.6, 99999.0]
    back, _ = read_mammogram(write_derived(values, meta, tmp_path / "d.dcm"))
    expected = np.full(meta.shape, 100.0, np.float32)
    expected[0, :3] = [0.0, 16383.0, 16383.0]
    np.testing.assert_array_equal(back, expected)


def test_derived_from_signed_ct_keeps_modality_units(tmp_path):
    image, meta = read_mammogram(get_testdata_file("CT_small.dcm"))
    back, back_meta = read_mammogram(write_derived(image + 1.4, meta, tmp_path / "ct.dcm"))
    np.testing.assert_array_equal(back, image + 1.0)
    assert (back_meta.rescale_intercept, back_meta.pixel_representation) == (-1024.0, 1)


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_implicit.dcm",
                                  "MR_small_RLE.dcm", "image_dfl.dcm"])
def test_derived_from_any_encoding_is_explicit_little_endian(name, tmp_path):
    image, meta = read_mammogram(get_testdata_file(name))
    back, back_meta = read_mammogram(write_derived(image, meta, tmp_path / "d.dcm"))
    np.testing.assert_array_equal(back, image)
    assert back_meta.transfer_syntax_uid == pydicom.uid.ExplicitVRLittleEndian


def test_derived_from_multi_frame_source_is_multi_frame(tmp_path):
    stack, meta = read_mammogram(get_testdata_file("rtdose.dcm"))
    back, back_meta = read_mammogram(write_derived(stack, meta, tmp_path / "dose.dcm"))
    np.testing.assert_array_equal(back, stack)
    assert back_meta.n_frames == 15


def test_derived_from_a_folder_writes_one_file_per_frame(series_folder, tmp_path):
    folder, expected = series_folder
    stack, meta = read_mammogram(folder)
    out = write_derived(stack + 1, meta, tmp_path / "denoised")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a.dcm", "b.dcm", "c.dcm"]
    back, _ = read_mammogram(out)
    np.testing.assert_array_equal(back, np.minimum(expected + 1, 2**14 - 1))
    for name in names:
        ds, src = pydicom.dcmread(out / name), pydicom.dcmread(folder / name)
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    series = {pydicom.dcmread(out / n).SeriesInstanceUID for n in names}
    assert len(series) == 1 and series != {meta.dataset.SeriesInstanceUID}


def test_derived_from_lossy_source_stays_marked_lossy(smooth_file, tmp_path, run_tool):
    run_tool("gdcmconv", "--j2k", "--lossy", "-q", "80", smooth_file[0], tmp_path / "lossy.dcm")
    image, meta = read_mammogram(tmp_path / "lossy.dcm")
    ds = pydicom.dcmread(write_derived(image, meta, tmp_path / "d.dcm"))
    assert ds.LossyImageCompression == "01"
    assert "ISO_15444_1" in str(ds.get("LossyImageCompressionMethod", ""))


def test_derived_shape_must_match_source(mg_file, tmp_path):
    _, meta = read_mammogram(mg_file)
    with pytest.raises(MammoDenoiseError) as info:
        write_derived(np.zeros((10, 10)), meta, tmp_path / "bad.dcm")
    assert str(info.value) == (f"{tmp_path / 'bad.dcm'}: cannot write a derived image of shape "
                               "(10, 10): the source is 64x48")
