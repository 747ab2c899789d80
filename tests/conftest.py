import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import tiny_model  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(request, tmp_path_factory, monkeypatch):
    """Unit tests never touch the user's cache; integration tests share its converted model."""
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setenv("POLYLENS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="session")
def gemma():
    """The embedded gemma-3-270m (integration tier): converted once into the real cache."""
    from interp import load_model

    return load_model("gemma-3-270m")
