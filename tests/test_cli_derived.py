"""What derived files say about themselves: SeriesDescription and derivation codes."""

from __future__ import annotations

import shutil
import subprocess

import pydicom
import pytest

from mammo_denoise.cli import main

SMOOTHING = "113087"


@pytest.fixture(scope="module")
def dose_chain(tmp_path_factory):
    """phantom -> simulate-dose 0.2 -> denoise, as in the issue."""
    folder = tmp_path_factory.mktemp("chain")
    ph, low, den = folder / "ph.dcm", folder / "ph_20.dcm", folder / "ph_20_den.dcm"
    assert main(["phantom", str(ph), "--seed", "3", "--size", "256x192"]) == 0
    assert main(["simulate-dose", str(ph), "-o", str(low), "--dose", "0.2"]) == 0
    assert main(["denoise", str(low), "-o", str(den)]) == 0
    return ph, low, den


def _dciodvfy_errors(path):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is not installed (apt: dicom3tools)")
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    lines = (out.stdout + out.stderr).splitlines()
    assert any("Mammography" in line for line in lines), lines
    return [line for line in lines if line.startswith("Error")]


def test_a_dose_simulation_says_so_and_claims_no_smoothing(dose_chain):
    _, low, _ = dose_chain
    ds = pydicom.dcmread(low)
    assert ds.SeriesDescription == "dose simulated to 20 %; synthetic phantom seed 3, dose 1"
    assert "DerivationCodeSequence" not in ds
    assert ds.DerivationDescription.startswith("Simulated dose reduction to 20 %")
    assert _dciodvfy_errors(low) == []


def test_denoising_a_dose_simulation_says_each_step_once(dose_chain):
    _, _, den = dose_chain
    ds = pydicom.dcmread(den)
    # 64 characters at most (LO): whole steps, newest first; the phantom's own text no longer fits
    assert ds.SeriesDescription == "denoised with mammo-unet; dose simulated to 20 %"
    assert [c.CodeValue for c in ds.DerivationCodeSequence] == [SMOOTHING]
    assert _dciodvfy_errors(den) == []
