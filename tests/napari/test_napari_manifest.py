"""The npe2 manifest validates and every command it names imports."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

from npe2 import PluginManifest


def manifest_path():
    return resources.files("mammo_denoise") / "napari.yaml"


def test_manifest_validates_and_imports():
    pm = PluginManifest.from_file(str(manifest_path()))
    assert pm.name == "napari-mammo-denoise"
    pm.validate_imports()  # every python_name resolves
    contrib = pm.contributions
    assert {"*.dcm", "*.DCM", "*.dicom"} <= set(contrib.readers[0].filename_patterns)
    assert contrib.readers[0].accepts_directories
    assert contrib.writers[0].layer_types == ["image"]
    names = {s.display_name for s in contrib.sample_data}
    assert names == {"Synthetic mammogram (full dose)", "Synthetic mammogram (20 % dose)"}
    assert len(contrib.widgets) == 5


def test_npe2_validate_cli():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", str(manifest_path())],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_is_the_installed_entry_point():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    assert "napari-mammo-denoise" in pm._manifests
