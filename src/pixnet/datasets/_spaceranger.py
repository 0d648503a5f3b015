"""Writers for the files of a Space Ranger Visium HD ``outs/`` folder, streaming where they are large."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import sparse

POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


class MatrixWriter:
    """Write a 10x feature-barcode matrix (``filtered_feature_bc_matrix.h5``) block by block of barcodes."""

    def __init__(self, path: Path, genes: list[str], gene_ids: list[str]):
        self.file = h5py.File(path, "w")
        self.file.attrs.update({"filetype": "matrix", "version": 2, "chemistry_description": "Visium HD v1"})
        self.file.attrs["library_ids"] = np.array([b"pixnet_synthetic"])
        self.file.attrs["original_gem_groups"] = np.array([1])
        g = self.file.create_group("matrix")
        f = g.create_group("features")
        f["_all_tag_keys"] = np.array([b"genome"])
        f["feature_type"] = np.array([b"Gene Expression"] * len(genes))
        f["genome"] = np.array([b"GRCh38"] * len(genes))
        f["id"] = np.array(gene_ids, dtype="S")
        f["name"] = np.array(genes, dtype="S")
        opts = {"maxshape": (None,), "chunks": True, "compression": "gzip", "compression_opts": 1}
        self.data = g.create_dataset("data", (0,), dtype=np.int32, **opts)
        self.indices = g.create_dataset("indices", (0,), dtype=np.int64, **opts)
        self.barcodes = g.create_dataset("barcodes", (0,), dtype="S24", **opts)
        self.indptr = [np.zeros(1, np.int64)]
        self.n_genes, self.nnz = len(genes), 0
        self.group = g

    def append(self, counts: sparse.csr_matrix, codes: np.ndarray) -> None:
        """Append bins (rows of ``counts``) with their barcodes."""
        n, k = counts.nnz, len(codes)
        for ds, values in ((self.data, counts.data), (self.indices, counts.indices)):
            ds.resize((self.nnz + n,))
            ds[self.nnz :] = values
        start = self.barcodes.shape[0]
        self.barcodes.resize((start + k,))
        self.barcodes[start:] = codes.astype("S24")
        self.indptr.append(counts.indptr[1:].astype(np.int64) + self.nnz)
        self.nnz += n

    def close(self) -> None:
        """Write the index arrays and close the file."""
        self.group["indptr"] = np.concatenate(self.indptr)
        self.group["shape"] = np.array([self.n_genes, self.barcodes.shape[0]], dtype=np.int32)
        self.file.close()


class PositionsWriter:
    """Write ``tissue_positions.parquet`` (every bin of the array, in tissue or not) in row groups."""

    def __init__(self, path: Path):
        schema = pa.schema(
            [
                ("barcode", pa.string()),
                ("in_tissue", pa.int32()),
                ("array_row", pa.int32()),
                ("array_col", pa.int32()),
                ("pxl_row_in_fullres", pa.float64()),
                ("pxl_col_in_fullres", pa.float64()),
            ]
        )
        self.writer = pq.ParquetWriter(path, schema)

    def append(self, codes, in_tissue, rows, cols, px_y, px_x) -> None:
        """Append a block of bins."""
        table = pa.table(
            [codes, in_tissue.astype(np.int32), rows.astype(np.int32), cols.astype(np.int32), px_y, px_x],
            names=POSITION_COLUMNS,
        )
        self.writer.write_table(table)

    def close(self) -> None:
        """Finish the file."""
        self.writer.close()


def scalefactors(*, bin_size: int, um_per_px: float, hires: float, lowres: float) -> dict[str, float]:
    """Content of ``scalefactors_json.json`` for one bin size."""
    return {
        "spot_diameter_fullres": bin_size / um_per_px,
        "bin_size_um": float(bin_size),
        "microns_per_pixel": um_per_px,
        "regist_target_img_scalef": hires,
        "tissue_lowres_scalef": lowres,
        "fiducial_diameter_fullres": 150.0 / um_per_px / 2.0,
        "tissue_hires_scalef": hires,
    }


def write_json(path: Path, content: dict) -> None:
    """Write a small JSON file."""
    path.write_text(json.dumps(content, indent=2))


def write_feature_slice(path: Path, affine_2um: np.ndarray) -> None:
    """``feature_slice.h5`` with the layout metadata spatialdata-io reads (file format 1.0).

    ``spot_colrow_to_microscope_colrow`` is the 2 um array's exact position on the image.
    """
    inv = np.linalg.inv(affine_2um)
    identity = np.eye(3).ravel().tolist()
    hd_layout = {"file_format": "1.0", "transform": identity, "num_rows": None, "num_cols": None}
    metadata = {
        "hd_layout_json": json.dumps(hd_layout),
        "transform_matrices": {
            "spot_colrow_to_microscope_colrow": affine_2um.ravel().tolist(),
            "microscope_colrow_to_spot_colrow": inv.ravel().tolist(),
            "cytassist_colrow_to_spot_colrow": identity,
            "spot_colrow_to_cytassist_colrow": identity,
        },
        "generator": "pixnet.datasets.visium_hd_demo",
    }
    with h5py.File(path, "w") as f:
        f.attrs["metadata_json"] = json.dumps(metadata)
