"""Fixtures for the napari plugin tests: small DICOMs, a tiny model dir, notification capture."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_denoise.io import FOR_PROCESSING, MammogramMeta, write_mammogram

SHAPE = (160, 128)


@pytest.fixture
def mg_meta() -> MammogramMeta:
    return MammogramMeta(
        modality="MG",
        presentation_intent=FOR_PROCESSING,
        photometric_interpretation="MONOCHROME1",
        pixel_intensity_relationship="LIN",
        bits_stored=14,
        pixel_spacing_mm=(0.07, 0.085),
        laterality="R",
        view_position="MLO",
        window_center=4000.0,
        window_width=6000.0,
    )


@pytest.fixture
def mg_pixels() -> np.ndarray:
    return np.random.default_rng(7).integers(500, 9000, SHAPE).astype(np.float32)


def with_voi_window(path, center=4000.0, width=6000.0):
    """Add a VOI window to a written file (the io writer leaves FOR PROCESSING without one)."""
    import pydicom

    ds = pydicom.dcmread(path)
    ds.WindowCenter = center
    ds.WindowWidth = width
    ds.save_as(path)
    return path


@pytest.fixture
def mg_file(tmp_path, mg_pixels, mg_meta):
    path = write_mammogram(mg_pixels, tmp_path / "rmlo.dcm", mg_meta, patient_name="DOE^JANE")
    return with_voi_window(path)


@pytest.fixture
def mg_folder(tmp_path, mg_pixels, mg_meta):
    folder = tmp_path / "exam"
    folder.mkdir()
    write_mammogram(mg_pixels, folder / "a.dcm", mg_meta)
    left = MammogramMeta(**{**mg_meta.__dict__, "laterality": "L", "view_position": "CC",
                            "photometric_interpretation": "MONOCHROME2"})
    write_mammogram(mg_pixels[:128, :96], folder / "b.dcm", left)
    (folder / "notes.txt").write_text("not DICOM")
    return folder


@pytest.fixture(scope="session")
def phantom():
    from mammo_denoise.physics.phantom import make_phantom

    return make_phantom(seed=3, shape=(192, 160), view="CC")


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    """A user model dir holding one tiny random-init model called 'tiny'."""
    from mammo_denoise.models import make_denoiser, save_model
    from mammo_denoise.napari._state import MODELS

    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("MAMMO_DENOISE_MODEL_DIR", str(d))
    save_model(make_denoiser("dncnn", name="tiny", seed=0, depth=3, channels=4), d / "tiny")
    MODELS.refresh()
    yield d
    monkeypatch.delenv("MAMMO_DENOISE_MODEL_DIR")
    MODELS.refresh(emit=False)


@pytest.fixture
def notes():
    """Every napari notification shown during the test: list of (severity, message)."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def collect(notification):
        seen.append((str(notification.severity), str(notification.message)))

    notification_manager.notification_ready.connect(collect)
    yield seen
    notification_manager.notification_ready.disconnect(collect)


@pytest.fixture(autouse=True)
def _settings_file(tmp_path_factory, monkeypatch):
    """Widgets remember their settings (napari/_persist.py): never the user's file in tests."""
    from mammo_denoise.napari._persist import CONFIG_DIR_ENV

    folder = tmp_path_factory.mktemp("config")
    monkeypatch.setenv(CONFIG_DIR_ENV, str(folder))
    return folder / "napari-settings.json"
