"""The bin array of a synthetic slide, its expected counts and Poisson-sampled counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ._layout import Layout
from ._programme import Programme
from ._raster import rasterise

SUB = 4  # sub-samples per 2 um bin side used to integrate expression over a bin


@dataclass(frozen=True)
class Grid:
    """The 2 um bin array: ``n`` x ``n`` bins, rotated by ``angle`` on the slide."""

    n: int
    origin_um: tuple[float, float]  # slide position of the corner of bin (row 0, col 0)
    angle: float  # radians, counter-clockwise rotation of the array's column axis
    um_per_px: float
    bin_um: float = 2.0

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors of the column and row directions, in slide micrometres."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        return np.array([c, s]), np.array([-s, c])

    def affine(self, bin_size: int) -> np.ndarray:
        """3x3 matrix taking ``(array_col, array_row, 1)`` of ``bin_size`` bins to the bin centre in pixels."""
        ex, ey = self.axes
        k = bin_size / self.bin_um
        step = self.bin_um * k / self.um_per_px
        m = np.eye(3)
        m[:2, 0], m[:2, 1] = ex * step, ey * step
        m[:2, 2] = (np.asarray(self.origin_um) + (ex + ey) * self.bin_um * k / 2) / self.um_per_px
        return m

    def centres_px(self, bin_size: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres (x, y) of bins given by their array row and column."""
        m = self.affine(bin_size)
        return m[0, 0] * cols + m[0, 1] * rows + m[0, 2], m[1, 0] * cols + m[1, 1] * rows + m[1, 2]


def block_weights(layout: Layout, programme: Programme, grid: Grid, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected UMIs each component puts in the 2 um bins of array rows ``[r0, r1)``.

    Returns ``weights`` of shape ``(r1 - r0, n, n_components)``, the ``in_tissue`` mask of the
    bins and the cell under each bin's centre (-1 for none), as Space Ranger assigns bins to
    segmented cells. Expression is integrated over ``SUB x SUB`` points per bin.
    """
    ex, ey = grid.axes
    step = grid.bin_um / SUB
    origin = np.asarray(grid.origin_um) + ey * r0 * grid.bin_um
    shape = ((r1 - r0) * SUB, grid.n * SUB)
    labels, _ = rasterise(layout, shape, origin, ex * step, ey * step)
    ii, jj = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    px = origin[0] + jj * step * ex[0] + ii * step * ey[0]
    py = origin[1] + jj * step * ex[1] + ii * step * ey[1]
    tissue, region = layout.tissue_at(px, py), layout.region_at(px, py)
    n_types, n_comp = len(programme.cell_types), len(programme.profiles)
    cells = layout.cells
    cell = labels > 0
    umi = np.array([t.umi_per_um2 for t in programme.cell_types])
    ambient = np.array([r.ambient_per_um2 for r in programme.regions])
    comp = np.where(cell, 0, n_types + region.astype(np.int64))
    dens = np.where(tissue, ambient[region], 0.0)
    idx = labels[cell] - 1
    comp[cell] = cells["type"][idx]
    dens[cell] = umi[cells["type"][idx]] * cells["scale"][idx]
    bin_id = (np.arange(shape[0])[:, None] // SUB) * grid.n + np.arange(shape[1])[None, :] // SUB
    n_bins = (r1 - r0) * grid.n
    w = np.bincount((bin_id * n_comp + comp).ravel(), weights=(dens * step * step).ravel(), minlength=n_bins * n_comp)
    in_tissue = tissue[SUB // 2 :: SUB, SUB // 2 :: SUB]
    cell_of_bin = labels[SUB // 2 :: SUB, SUB // 2 :: SUB] - 1
    return w.reshape(r1 - r0, grid.n, n_comp), in_tissue, cell_of_bin


def sample_counts(weights: np.ndarray, profiles: np.ndarray, rng: np.random.Generator) -> sparse.csr_matrix:
    """Poisson counts with mean ``weights @ profiles``, drawn UMI by UMI (bins x genes, CSR).

    Splitting each component's Poisson total over genes multinomially is the same law as
    independent Poisson counts per gene, at a cost proportional to the UMIs, not to bins x genes.
    """
    n_bins, n_comp = weights.shape
    n_genes = profiles.shape[1]
    per = rng.poisson(weights)  # (bins, components) UMIs
    bins, genes = [], []
    for c in range(n_comp):
        k = per[:, c]
        total = int(k.sum())
        if total == 0:
            continue
        bins.append(np.repeat(np.arange(n_bins, dtype=np.int64), k))
        cdf = np.cumsum(profiles[c])
        genes.append(np.minimum(np.searchsorted(cdf, rng.random(total) * cdf[-1]), n_genes - 1))
    if not bins:
        return sparse.csr_matrix((n_bins, n_genes), dtype=np.int32)
    b, g = np.concatenate(bins), np.concatenate(genes)
    m = sparse.csr_matrix((np.ones(len(b), np.int32), (b, g)), shape=(n_bins, n_genes))
    m.sum_duplicates()
    return m


def coarsen(counts: sparse.csr_matrix, rows: np.ndarray, cols: np.ndarray, factor: int, n_cols: int):
    """Sum 2 um bins (given by array row/col, rows local to the block) into ``factor``-times larger bins.

    Returns the summed matrix and the coarse (row, col) of its rows, in row-major order.
    """
    crow, ccol = rows // factor, cols // factor
    keep = ccol < n_cols
    key = crow[keep] * n_cols + ccol[keep]
    uniq, inv = np.unique(key, return_inverse=True)
    agg = sparse.csr_matrix((np.ones(len(inv)), (inv, np.flatnonzero(keep))), shape=(len(uniq), counts.shape[0]))
    return (agg @ counts).tocsr().astype(np.int32), uniq // n_cols, uniq % n_cols
