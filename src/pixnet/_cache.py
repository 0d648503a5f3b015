"""Where pixnet caches files it can rebuild (demo slides, lookup tables)."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """``$PIXNET_DATA`` or ``~/.cache/pixnet``."""
    return Path(os.environ.get("PIXNET_DATA", Path.home() / ".cache" / "pixnet"))
