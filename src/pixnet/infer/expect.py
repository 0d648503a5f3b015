"""X and the layers of a block of bins, in torch, on the device where the map is.

:func:`expected_log_normalized` is :func:`pixnet.pp.expected_log_normalized` (the same table of
``E[log1p(x / T * c)]`` over ``p = lambda / Lambda`` and the bin total ``Lambda``, the same bilinear
interpolation) on torch tensors: on the CPU one compiled loop (:mod:`pixnet.infer._expect_cpu`,
~8x faster than torch's twenty passes), elsewhere torch ops. Against the exact expectation (the
sums of :mod:`pixnet.pp._expectation`) it is within ``ERROR_BOUND`` wherever ``lambda <= Lambda``
(``tests/test_stream.py`` checks it on a grid of ``lambda`` and ``Lambda``), and within 1e-5 of
the numpy version.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.losses import log_normalize
from ..pp import _expectation as _e
from .buffers import kept

ERROR_BOUND = 5e-3  # absolute, in log1p units (values reach ~9 for target_sum 1e4)
_TABLES: dict = {}


def _table(target_sum: float, device: torch.device) -> torch.Tensor:
    key = (float(target_sum), str(device))
    if key not in _TABLES:
        _TABLES[key] = torch.as_tensor(_e._table(float(target_sum)), dtype=torch.float32, device=device)
    return _TABLES[key]


def expected_log_normalized(lam: torch.Tensor, total: torch.Tensor, *, target_sum: float, chunk: int = 16384,
                            out: torch.Tensor | None = None):  # fmt: skip
    """``E[log1p(x / T * target_sum)]`` for Poisson counts of means ``lam`` ``(n, genes)``, bin totals ``(n,)``.

    Returns float32 ``(n, genes)`` on ``lam``'s device (``out`` when given: contiguous, that shape);
    bins with a total of 0 read 0.
    """
    if lam.device.type == "cpu":
        from ._expect_cpu import expected_rows

        into = None if out is None else out.numpy()
        return torch.from_numpy(expected_rows(lam.float().numpy(), total.double().numpy(), target_sum=target_sum,
                                              out=into))  # fmt: skip
    return _expected_torch(lam, total, target_sum=target_sum, chunk=chunk, out=out)


def expected_log_normalized_grad(lam: torch.Tensor, total: torch.Tensor, *, target_sum: float) -> torch.Tensor:
    """:func:`expected_log_normalized`, differentiable in ``lam`` and ``total``: what training's loss compares.

    The same table and interpolation as predict's ``X`` (torch ops, any device), so that the
    PCC a model is trained and validated on is the one :func:`pixnet.tl.evaluate` reports.
    """
    return _block(lam, total, _table(target_sum, lam.device))


def _expected_torch(lam: torch.Tensor, total: torch.Tensor, *, target_sum: float, chunk: int = 16384, out=None):
    """:func:`expected_log_normalized` in torch ops, on any device (the CPU's loop gives the same values)."""
    table = _table(target_sum, lam.device)
    out = torch.empty(lam.shape, dtype=torch.float32, device=lam.device) if out is None else out
    for s in range(0, lam.shape[0], chunk):
        out[s : s + chunk] = _block(lam[s : s + chunk], total[s : s + chunk], table)
    return out


def _block(lam: torch.Tensor, total: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    n_p, n_l = len(_e._P), len(_e._L)
    per_bin = torch.float64 if lam.device.type != "mps" else torch.float32  # n values: cheap anywhere
    total = total.to(per_bin).clamp_min(1e-12)
    fl = (torch.log(total.clamp(float(_e._L[0]), float(_e._L[-1]))) - _e._LOG_L0) / _e._LOG_L_SPAN * (n_l - 1)
    fl = fl.nan_to_num(0.0).clamp(0, n_l - 1 - 1e-9)  # a NaN total reads NaN below, not an index
    il = fl.long()
    wl = (fl - il).float()[:, None]
    below = (total / float(_e._L[0])).clamp(max=1.0).float()[:, None]
    cols = ((1 - wl) * table[:, il].T + wl * table[:, il + 1].T) * below  # (n, n_p)
    p = (lam.float() / total.float()[:, None]).clamp(0.0, 1.0)
    p1 = float(np.float32(_e._P[1]))
    fp = (torch.log(p.clamp_min(p1)) - float(np.float32(_e._LOG_P1))) * float(np.float32((n_p - 2) / _e._LOG_P_SPAN))
    fp = fp.nan_to_num(0.0).clamp(0, n_p - 2 - 1e-4) + 1
    ip = fp.long()
    wp = fp - ip
    v = cols.gather(1, ip) * (1 - wp) + cols.gather(1, ip + 1) * wp
    v = torch.where(p < p1, v * (p / p1), v)
    return torch.where(p.isnan(), p, v)  # NaN in (a diverged map), NaN out, as the CPU loop gives


def outputs(lam: torch.Tensor, *, n_genes: int, target_sum: float, density: bool, layers,
            into: dict | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """What a table holds for a block of bins' aggregates ``lam`` ``(n, C)``, as float32 tensors on its device.

    ``X``; with ``density``, ``total`` ``(n,)`` (over all channels) and the requested ``layers``
    (``counts``, ``lognorm``). Means (``density`` False) are ``X`` as they are. ``into``: a dict
    kept between calls, whose buffers ``X`` and ``lognorm`` are written into (made on first use):
    a writer thread then frees and allocates no block-sized arrays, which the allocator would keep
    under :func:`pixnet._memory.resident`. What a call returns is overwritten by the next.
    """
    if not density:
        return {"X": lam.float()}
    genes = lam[:, :n_genes].float()
    if lam.device.type == "cpu":  # numpy's float64 sum of float32 rows: the same sums, ~8x faster than torch's
        total = torch.from_numpy(lam.detach().numpy().sum(1, dtype=np.float64))
    else:
        total = lam.sum(1, dtype=torch.float64)
    x = expected_log_normalized(genes, total, target_sum=target_sum, out=_buffer(into, "X", genes))
    out = {"X": x, "total": total.float()}
    if "counts" in layers:
        out["counts"] = genes
    if "lognorm" in layers:  # in float32: within 3e-7 of float64's (relative), a third of its time
        out["lognorm"] = log_normalize(genes, total.float(), target_sum, out=_buffer(into, "lognorm", genes))
    return out


def _buffer(into: dict | None, name: str, like: torch.Tensor) -> torch.Tensor | None:
    """A float32 tensor shaped as ``like`` over ``into[name]``, kept between calls; None without ``into``."""
    return None if into is None else kept(into, name, tuple(like.shape), device=like.device)
