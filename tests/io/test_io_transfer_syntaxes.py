"""Every transfer syntax a mammogram may arrive in decodes to the same modality values."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.pixels import get_decoder

from mammo_denoise.errors import MammoDenoiseError
from mammo_denoise.io import read_mammogram

LOSSLESS_CONVERSIONS = [
    (("gdcmconv", "--jpeg"), uid.JPEGLosslessSV1),
    (("dcmcjpeg", "+el"), uid.JPEGLossless),
    (("gdcmconv", "--jpegls"), uid.JPEGLSLossless),
    (("gdcmconv", "--j2k"), uid.JPEG2000Lossless),
    (("gdcmconv", "--rle"), uid.RLELossless),
    (("dcmconv", "+ti"), uid.ImplicitVRLittleEndian),
    (("dcmconv", "+tb"), uid.ExplicitVRBigEndian),
    (("dcmconv", "+td"), uid.DeflatedExplicitVRLittleEndian),
]


@pytest.mark.parametrize(("command", "syntax"), LOSSLESS_CONVERSIONS,
                         ids=[s.name for _, s in LOSSLESS_CONVERSIONS])
def test_lossless_syntaxes_decode_exactly(mg_file, mg_pixels, tmp_path, run_tool, command, syntax):
    out = tmp_path / "converted.dcm"
    run_tool(*command, mg_file, out)
    image, meta = read_mammogram(out)
    assert meta.transfer_syntax_uid == syntax
    np.testing.assert_array_equal(image, mg_pixels)
    assert not meta.lossy_compressed


@pytest.mark.parametrize(("command", "syntax", "max_mean_error"), [
    (("gdcmconv", "--j2k", "--lossy", "-q", "80"), uid.JPEG2000, 20.0),
    (("gdcmconv", "--jpegls", "--lossy", "-e", "2"), uid.JPEGLSNearLossless, 2.0),
])
def test_lossy_syntaxes_decode_close_and_are_flagged(smooth_file, tmp_path, run_tool, command,
                                                     syntax, max_mean_error):
    source, pixels = smooth_file
    out = tmp_path / "lossy.dcm"
    run_tool(*command, source, out)
    image, meta = read_mammogram(out)
    assert meta.transfer_syntax_uid == syntax
    assert meta.lossy_compressed
    assert np.abs(image - pixels).mean() <= max_mean_error


def test_jpeg_baseline_8_bit(tmp_path, mg_meta, run_tool):
    y, x = np.mgrid[0:64, 0:48]
    pixels = (20 + 2 * x + y).astype(np.float32)
    from mammo_denoise.io import MammogramMeta, write_mammogram

    source = write_mammogram(pixels, tmp_path / "mg8.dcm",
                             MammogramMeta(**{**mg_meta.__dict__, "bits_stored": 8}))
    # +rm: dcmcjpeg shifts the values to start at 0 and records the shift in the rescale.
    run_tool("dcmcjpeg", "+eb", "+rm", "+q", "95", source, tmp_path / "j.dcm")
    image, meta = read_mammogram(tmp_path / "j.dcm")
    assert meta.transfer_syntax_uid == uid.JPEGBaseline8Bit
    assert meta.rescale_intercept == pixels.min()
    assert np.abs(image - pixels).mean() < 2.0


def test_file_without_meta_header_and_implicit_vr_written_by_pydicom(mg_file, mg_pixels, tmp_path):
    ds = pydicom.dcmread(mg_file)
    ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
    ds.save_as(tmp_path / "implicit.dcm", enforce_file_format=True)
    del ds.file_meta
    ds.preamble = None
    pydicom.dcmwrite(tmp_path / "bare.dcm", ds, implicit_vr=True, enforce_file_format=False)
    assert b"DICM" not in (tmp_path / "bare.dcm").read_bytes()[:256]  # no preamble, no meta
    for name in ("implicit.dcm", "bare.dcm"):
        image, meta = read_mammogram(tmp_path / name)
        np.testing.assert_array_equal(image, mg_pixels)
        assert meta.transfer_syntax_uid == uid.ImplicitVRLittleEndian
        assert meta.view_position == "MLO"


def test_missing_decoder_names_the_syntax_and_package(mg_file, tmp_path, run_tool, monkeypatch):
    out = tmp_path / "jls.dcm"
    run_tool("gdcmconv", "--jpegls", mg_file, out)
    monkeypatch.setattr(get_decoder(uid.JPEGLSLossless), "_available", {})
    with pytest.raises(MammoDenoiseError) as info:
        read_mammogram(out)
    assert str(info.value) == (
        f"{out}: cannot decode JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80) "
        "pixel data: no decoder is installed; install one with `pip install pyjpegls`")
    assert info.value.path == str(out)


def test_missing_jpeg2000_decoder_names_openjpeg(mg_file, tmp_path, run_tool, monkeypatch):
    out = tmp_path / "j2k.dcm"
    run_tool("gdcmconv", "--j2k", mg_file, out)
    monkeypatch.setattr(get_decoder(uid.JPEG2000Lossless), "_available", {})
    with pytest.raises(MammoDenoiseError, match="`pip install pylibjpeg pylibjpeg-openjpeg`$"):
        read_mammogram(out)


def test_12_bit_jpeg_extended_needs_the_gpl_decoder(smooth_file, tmp_path, run_tool):
    if "pylibjpeg" in get_decoder(uid.JPEGExtended12Bit).available_plugins:
        pytest.skip("pylibjpeg-libjpeg is installed here, so 12-bit JPEG decodes")
    out = tmp_path / "j12.dcm"
    run_tool("dcmcjpeg", "+ee", smooth_file[0], out)
    with pytest.raises(MammoDenoiseError) as info:
        read_mammogram(out)
    assert str(info.value) == (
        f"{out}: cannot decode 12-bit JPEG Extended (Process 2 and 4) (1.2.840.10008.1.2.4.51) "
        "pixel data: python-gdcm and pillow do not support it; install "
        "`pip install pylibjpeg pylibjpeg-libjpeg` (GPLv3) or decompress the file first "
        "(e.g. `dcmdjpeg in.dcm out.dcm` from dcmtk)")


def test_permissive_plugins_are_preferred(monkeypatch, mg_file, tmp_path, run_tool):
    out = tmp_path / "j2k.dcm"
    run_tool("gdcmconv", "--j2k", mg_file, out)
    decoder = get_decoder(uid.JPEG2000Lossless)
    used = []
    original = decoder.as_array

    def spy(src, **kwargs):
        used.append(kwargs.get("decoding_plugin"))
        return original(src, **kwargs)

    monkeypatch.setattr(decoder, "as_array", spy)
    read_mammogram(out)
    assert used == ["pylibjpeg"]  # pylibjpeg-openjpeg (MIT) first for JPEG 2000
