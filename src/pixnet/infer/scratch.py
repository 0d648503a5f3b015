"""pixnet's working folders beside a store: named after the process that made them, swept once it is gone.

A prediction keeps its work beside the slide's store, on the same disk, so that finished files
move or link into it: the table's arrays during the pass, the map's levels, an element being
written (:mod:`pixnet.infer.store`). A run removes them when it ends, even on an error or an
interrupt; a process that is killed (a kernel restarted, the out-of-memory killer) cannot, and
leaves up to the prediction's size on disk in folders hidden by their leading dot. Each folder's
name records the host and the process that made it, and making one removes those beside it of
processes of this host that no longer run (POSIX only: elsewhere nothing is swept).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)
PREFIX = ".pixnet-"
# .pixnet-{what}-{host}-{pid}-{mkdtemp's suffix: letters, digits, _}
_NAME = re.compile(r"^\.pixnet-.+-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[a-z0-9_]+$")
_WARNED: set[Path] = set()  # folders kept with a warning (said once a process)


def scratch_folder(parent: Path, what: str) -> Path:
    """A new empty folder in ``parent`` (beside a store), named ``.pixnet-{what}-{host}-{pid}-...``.

    ``parent`` is swept first (:func:`sweep`: a listing of it). The caller removes the folder.
    """
    sweep(parent)
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{what}-{_host()}-{os.getpid()}-", dir=parent))


def sweep(parent: Path) -> list[Path]:
    """Remove the folders in ``parent`` that :func:`scratch_folder` made for processes of this host now gone.

    A folder that holds ``previous`` (an element a killed write had moved out of the store, to
    replace it: :func:`pixnet.infer.store.replace_element`) is kept, with a warning. Returns the
    folders removed.
    """
    if os.name != "posix":  # no way here to ask whether a process runs without signalling it
        return []
    removed, size = [], 0
    for path in sorted(Path(parent).glob(PREFIX + "*")):
        m = _NAME.match(path.name)
        if m is None or m["host"] != _host() or not path.is_dir() or _runs(int(m["pid"])):
            continue
        if (path / "previous").exists():
            if path not in _WARNED:
                _WARNED.add(path)
                logger.warning(
                    "%s holds an element of the store beside it that a killed write had moved out to replace it "
                    "(previous): move it back into the store under its kind and name, or delete the folder.",
                    path,
                )
            continue
        size += _size(path)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    if removed:
        logger.info(
            "removed %d working folders (%.2f GB) that killed pixnet runs left in %s",
            len(removed),
            size / 2**30,
            parent,
        )
    return removed


def _size(path: Path) -> int:
    """Bytes of the files under ``path`` (for the log; 0 where it cannot tell)."""
    try:
        return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file())
    except OSError:
        return 0


def _host() -> str:
    """The host's name, hashed to 8 hex digits (file-name safe)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _runs(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (or may: one of another user's answers so)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True
