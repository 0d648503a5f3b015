"""Read 10x feature-barcode matrices (HDF5 or a Market Exchange folder) lean enough for 11 million bins."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from scipy import sparse

from ._files import mtx_files


def read_10x(path: Path, *, gex_only: bool = True) -> ad.AnnData:
    """A ``*.h5`` matrix or a matrix folder (``matrix.mtx.gz``, ``barcodes.tsv.gz``, ``features.tsv.gz``)."""
    return read_10x_mtx(path, gex_only=gex_only) if path.is_dir() else read_10x_h5(path, gex_only=gex_only)


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
    return _assemble(x, codes, var, path, gex_only)


def read_10x_mtx(folder: Path, *, gex_only: bool = True) -> ad.AnnData:
    """A 10x matrix folder: ``matrix.mtx`` (genes x barcodes), ``barcodes.tsv``, ``features.tsv`` or ``genes.tsv``.

    Gzipped or not; ``genes.tsv`` (two columns, Cell Ranger 2) has no feature types: every row is a gene.
    """
    from scipy.io import mmread

    files = mtx_files(folder)
    if files is None:
        raise FileNotFoundError(
            f"{folder} is not a complete 10x matrix folder: it needs matrix.mtx.gz, barcodes.tsv.gz and "
            "features.tsv.gz (or genes.tsv). Re-copy it from the Space Ranger output."
        )
    try:
        x = sparse.csr_matrix(mmread(files["matrix"]).T, dtype=np.float32)
        codes = pd.read_csv(files["barcodes"], header=None, sep="\t", dtype=str)[0].to_numpy()
        feat = pd.read_csv(files["features"], header=None, sep="\t", dtype=str)
    except (OSError, ValueError, EOFError, IndexError, pd.errors.ParserError) as err:
        raise ValueError(f"{folder} cannot be read as a 10x matrix folder (truncated?): {err}. Re-copy it.") from err
    if feat.shape[1] < 2:
        raise ValueError(f"{files['features']} needs at least two columns (id, name); it has {feat.shape[1]}.")
    if x.shape != (len(codes), len(feat)):
        raise ValueError(
            f"{files['matrix']} is {x.shape[1]} genes x {x.shape[0]} barcodes, but {files['barcodes'].name} lists "
            f"{len(codes)} and {files['features'].name} {len(feat)}: the files come from different runs. Re-copy them."
        )
    var = pd.DataFrame(
        {
            "gene_ids": feat[0].to_numpy(),
            "feature_types": feat[2].to_numpy() if feat.shape[1] > 2 else "Gene Expression",
            "genome": "",
        },
        index=pd.Index(feat[1].to_numpy(), name=None),
    )
    x.indices = x.indices.astype(np.int32, copy=False)
    return _assemble(x, codes, var, folder, gex_only)


def _assemble(x: sparse.csr_matrix, codes, var: pd.DataFrame, path: Path, gex_only: bool) -> ad.AnnData:
    adata = ad.AnnData(x, obs=pd.DataFrame(index=pd.Index(codes)), var=var)
    if gex_only and (adata.var["feature_types"] != "Gene Expression").any():
        adata = adata[:, adata.var["feature_types"] == "Gene Expression"].copy()
    adata.var_names_make_unique()
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][:3].tolist()
        raise ValueError(f"{path} lists some barcodes twice ({dup}...): the matrix is corrupt. Re-run or re-copy it.")
    return adata
