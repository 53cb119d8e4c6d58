"""write_mammogram -> read_mammogram round trips and MG conformance."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.io import (
    FOR_PRESENTATION,
    FOR_PROCESSING,
    MammogramMeta,
    read_mammogram,
    write_mammogram,
)
from mammo_denoise.io.meta import MG_FOR_PRESENTATION_SOP, MG_FOR_PROCESSING_SOP


def test_round_trip_is_exact_and_fills_every_field(mg_file, mg_pixels, mg_meta):
    image, meta = read_mammogram(mg_file)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, mg_pixels)
    assert meta.path == str(mg_file)
    assert meta.files == (str(mg_file),)
    assert meta.modality == "MG"
    assert meta.sop_class_uid == MG_FOR_PROCESSING_SOP
    assert meta.presentation_intent == FOR_PROCESSING
    assert meta.photometric_interpretation == "MONOCHROME1"
    assert meta.display_inverted is True
    assert meta.pixel_intensity_relationship == "LIN"
    assert meta.pixel_intensity_relationship_sign == 1
    assert meta.is_linear
    assert (meta.rescale_slope, meta.rescale_intercept) == (1.0, 0.0)
    assert (meta.bits_stored, meta.bits_allocated, meta.pixel_representation) == (14, 16, 0)
    assert meta.pixel_spacing_mm == (0.07, 0.085)
    assert (meta.laterality, meta.view_position) == ("L", "MLO")
    assert meta.layer_name == "L MLO"
    assert meta.manufacturer == "Synthetic Detector Co"
    assert (meta.window_center, meta.window_width) == (None, None)  # forbidden For Processing
    assert (meta.n_frames, meta.shape) == (1, (64, 48))
    assert meta.transfer_syntax_uid == pydicom.uid.ExplicitVRLittleEndian
    assert meta.image_type == ("ORIGINAL", "PRIMARY")
    assert meta.burned_in_annotation == "NO"
    assert not meta.lossy_compressed and not meta.has_voi_lut
    assert meta.sop_instance_uid == meta.dataset.SOPInstanceUID
    assert "PixelData" not in meta.dataset


def test_header_carries_mg_codes_and_patient(mg_file):
    ds = pydicom.dcmread(mg_file)
    view = ds.ViewCodeSequence[0]
    assert (view.CodeValue, view.CodingSchemeDesignator, view.CodeMeaning) == (
        "399368009", "SCT", "medio-lateral oblique")
    assert ds.ViewPosition == "MLO"
    assert ds.AnatomicRegionSequence[0].CodeValue == "76752008"
    assert (str(ds.PatientName), ds.PatientID) == ("PHANTOM^SYNTHETIC", "PHANTOM")
    assert ds.ImagerPixelSpacing == ds.PixelSpacing == [0.07, 0.085]
    assert (ds.BitsStored, ds.HighBit, ds.PresentationLUTShape) == (14, 13, "INVERSE")
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_view_is_read_from_view_code_sequence_when_view_position_is_absent(mg_file, tmp_path):
    ds = pydicom.dcmread(mg_file)
    del ds.ViewPosition
    ds.ViewCodeSequence[0].CodeValue = "unknown-code"  # so only the meaning can match
    ds.save_as(tmp_path / "nopos.dcm")
    assert read_mammogram(tmp_path / "nopos.dcm")[1].view_position == "MLO"


@pytest.mark.parametrize("intent", [FOR_PROCESSING, FOR_PRESENTATION])
def test_written_mammogram_passes_dciodvfy(tmp_path, mg_pixels, mg_meta, intent, dciodvfy_errors):
    meta = MammogramMeta(**{**mg_meta.__dict__, "presentation_intent": intent,
                            "window_center": None, "window_width": None})
    path = write_mammogram(mg_pixels, tmp_path / "x.dcm", meta)
    assert dciodvfy_errors(path) == []


def test_for_presentation_gets_its_sop_class_and_a_window(tmp_path, mg_pixels, mg_meta):
    meta = MammogramMeta(presentation_intent=FOR_PRESENTATION, bits_stored=14,
                         pixel_spacing_mm=(0.1, 0.1), laterality="R", view_position="CC")
    _, back = read_mammogram(write_mammogram(mg_pixels, tmp_path / "p.dcm", meta))
    assert back.sop_class_uid == MG_FOR_PRESENTATION_SOP
    low, high = float(mg_pixels.min()), float(mg_pixels.max())
    assert back.contrast_limits == (low, high)  # no window given: the data's range
    assert pydicom.dcmread(tmp_path / "p.dcm").PatientOrientation == ["P", "L"]
    given = MammogramMeta(**{**mg_meta.__dict__, "presentation_intent": FOR_PRESENTATION})
    _, back = read_mammogram(write_mammogram(mg_pixels, tmp_path / "w.dcm", given))
    assert (back.window_center, back.window_width) == (8000.0, 12000.0)


def test_values_are_rounded_clipped_and_rescaled(tmp_path, mg_meta):
    meta = MammogramMeta(**{**mg_meta.__dict__, "rescale_slope": 0.5, "rescale_intercept": -100.0})
    values = np.array([[-500.0, -100.0, 0.26, 1.0], [100.0, 8091.4, 8092.0, 1e6]], np.float32)
    path = write_mammogram(values, tmp_path / "r.dcm", meta)
    stored = pydicom.dcmread(path).pixel_array
    np.testing.assert_array_equal(stored, [[0, 0, 201, 202], [400, 16383, 16383, 16383]])
    image, back = read_mammogram(path)
    assert (back.rescale_slope, back.rescale_intercept) == (0.5, -100.0)
    np.testing.assert_array_equal(image, stored * 0.5 - 100.0)


def test_write_mammogram_refuses_a_stack_and_nan(tmp_path, mg_meta):
    with pytest.raises(MammoDenoiseError, match=r"a mammogram must be a 2D image, got shape \(2, 4, 4\)"):
        write_mammogram(np.zeros((2, 4, 4)), tmp_path / "s.dcm", mg_meta)
    bad = np.zeros((4, 4))
    bad[1, 1] = np.nan
    with pytest.raises(MammoDenoiseError, match="^cannot write DICOM: the image contains NaN or infinite values$"):
        write_mammogram(bad, tmp_path / "n.dcm", mg_meta)
