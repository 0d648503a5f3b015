"""The prediction a noisy measurement should be compared with: E[log1p(x / T * c)] under Poisson counts.

A 2 um bin holds a dozen UMIs over the whole panel, so most genes read 0 and
``log1p(lambda / Lambda * c)`` (the log of the expected normalised value) is a poor guess of
the observed ``log1p(x / T * c)``. Its expectation, with ``x ~ Poisson(lambda)`` and
``T = x + Poisson(Lambda - lambda)``, is the best prediction in squared error. Given
``T = n``, ``x ~ Binomial(n, p)`` with ``p = lambda / Lambda``, so::

    E = sum_n Poisson(n; Lambda) * g(n, p),   g(n, p) = sum_k Binomial(k; n, p) * log1p(c * k / n)

which depends on ``(p, Lambda)`` only. pixnet tabulates it once on a log grid and interpolates,
so the expectation of billions of bin-gene pairs costs a few operations each.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from scipy import stats
from scipy.special import gammaln, xlog1py, xlogy

from .._cache import default_data_dir

_P = np.concatenate([[0.0], np.geomspace(1e-7, 1.0, 240)])
_L = np.geomspace(1e-3, 1e6, 180)
_EXACT_MAX = 400.0  # above this total, T is concentrated enough to take n = Lambda


def _g(n: int, p: np.ndarray, c: float) -> np.ndarray:
    """E[log1p(c k / n)] for k ~ Binomial(n, p), for every p.

    Exact sums where ``n p`` is small (the discrete regime that matters); where it exceeds 150,
    k / n is nearly Gaussian and a second-order expansion is accurate to about 1e-5.
    """
    out = np.empty(len(p))
    big = n * p > 150
    if (~big).any():
        k = np.arange(0, min(n, 150 + 12 * 13 + 40) + 1, dtype=np.float64)
        q = p[~big, None]
        logpmf = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) + xlogy(k, q) + xlog1py(n - k, -q)
        out[~big] = np.exp(logpmf) @ np.log1p(c * k / n)
    q = p[big]
    out[big] = np.log1p(c * q) - 0.5 * (c / (1 + c * q)) ** 2 * q * (1 - q) / n
    return out


@lru_cache(maxsize=4)
def _table(c: float) -> np.ndarray:
    """F(p, Lambda) on the grid ``_P x _L``, cached on disk (it takes a few seconds to build)."""
    path = default_data_dir() / f"expectation_table_v1_{c:g}.npy"
    try:
        table = np.load(path)
        if table.shape == (len(_P), len(_L)):
            return table
    except (OSError, ValueError):
        pass
    table = _build_table(c)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, table)
        os.replace(tmp, path)
    except OSError:  # a read-only home: recompute next time
        pass
    return table


def _build_table(c: float) -> np.ndarray:
    table = np.zeros((len(_P), len(_L)))
    n_max = int(_EXACT_MAX + 12 * np.sqrt(_EXACT_MAX) + 40)
    g = np.zeros((n_max + 1, len(_P)))
    for n in range(1, n_max + 1):
        g[n] = _g(n, _P, c)
    for j, lam in enumerate(_L):
        if lam <= _EXACT_MAX:
            n = np.arange(n_max + 1)
            table[:, j] = stats.poisson.pmf(n, lam) @ g
        else:
            # Interpolate g between the two integers around Lambda; T's spread matters at O(1/Lambda).
            lo = int(np.floor(lam))
            w = lam - lo
            table[:, j] = (1 - w) * _g(lo, _P, c) + w * _g(lo + 1, _P, c)
    return table


def expected_log_normalized(
    lam: np.ndarray, total: np.ndarray, *, target_sum: float = 1e4, chunk: int = 8192
) -> np.ndarray:
    """E[log1p(x / T * target_sum)] for Poisson counts with means ``lam`` and bin totals ``total``.

    Parameters
    ----------
    lam
        Expected counts, bins x genes.
    total
        Expected total count of each bin over all genes (bins,), at least ``lam.sum(1)``.
    target_sum
        The normalisation's target sum.
    chunk
        Bins per block: memory stays a few times ``chunk x genes`` whatever the number of bins.

    Returns
    -------
    float32 array like ``lam``. Bins with ``T = 0`` count as 0, as scanpy's normalisation leaves them.

    """
    lam = np.asarray(lam)
    total = np.asarray(total, np.float64).reshape(-1)
    table = _table(float(target_sum)).astype(np.float32)
    out = np.empty(lam.shape, np.float32)
    for s in range(0, lam.shape[0], chunk):
        out[s : s + chunk] = _expected_block(lam[s : s + chunk], total[s : s + chunk], table)
    return out


_LOG_P1, _LOG_P_SPAN = np.log(_P[1]), np.log(_P[-1]) - np.log(_P[1])
_LOG_L0, _LOG_L_SPAN = np.log(_L[0]), np.log(_L[-1]) - np.log(_L[0])


def _expected_block(lam: np.ndarray, total: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of the table at ``(lam / total, total)``.

    First along the bin's total (one column of the table per bin), then along ``p`` on its log
    grid: two gathers per value.
    """
    n, n_p = len(total), len(_P)
    total = np.maximum(total, 1e-12)
    fl = (np.log(np.clip(total, _L[0], _L[-1])) - _LOG_L0) / _LOG_L_SPAN * (len(_L) - 1)
    fl = np.clip(np.nan_to_num(fl), 0, len(_L) - 1 - 1e-9)  # a NaN total reads NaN below, not an index
    il = fl.astype(np.int64)
    wl = (fl - il).astype(np.float32)[:, None]
    # Below the grid's smallest total F is linear in Lambda (only n = 1 matters): scale the column.
    below = np.minimum(total / _L[0], 1.0).astype(np.float32)[:, None]
    cols = ((1 - wl) * table[:, il].T + wl * table[:, il + 1].T) * below  # (n, n_p)
    with np.errstate(invalid="ignore"):  # inf / inf: NaN, as it should read
        p = np.clip(np.asarray(lam, np.float32) / total.astype(np.float32)[:, None], 0.0, 1.0)  # (n, genes)
    fp = (np.log(np.maximum(p, np.float32(_P[1]))) - np.float32(_LOG_P1)) * np.float32((n_p - 2) / _LOG_P_SPAN)
    fp = np.clip(np.nan_to_num(fp), 0, n_p - 2 - 1e-4) + 1
    ip = fp.astype(np.int32)
    wp = fp - ip
    flat = ip + (np.arange(n, dtype=np.int32) * n_p)[:, None]
    cols = cols.ravel()
    v = cols[flat] * (1 - wp) + cols[flat + 1] * wp
    # Below the first grid point of p, F is linear in p (only k = 1 matters). NaN in (a diverged map), NaN out.
    v = np.where(p < _P[1], v * (p / np.float32(_P[1])), v)
    return np.where(np.isnan(p), np.float32(np.nan), v).astype(np.float32, copy=False)
