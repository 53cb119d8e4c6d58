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


@pytest.fixture
def one_torch_thread():
    """Tiny networks on the small shared CI machine gain nothing from more threads."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
