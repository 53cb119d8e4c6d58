"""Widget settings remembered between napari sessions: one small JSON in the user config folder.

Only the choices a user makes once are kept (model, device and tiling; dose method and seed; the
training folder, schedule and starting model). What belongs to one image (its noise parameters) or
to one reading (the strength) starts fresh every session, so nothing from yesterday's image is
applied to today's unasked. A missing, unreadable or stale file is ignored: remembered settings
never stop a widget from opening, and a failed save never interrupts the user.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields
from pathlib import Path

#: Overrides the folder of the settings file (tests, shared workstations).
CONFIG_DIR_ENV = "MAMMO_DENOISE_CONFIG_DIR"


def settings_path() -> Path:
    root = os.environ.get(CONFIG_DIR_ENV)
    if not root:
        import platformdirs

        root = platformdirs.user_config_dir("napari-mammo-denoise", appauthor=False)
    return Path(root) / "napari-settings.json"


def remember(settings, section: str, skip: tuple[str, ...] = ()) -> None:
    """Load ``section`` of the saved settings into the evented dataclass ``settings``, then save
    it whenever one of its fields changes. Fields in ``skip`` are neither loaded nor saved.

    A saved value is used only when it has the type of the field's current value (a file from
    another version cannot put a string into a spin box).
    """
    kept = [f.name for f in fields(settings) if f.name not in skip]
    saved = _read().get(section)
    if isinstance(saved, dict):
        for name in kept:
            value = saved.get(name)
            if value is not None and type(value) is type(getattr(settings, name)):
                setattr(settings, name, value)

    def save(*_):
        data = _read()
        data[section] = {name: getattr(settings, name) for name in kept}
        _write(data)

    settings.events.connect(save)


def _read() -> dict:
    try:
        data = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(data: dict) -> None:
    path = settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and moved into place: a crash mid-write leaves the previous file whole.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".settings-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only home: settings are simply not remembered
