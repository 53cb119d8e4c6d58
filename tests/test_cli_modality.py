"""Which images the denoiser accepts: radiographs (MG, DX, CR) and files without a modality."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file

from mammo_denoise.cli import main
from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.io import MammogramMeta
from mammo_denoise.io.meta import check_modality


def pydicom_file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not available offline")
    return path


@pytest.mark.parametrize("modality", ["MG", "DX", "CR", ""])
def test_radiographs_and_files_without_a_modality_are_accepted(modality):
    check_modality(MammogramMeta(path="x.dcm", modality=modality))


def test_other_modalities_are_refused_naming_the_file():
    with pytest.raises(MammoDenoiseError) as info:
        check_modality(MammogramMeta(path="head.dcm", modality="CT"))
    assert str(info.value) == ("head.dcm: modality CT: the denoising models are made for "
                               "mammograms and radiographs (MG, DX, CR), not CT images")


@pytest.mark.parametrize("name,modality", [("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")])
def test_cli_refuses_ct_and_mr_on_one_line(name, modality, tmp_path, capsys):
    path = pydicom_file(name)
    dest = tmp_path / "out.dcm"
    assert main(["denoise", path, "-o", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err == (f"mammo-denoise denoise: error: {path}: modality {modality}: the denoising models "
                   f"are made for mammograms and radiographs (MG, DX, CR), not {modality} images; "
                   "--any-modality denoises it anyway\n")
    assert not dest.exists()


def test_cli_any_modality_overrides(tmp_path, capsys):
    dest = tmp_path / "out.dcm"
    assert main(["denoise", pydicom_file("MR_small.dcm"), "-o", str(dest), "--any-modality"]) == 0
    assert pydicom.dcmread(dest).Modality == "MR"
