"""Reader, writer and sample data of the napari plugin, on DICOMs written by the io writers."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.io import read_mammogram
from mammo_denoise.napari._reader import get_reader, read_dicom
from mammo_denoise.napari._sample_data import sample_full_dose, sample_low_dose
from mammo_denoise.napari._writer import write_dicom
from mammo_denoise.physics.params import NoiseParams


def test_reader_file(mg_file, mg_pixels):
    reader = get_reader(str(mg_file))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(mg_file))
    assert kind == "image"
    np.testing.assert_array_equal(data, mg_pixels)  # MONOCHROME1 data not inverted
    assert kwargs["name"] == "R MLO"
    assert "DOE" not in kwargs["name"]
    assert kwargs["scale"] == (0.07, 0.085)
    assert kwargs["contrast_limits"] == (1000.0, 7000.0)  # VOI window 4000 +- 3000
    assert kwargs["colormap"] == "gray_r"
    meta = kwargs["metadata"]["mammo_meta"]
    assert meta.laterality == "R" and meta.display_inverted


def test_reader_in_viewer(make_napari_viewer, mg_file):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(mg_file), plugin="napari-mammo-denoise")
    assert layer.name == "R MLO"
    assert tuple(layer.scale) == pytest.approx((0.07, 0.085))
    assert tuple(layer.contrast_limits) == (1000.0, 7000.0)
    assert layer.colormap.name == "gray_r"
    assert layer.metadata["mammo_meta"].view_position == "MLO"


def test_reader_folder_one_layer_per_view(mg_folder):
    reader = get_reader(str(mg_folder))
    assert reader is not None
    layers = reader(str(mg_folder))
    names = sorted(kw["name"] for _, kw, _ in layers)
    assert names == ["L CC", "R MLO"]
    cmaps = {kw["name"]: kw["colormap"] for _, kw, _ in layers}
    # both raw (FOR PROCESSING, LIN): shown with the breast bright, MONOCHROME2 as well as 1
    assert cmaps == {"L CC": "gray_r", "R MLO": "gray_r"}


def test_reader_declines_other_files(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("hello")
    assert get_reader(str(txt)) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert get_reader(str(empty)) is None


def test_reader_bad_dicom_raises_clear_error(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not a dicom file at all")
    with pytest.raises(MammoDenoiseError, match="broken.dcm"):
        read_dicom(str(bad))


def test_writer_round_trip(tmp_path, mg_file, mg_pixels):
    [(data, kwargs, _)] = read_dicom(str(mg_file))
    denoised = (data * 0.5 + 100).astype(np.float32)
    meta = dict(kwargs["metadata"], derivation="denoised with model 'tiny'")
    out = tmp_path / "derived.dcm"
    [written] = write_dicom(str(out), denoised, {"name": "R MLO denoised", "metadata": meta})
    back, back_meta = read_mammogram(written)
    np.testing.assert_allclose(back, np.round(denoised), atol=1)
    assert back_meta.laterality == "R"
    import pydicom

    ds = pydicom.dcmread(written)
    assert "DERIVED" in list(ds.ImageType)
    assert "tiny" in str(ds.DerivationDescription)
    src = pydicom.dcmread(mg_file)
    assert ds.SOPInstanceUID != src.SOPInstanceUID
    assert ds.StudyInstanceUID == src.StudyInstanceUID


def test_writer_without_source_errors(tmp_path):
    with pytest.raises(MammoDenoiseError, match="layer 'blobs' has no DICOM source: open a DICOM"):
        write_dicom(str(tmp_path / "x.dcm"), np.zeros((8, 8)), {"name": "blobs", "metadata": {}})


def test_writer_in_viewer_reports_error(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.float32), name="plain")
    with pytest.raises(Exception, match="has no DICOM source"):
        viewer.layers.save(str(tmp_path / "plain.dcm"), selected=False,
                           plugin="napari-mammo-denoise")


def test_sample_data():
    [(full, kw_full, kind)] = sample_full_dose()
    [(low, kw_low, _)] = sample_low_dose()
    assert kind == "image" and full.shape == (1024, 768) and full.dtype == np.float32
    assert kw_full["scale"] == (0.07, 0.07)
    assert isinstance(kw_full["metadata"]["noise_params"], NoiseParams)
    assert kw_full["metadata"]["mammo_meta"].laterality
    assert "20 %" in kw_low["name"] and "100 %" in kw_full["name"]
    # same anatomy, a fifth of the photons: the signal above offset scales with the dose
    off = kw_full["metadata"]["noise_params"].offset
    ratio = np.median(low - off) / np.median(full - off)
    assert ratio == pytest.approx(0.2, rel=0.1)


def test_sample_data_phantom_written_as_new_instance(tmp_path):
    [(full, kw, _)] = sample_full_dose()
    [path] = write_dicom(str(tmp_path / "ph.dcm"), full, {"name": kw["name"], "metadata": kw["metadata"]})
    back, meta = read_mammogram(path)
    assert back.shape == full.shape and meta.layer_name == "L CC"
