"""Publish a folder written aside in one step, so that a crash leaves any earlier one intact."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def publish_dir(tmp: Path, dest: Path) -> None:
    """Move the finished folder ``tmp`` to ``dest``, replacing an existing ``dest`` (callers check ``overwrite``)."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
