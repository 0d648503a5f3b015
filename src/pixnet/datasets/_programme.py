"""The hidden expression programme of a synthetic slide: cell types, tissue regions and their genes.

Two slides made with the same ``programme_seed`` share this biology (what each cell type looks
like and expresses) and may differ in everything else (layout, stain, grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CellType:
    """Morphology, stain and transcript density of one cell type."""

    name: str
    nucleus_um: float  # nucleus radius (geometric mean of the semi-axes)
    cell_um: float  # cell body radius
    elongation: float  # ratio of the semi-axes, >= 1
    hematoxylin: float  # nuclear optical density
    eosin: float  # cytoplasm optical density
    umi_per_um2: float  # expected UMIs per um^2 of cell body, all genes
    markers: tuple[str, ...]
    membrane: bool = False  # drawn as an empty cell with an eosinophilic rim (adipocytes)


@dataclass(frozen=True)
class Region:
    """A tissue compartment: which cells it holds, how densely, and its extracellular matrix."""

    name: str
    mixture: dict[str, float]  # cell type -> probability
    packing: float  # fraction of the area covered by cell bodies
    ecm_eosin: float  # optical density of the matrix between cells
    fibres: float  # strength of the fibrous texture of the matrix
    ambient_per_um2: float  # extracellular transcripts per um^2


CELL_TYPES: tuple[CellType, ...] = (
    CellType("tumour", 3.4, 7.0, 1.25, 1.00, 0.50, 12.0, ("ERBB2", "FASN", "EPCAM", "KRT8", "KRT18", "GRB7", "MKI67")),
    CellType("fibroblast", 2.0, 3.6, 3.2, 0.95, 0.42, 7.0, ("COL1A1", "COL1A2", "DCN", "LUM", "FBLN1", "PDGFRA")),
    CellType("lymphocyte", 2.4, 3.1, 1.05, 1.45, 0.18, 13.0, ("PTPRC", "CD3E", "CD2", "MS4A1", "CD79A", "CCL19")),
    CellType("macrophage", 2.8, 6.2, 1.3, 0.70, 0.62, 9.0, ("CD68", "CD163", "LYZ", "C1QA", "C1QB", "APOE")),
    CellType("endothelial", 1.8, 3.4, 3.6, 1.05, 0.30, 7.0, ("PECAM1", "VWF", "CDH5", "PLVAP", "CLDN5", "EMCN")),
    CellType("plasma", 2.3, 4.8, 1.35, 1.20, 0.75, 14.0, ("MZB1", "JCHAIN", "IGKC", "XBP1", "SDC1", "IGHG1")),
    CellType("adipocyte", 1.7, 17.0, 1.15, 0.90, 0.02, 1.0, ("ADIPOQ", "PLIN1", "LEP", "CIDEA", "FABP4", "LPL"), True),
)

REGIONS: tuple[Region, ...] = (
    Region(
        "tumour", {"tumour": 0.82, "fibroblast": 0.06, "lymphocyte": 0.06, "macrophage": 0.06}, 0.62, 0.30, 0.2, 0.6
    ),
    Region(
        "stroma",
        {"fibroblast": 0.55, "endothelial": 0.12, "macrophage": 0.12, "lymphocyte": 0.11, "plasma": 0.10},
        0.30,
        0.46,
        1.0,
        0.4,
    ),
    Region(
        "immune", {"lymphocyte": 0.70, "plasma": 0.14, "macrophage": 0.10, "endothelial": 0.06}, 0.68, 0.22, 0.1, 0.8
    ),
    Region("adipose", {"adipocyte": 0.90, "fibroblast": 0.05, "endothelial": 0.05}, 0.80, 0.08, 0.3, 0.12),
)


@dataclass(frozen=True)
class Programme:
    """Genes and their expected share per cell type and per region's extracellular pool.

    ``profiles`` has one row per component (the cell types, then the regions' ambient pools),
    each a probability vector over ``genes``: the expected counts of a bin are
    ``weights @ profiles`` where ``weights`` are the expected UMIs each component puts there.
    """

    genes: tuple[str, ...]
    cell_types: tuple[CellType, ...]
    regions: tuple[Region, ...]
    profiles: np.ndarray  # (n_cell_types + n_regions, n_genes), rows sum to 1

    @property
    def components(self) -> list[str]:
        """Names of the rows of ``profiles``."""
        return [c.name for c in self.cell_types] + [f"ambient_{r.name}" for r in self.regions]


def make_programme(seed: int = 0, n_genes: int = 500) -> Programme:
    """Draw the gene programme: a shared baseline, per-type modulation and marker genes."""
    markers = [g for ct in CELL_TYPES for g in ct.markers]
    if n_genes < len(markers) + 10:
        raise ValueError(f"n_genes must be at least {len(markers) + 10} to hold the marker genes; got {n_genes}.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
    genes = list(markers) + [f"GENE{i:05d}" for i in range(n_genes - len(markers))]
    order = rng.permutation(n_genes)
    genes = [genes[i] for i in order]
    index = {g: i for i, g in enumerate(genes)}
    # A log-normal baseline gives the long tail of mean expression real panels have.
    baseline = rng.lognormal(mean=0.0, sigma=1.4, size=n_genes)
    for g in markers:
        baseline[index[g]] *= 0.15  # markers are low outside their cell type
    rows = []
    for ct in CELL_TYPES:
        row = baseline * rng.lognormal(0.0, 0.45, size=n_genes)
        for g in ct.markers:
            row[index[g]] = baseline[index[g]] * rng.uniform(30.0, 120.0)
        rows.append(row)
    type_rows = np.stack(rows)
    type_rows /= type_rows.sum(axis=1, keepdims=True)
    name_to_row = {ct.name: i for i, ct in enumerate(CELL_TYPES)}
    ambient = []
    for region in REGIONS:
        # Extracellular RNA is the region's cells' transcripts, diluted, plus the baseline.
        mix = sum(p * type_rows[name_to_row[t]] for t, p in region.mixture.items())
        row = 0.7 * mix + 0.3 * baseline / baseline.sum()
        ambient.append(row / row.sum())
    profiles = np.concatenate([type_rows, np.stack(ambient)]).astype(np.float64)
    return Programme(tuple(genes), CELL_TYPES, REGIONS, profiles)
