"""The synthetic slide's ``segmented_outputs/``: cell polygons and counts per cell, as Space Ranger 4 writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import sparse

from ._counts import Grid
from ._spaceranger import MatrixWriter, scalefactors, write_json


def _per_cell(counts: sparse.csr_matrix, cell: np.ndarray, n_cells: int) -> sparse.csr_matrix:
    """Counts of the 2 um bins summed per cell (bins outside cells are dropped)."""
    ok = cell >= 0
    assign = sparse.csr_matrix((np.ones(ok.sum()), (cell[ok], np.flatnonzero(ok))), shape=(n_cells, counts.shape[0]))
    return (assign @ counts).tocsr()


def _write_segmentation(
    out: Path, layout, grid: Grid, cell_counts: sparse.csr_matrix, genes, gene_ids, sf: dict
) -> None:
    """``segmented_outputs/`` as Space Ranger 4 writes it: cell polygons (GeoJSON, pixels) and counts per cell."""
    seg = out / "segmented_outputs"
    (seg / "spatial").mkdir(parents=True, exist_ok=True)
    write_json(seg / "spatial" / "scalefactors_json.json", scalefactors(bin_size=2, um_per_px=grid.um_per_px, **sf))
    cell_counts = sparse.csr_matrix(cell_counts)
    keep = np.flatnonzero(np.diff(cell_counts.indptr) > 0)  # cells that hold at least one UMI
    c = layout.cells
    phi = np.linspace(0, 2 * np.pi, 25)[:-1]
    features = []
    for k in keep.tolist():
        p1, p2 = (k * 2.399) % 6.283, (k * 1.733) % 6.283
        wob = 1.0 + 0.07 * np.sin(3 * phi + p1) + 0.04 * np.sin(5 * phi + p2)
        rho = wob / np.sqrt((np.cos(phi) / c["a"][k]) ** 2 + (np.sin(phi) / c["b"][k]) ** 2)
        u, v = rho * np.cos(phi), rho * np.sin(phi)
        ct, st = np.cos(c["theta"][k]), np.sin(c["theta"][k])
        x = (c["x"][k] + u * ct - v * st) / grid.um_per_px
        y = (c["y"][k] + u * st + v * ct) / grid.um_per_px
        ring = np.round(np.stack([x, y], 1), 2).tolist()
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]},
                         "properties": {"cell_id": k + 1}})  # fmt: skip
    write_json(seg / "cell_segmentations.geojson", {"type": "FeatureCollection", "features": features})
    writer = MatrixWriter(seg / "filtered_feature_cell_matrix.h5", genes, gene_ids)
    writer.append(cell_counts[keep].astype(np.int32), np.array([f"cellid_{k + 1:09d}-1" for k in keep.tolist()]))
    writer.close()
