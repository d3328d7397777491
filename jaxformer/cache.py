"""The one directory where jaxformer keeps what it builds once and reuses.

Token ids and tfds builds (`jaxformer.data`) and compiled CPU kernels (`jaxformer.kernels`) all
live under it, so one variable moves or clears all of them. The lookup follows the XDG Base
Directory specification, where an empty variable counts as unset.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "JAXFORMER_CACHE_DIR"


def cache_dir() -> Path:
    """$JAXFORMER_CACHE_DIR, else $XDG_CACHE_HOME/jaxformer, else ~/.cache/jaxformer."""
    if path := os.environ.get(CACHE_DIR_ENV):
        return Path(path)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "jaxformer"
