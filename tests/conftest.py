"""Session-wide test settings."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _engine_cache_in_a_temporary_folder(tmp_path_factory):
    """Graphs the CPU engines convert go to a folder of this session, not the user's cache."""
    from mammo_denoise import engines

    mp = pytest.MonkeyPatch()
    mp.setenv(engines.ENV_CACHE_DIR, str(tmp_path_factory.mktemp("engine-cache")))
    yield
    mp.undo()
