"""What a layer saved as DICOM says was done to it."""

from __future__ import annotations

import numpy as np
import pydicom

from mammo_denoise.napari._reader import read_dicom
from mammo_denoise.napari._writer import write_dicom

DOSE = "simulated 20 % dose (moments, seed 0, offset 40, gain 0.5, sigma_e 3)"
DENOISE = "denoised with model 'tiny' (napari-mammo-denoise)"


def _save(mg_file, tmp_path, metadata):
    [(data, kwargs, _)] = read_dicom(str(mg_file))
    meta = dict(kwargs["metadata"], **metadata)
    [path] = write_dicom(str(tmp_path / "out.dcm"), data, {"name": "x", "metadata": meta})
    return pydicom.dcmread(path)


def test_a_dose_simulated_layer_claims_no_smoothing(mg_file, tmp_path):
    ds = _save(mg_file, tmp_path, {"derivation": DOSE})
    assert ds.SeriesDescription == "simulated 20 % dose"
    assert ds.DerivationDescription == DOSE
    assert "DerivationCodeSequence" not in ds


def test_a_denoised_dose_simulation_lists_each_step_once_newest_first(mg_file, tmp_path):
    ds = _save(mg_file, tmp_path, {"derivation": f"{DOSE}; {DENOISE}", "model": "tiny"})
    assert ds.SeriesDescription == "denoised with model 'tiny'; simulated 20 % dose"
    assert [c.CodeMeaning for c in ds.DerivationCodeSequence] == ["Smoothing"]
    np.testing.assert_equal(ds.pixel_array.shape, (160, 128))
