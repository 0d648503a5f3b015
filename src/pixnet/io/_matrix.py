"""Read 10x feature-barcode matrices (``filtered_feature_bc_matrix.h5``) lean enough for 11 million bins."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from scipy import sparse


def read_10x_h5(path: Path, *, gex_only: bool = True) -> ad.AnnData:
    """Bins x genes counts as CSR float32 with int32 indices, barcodes as ``obs_names``.

    Same content as :func:`scanpy.read_10x_h5`, at about half its memory for large matrices
    (int32 column indices, no intermediate copies), and with errors that name the file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. Re-copy the run's `outs/` folder from Space Ranger.")
    try:
        with h5py.File(path, "r") as f:
            if "matrix" not in f:
                raise ValueError(f"{path} has no 'matrix' group: not a 10x feature-barcode matrix (Space Ranger >= 3).")
            g = f["matrix"]
            n_genes, n_bins = (int(v) for v in g["shape"][:])
            data = np.empty(g["data"].shape, np.float32)
            if data.size:
                g["data"].read_direct(data)
            indices = g["indices"].astype(np.int32)[:] if n_genes < 2**31 else g["indices"][:]
            indptr = g["indptr"][:]
            codes = g["barcodes"].asstr()[:]
            feat = g["features"]
            var = pd.DataFrame(
                {
                    "gene_ids": feat["id"].asstr()[:],
                    "feature_types": feat["feature_type"].asstr()[:],
                    "genome": feat["genome"].asstr()[:] if "genome" in feat else "",
                },
                index=pd.Index(feat["name"].asstr()[:], name=None),
            )
    except (OSError, KeyError) as err:
        raise ValueError(
            f"{path} cannot be read as a 10x HDF5 matrix (truncated or corrupt?): {err}. Re-copy it."
        ) from err
    if len(indptr) != n_bins + 1 or (len(indptr) and indptr[-1] != len(data)):
        raise ValueError(f"{path} is inconsistent (indptr does not match data): the file is truncated. Re-copy it.")
    x = sparse.csr_matrix((data, indices, indptr), shape=(n_bins, n_genes))
    adata = ad.AnnData(x, obs=pd.DataFrame(index=pd.Index(codes)), var=var)
    if gex_only and (adata.var["feature_types"] != "Gene Expression").any():
        adata = adata[:, adata.var["feature_types"] == "Gene Expression"].copy()
    adata.var_names_make_unique()
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][:3].tolist()
        raise ValueError(f"{path} lists some barcodes twice ({dup}...): the matrix is corrupt. Re-run or re-copy it.")
    return adata
