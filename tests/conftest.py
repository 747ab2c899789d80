import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import tiny_model  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Unit tests never touch the user's cache; integration tests share one converted model."""
    if "POLYLENS_TEST_KEEP_CACHE" not in os.environ:
        monkeypatch.setenv("POLYLENS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="session")
def gemma():
    """The embedded gemma-3-270m (integration tier): converted once into the real cache."""
    from interp import load_model

    return load_model("gemma-3-270m", device="cpu")
