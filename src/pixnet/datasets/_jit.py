"""numba's ``njit``, applied on first call: importing numba costs ~50 MB, and most sessions never make a demo slide."""

from __future__ import annotations

import functools


def lazy_njit(fn):
    """``numba.njit(cache=True)(fn)``, compiled (or loaded from numba's cache) when first called."""
    compiled = None

    @functools.wraps(fn)
    def call(*args):
        nonlocal compiled
        if compiled is None:
            import numba

            compiled = numba.njit(cache=True)(fn)
        return compiled(*args)

    return call
