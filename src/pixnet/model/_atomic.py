"""Publish a folder written aside in one step, so that a crash leaves any earlier one intact."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from pathlib import Path


def aside(dest: Path) -> Path:
    """A new empty folder beside ``dest`` to write it in, made as ``mkdir`` makes one.

    Its permissions are the user's umask's, as they stay once it is :func:`publish_dir`'d
    (``tempfile.mkdtemp`` makes folders only their owner may read).
    """
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    return tmp


def publish_dir(tmp: Path, dest: Path) -> None:
    """Move the finished folder ``tmp`` to ``dest``, replacing an existing ``dest`` (callers check ``overwrite``).

    Its files first take the permissions a new file gets here (the user's umask): safetensors
    writes its file readable by its owner alone.
    """
    probe = tmp / ".mode"
    probe.touch()
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    for f in tmp.iterdir():
        if f.is_file() and not f.is_symlink():
            os.chmod(f, mode)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
