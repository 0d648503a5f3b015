"""The noise-aware expectation's table lookup for CPU tensors: one compiled loop over the values.

:func:`pixnet.infer.expect.expected_log_normalized` on the CPU: the same bilinear interpolation
of the same table, in the same float32 arithmetic, as its torch form, but fused (torch makes
some twenty passes over every value, each through memory; this makes one). Compiled by numba on
first use (and cached on disk). It holds no lock on Python (``nogil``): a block's rows are cut
into as many parts as the process may use cores, run side by side (each row is computed alone:
the same values however they are cut).
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..pp import _expectation as _e


@functools.cache
def _kernel():
    import numba

    return numba.njit(cache=True, nogil=True)(_expected_rows)


@functools.cache
def _table_t(target_sum: float) -> np.ndarray:
    """The expectation's table, transposed: ``(len(_L), len(_P))`` float32, a bin total's column contiguous."""
    return np.ascontiguousarray(_e._table(target_sum).astype(np.float32).T)


def expected_rows(lam: np.ndarray, total: np.ndarray, *, target_sum: float, out: np.ndarray | None = None):
    """``E[log1p(x / T * target_sum)]`` of ``lam`` ``(n, genes)`` float32 with totals ``total`` ``(n,)`` float64.

    Written into ``out`` (float32, ``lam``'s shape) when given.
    """
    n_p, n_l = len(_e._P), len(_e._L)
    table_t = _table_t(float(target_sum))
    out = np.empty(lam.shape, np.float32) if out is None else out
    consts = (float(_e._L[0]), float(_e._L[-1]), float(_e._LOG_L0), float(_e._LOG_L_SPAN), n_l,
              np.float32(_e._P[1]), np.float32(_e._LOG_P1), np.float32((n_p - 2) / _e._LOG_P_SPAN), n_p)  # fmt: skip
    total = np.ascontiguousarray(total, np.float64)
    cuts = np.linspace(0, len(lam), _parts(len(lam)) + 1).astype(int)
    if len(cuts) == 2:
        _kernel()(lam, total, table_t, out, *consts)
        return out
    parts = [(lam[a:b], total[a:b], table_t, out[a:b], *consts) for a, b in zip(cuts[:-1], cuts[1:])]
    others = [_pool().submit(_kernel(), *args) for args in parts[1:]]
    _kernel()(*parts[0])
    for f in others:
        f.result()
    return out


MIN_ROWS = 2048  # rows a part, at least: below, a thread's hand-over costs more than it saves


def _parts(n: int) -> int:
    """Parts to cut ``n`` rows into: one per core this process may use (at most 8), each of MIN_ROWS rows or more."""
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                      8, n // MIN_ROWS))  # fmt: skip


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(7, thread_name_prefix="pixnet-expect")


def _expected_rows(lam, total, table_t, out, l0, l_end, log_l0, log_l_span, n_l, p1, log_p1, p_scale, n_p):
    one = np.float32(1.0)
    zero = np.float32(0.0)
    fp_max = np.float32(n_p - 2 - 1e-4)
    col = np.empty(n_p, np.float32)
    for r in range(lam.shape[0]):
        t = max(total[r], 1e-12)
        fl = (math.log(min(max(t, l0), l_end)) - log_l0) / log_l_span * (n_l - 1)
        fl = min(max(fl, 0.0), n_l - 1 - 1e-9)
        il = int(fl)
        wl = np.float32(fl - il)
        below = np.float32(min(t / l0, 1.0))
        a, b = table_t[il], table_t[il + 1]
        for k in range(n_p):
            col[k] = ((one - wl) * a[k] + wl * b[k]) * below
        tf = np.float32(t)
        for g in range(lam.shape[1]):
            p = min(max(np.float32(lam[r, g]) / tf, zero), one)
            fp = (np.float32(math.log(max(p, p1))) - log_p1) * p_scale
            fp = min(max(fp, zero), fp_max) + one
            ip = int(fp)
            wp = fp - np.float32(ip)
            v = col[ip] * (one - wp) + col[ip + 1] * wp
            if p < p1:
                v = v * (p / p1)
            out[r, g] = v
