"""Loggers' levels set for the length of a block and restored after it."""

from __future__ import annotations

import contextlib
import logging


@contextlib.contextmanager
def logger_levels(levels: dict[str, int]):
    """Set each named logger's level (``{name: level}``) inside the block; restore the levels it had after it."""
    loggers = {name: logging.getLogger(name) for name in levels}
    before = {name: lg.level for name, lg in loggers.items()}
    for name, lg in loggers.items():
        lg.setLevel(levels[name])
    try:
        yield
    finally:
        for name, lg in loggers.items():
            lg.setLevel(before[name])
