"""Where polylens keeps what it caches (converted models, activations, tuned lenses).

A low module: models, the store and the tuned lens all import it, and it imports nothing from
polylens.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """Root of everything polylens caches: ``$POLYLENS_CACHE`` or the user's cache directory."""
    return Path(os.environ.get("POLYLENS_CACHE") or platformdirs.user_cache_dir("polylens"))
