"""Where jaxformer keeps what it builds once: compiled kernels, token ids, tfds builds."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """$JAXFORMER_CACHE_DIR, else $XDG_CACHE_HOME/jaxformer, else ~/.cache/jaxformer."""
    if folder := os.environ.get("JAXFORMER_CACHE_DIR"):
        return Path(folder)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxformer"
