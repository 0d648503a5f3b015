"""Visium-like spots made from Visium HD bins: what a standard Visium run of the same tissue would measure."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse
from scipy.spatial import cKDTree
from spatialdata import SpatialData
from spatialdata.models import ShapesModel, TableModel
from spatialdata.transformations import Identity

from .._arrays import in_memory
from .._keys import UNS_KEY, bin_table_name


def pseudo_visium(
    sdata: SpatialData,
    *,
    bin_size: int = 2,
    diameter_um: float = 55.0,
    spacing_um: float = 100.0,
    key_added: str = "visium_spots",
    overwrite: bool = False,
) -> ad.AnnData:
    """Lay Visium spots (circles on a hexagonal lattice) over a Visium HD run and count each from its bins.

    Each spot sums the bins whose centre falls inside it, as a Visium run would have counted the
    same tissue. Use it to train pixnet on spot-level data and score it on the bins, or to compare
    with spot regressors trained on Visium.

    Parameters
    ----------
    sdata
        Read with :func:`pixnet.io.visium_hd`; needs the table of ``bin_size`` bins.
    bin_size
        The bins to sum (2 um: the closest to the tissue's own resolution).
    diameter_um, spacing_um
        Spot diameter and centre-to-centre distance (Visium: 55 and 100 um).
    key_added
        Name of the circles shapes element; the table is ``f"{key_added}_counts"``.
    overwrite
        Replace existing elements of those names.

    Returns
    -------
    The spot table (counts in ``X``), also written to ``sdata``.

    """
    from ..data import table_spots

    attrs = sdata.attrs.get(UNS_KEY, {})
    if "um_per_px" not in attrs or "coordinate_system" not in attrs:
        raise ValueError("pseudo_visium needs a SpatialData read with pixnet.io.visium_hd (it records the scale).")
    table_name, um_per_px, cs = bin_table_name(bin_size), attrs["um_per_px"], attrs["coordinate_system"]
    if table_name not in sdata.tables:
        raise KeyError(f"No table {table_name!r}; read the run with pixnet.io.visium_hd(..., bin_sizes=({bin_size},)).")
    if diameter_um <= 0 or spacing_um < diameter_um:
        raise ValueError(f"Need 0 < diameter_um <= spacing_um; got {diameter_um} and {spacing_um}.")
    names = [key_added, f"{key_added}_counts"]
    taken = [n for n in names if n in sdata]
    if taken and not overwrite:
        raise ValueError(f"{taken} already exist in the SpatialData object; pass overwrite=True or another key_added.")
    ts = table_spots(sdata, table_name, cs)
    xy = ts.spots.centres  # (n_bins, 2) in the coordinate system's units
    step, radius = spacing_um / um_per_px, diameter_um / 2 / um_per_px
    centres = _hex_lattice(xy.min(0), xy.max(0), step)
    members = cKDTree(xy).query_ball_point(centres, radius)
    keep = np.array([len(m) > 0 for m in members])
    centres, members = centres[keep], [m for m, k in zip(members, keep) if k]
    rows = np.repeat(np.arange(len(members)), [len(m) for m in members])
    assign = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, np.concatenate(members))), (len(members), len(xy))
    )
    counts = sparse.csr_matrix(assign @ sparse.csr_matrix(in_memory(ts.table.X), dtype=np.float32))
    obs = pd.DataFrame(
        {
            "spot_id": np.arange(len(centres)),
            "region": pd.Categorical([key_added] * len(centres)),
            "n_bins": assign.getnnz(1),
        },
        index=[f"spot_{i}" for i in range(len(centres))],
    )
    table = ad.AnnData(counts, obs=obs, var=ts.table.var[[]].copy())
    table.obsm["spatial"] = centres
    table.uns[UNS_KEY] = {"diameter_um": diameter_um, "spacing_um": spacing_um, "from_bins": table_name}
    shapes = ShapesModel.parse(
        centres, geometry=0, radius=np.full(len(centres), radius), transformations={cs: Identity()}
    )
    for n in taken:
        del sdata[n]
    sdata.shapes[key_added] = shapes
    sdata.tables[names[1]] = TableModel.parse(table, region=key_added, region_key="region", instance_key="spot_id")
    return sdata.tables[names[1]]


def _hex_lattice(lo: np.ndarray, hi: np.ndarray, step: float) -> np.ndarray:
    """Centres of a hexagonal lattice of spacing ``step`` covering the box ``lo``-``hi``, (n, 2)."""
    ys = np.arange(lo[1] + step / 2, hi[1], step * np.sqrt(3) / 2)
    return np.array(
        [
            (x + (step / 2 if k % 2 else 0), y)
            for k, y in enumerate(ys)
            for x in np.arange(lo[0] + step / 2, hi[0] - step / 2, step)
        ]
    )
