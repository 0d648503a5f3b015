"""The synthetic slide's ground truth: expected counts of every bin (or cell), before Poisson sampling."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
from scipy import sparse

from .._keys import barcodes
from .synthetic import MANIFEST_FILE, TRUTH_FILE


def expected_counts(
    path: str | Path, *, bin_size: int = 2, genes: list[str] | None = None, cells: bool = False
) -> ad.AnnData:
    """The true expected counts of a synthetic slide's bins or cells (the perfect model's prediction).

    Parameters
    ----------
    path
        A folder written by :func:`visium_hd_demo`.
    bin_size
        2, or any multiple of 2: bins of that size on the same array (8 and 16 um match the
        slide's tables barcode for barcode).
    genes
        Genes to return (default: all).
    cells
        Return the segmented cells instead (the 2 um bins assigned to each, as in
        ``segmented_outputs/``), named by their barcodes ``cellid_000000001-1``.

    Returns
    -------
    AnnData of expected counts with the bins' barcodes as ``obs_names``, the bins' array row
    and column in ``obs``, and the components' UMIs per bin in ``obsm["components"]``.

    """
    truth = Path(path) / TRUTH_FILE
    if not truth.exists():
        raise FileNotFoundError(f"{truth} not found: expected counts exist only for slides made by visium_hd_demo.")
    if bin_size < 2 or bin_size % 2:
        raise ValueError(f"bin_size must be a positive multiple of 2 um, got {bin_size}.")
    with h5py.File(truth, "r") as f:
        w, rc = f["weights"][:], f["array_row_col"][:]
        profiles, all_genes = f["profiles"][:], f["genes"][:].astype(str).tolist()
        components = f["components"][:].astype(str).tolist()
        cell_of_bin = f["cell_of_bin"][:] if cells else None
    sel = slice(None) if genes is None else [all_genes.index(g) for g in genes]
    if cells:
        ok = cell_of_bin >= 0
        ids, inv = np.unique(cell_of_bin[ok], return_inverse=True)
        agg = sparse.csr_matrix((np.ones(len(inv)), (inv, np.flatnonzero(ok))), shape=(len(ids), len(w)))
        wk = np.asarray(agg @ w)
        adata = ad.AnnData((wk @ profiles[:, sel]).astype(np.float32))
        adata.obs_names = [f"cellid_{i + 1:09d}-1" for i in ids.tolist()]
        adata.var_names = all_genes if genes is None else list(genes)
        adata.obsm["components"] = wk.astype(np.float32)
        adata.uns["components"] = components
        return adata
    factor = bin_size // 2
    n = int(rc.max()) + 1 if len(rc) else 0
    rows, cols = rc[:, 0] // factor, rc[:, 1] // factor
    if factor > 1:  # incomplete bins at the array's edge are dropped, as Space Ranger does
        n_coarse = int(json.loads((Path(path) / MANIFEST_FILE).read_text())["size_um"] // 2) // factor
        ok = (rows < n_coarse) & (cols < n_coarse)
        rows, cols, w = rows[ok], cols[ok], w[ok]
    key = rows.astype(np.int64) * (n + 1) + cols
    uniq, inv = np.unique(key, return_inverse=True)
    agg = sparse.csr_matrix((np.ones(len(inv)), (inv, np.arange(len(inv)))), shape=(len(uniq), len(inv)))
    wk = np.asarray(agg @ w)
    r, c = uniq // (n + 1), uniq % (n + 1)
    x = (wk @ profiles[:, sel]).astype(np.float32)
    obs_names = barcodes(bin_size, r, c)
    adata = ad.AnnData(x, obs={"array_row": r.astype(np.int32), "array_col": c.astype(np.int32)})
    adata.obs_names = obs_names
    adata.var_names = all_genes if genes is None else list(genes)
    adata.obsm["components"] = wk.astype(np.float32)
    adata.uns["components"] = components
    return adata
