"""The spots a table annotates (squares, circles, polygons) in the image's coordinate system, with counts."""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import shapely
from geopandas import GeoDataFrame
from scipy import sparse
from spatialdata import SpatialData
from spatialdata.models import get_table_keys

from .._arrays import in_memory
from .._constants import UNS_KEY
from .._grid import BinGrid
from ..model.aggregate import Spots
from .image import element_to_cs


@dataclass
class TableSpots:
    """A table's spots and where they come from."""

    table: ad.AnnData
    spots: Spots  # in pixels of the coordinate system
    region: str
    grid: BinGrid | None  # set for Visium HD bins


def table_spots(sdata: SpatialData, table_name: str, cs: str) -> TableSpots:
    """Geometry of every row of ``sdata[table_name]``, in order, in coordinate system ``cs``.

    Visium HD bins read by :func:`pixnet.io.visium_hd` are exact squares from their grid;
    tables annotating shapes give circles (shapes with a ``radius``) or polygons.
    """
    if table_name not in sdata.tables:
        raise KeyError(f"No table {table_name!r} in the SpatialData object (tables: {sorted(sdata.tables)}).")
    table = sdata.tables[table_name]
    try:
        region, region_key, instance_key = get_table_keys(table)
    except (KeyError, ValueError) as err:
        raise ValueError(
            f"Table {table_name!r} does not annotate an element (no spatialdata_attrs); parse it with TableModel."
        ) from err
    regions = [region] if isinstance(region, str) else list(region)
    if len(regions) != 1:
        raise ValueError(f"Table {table_name!r} annotates several elements {regions}; pass a table that annotates one.")
    region = regions[0]
    grid = BinGrid.from_dict(table.uns[UNS_KEY]["grid"]) if "grid" in table.uns.get(UNS_KEY, {}) else None
    if region not in sdata:
        raise KeyError(f"Table {table_name!r} annotates {region!r}, which is not in the SpatialData object.")
    element = sdata[region]
    to_cs = element_to_cs(
        element, cs, f"Element {region!r} of table {table_name!r}"
    )  # also checks that the bins live in `cs`
    if grid is not None:  # the grid is in full-resolution pixels, the reader's coordinate system
        rows, cols = table.obs["array_row"].to_numpy(), table.obs["array_col"].to_numpy()
        spots = Spots.squares(grid.centres(rows, cols), grid.side_px / 2, grid.angle)
        return TableSpots(table, spots, region, grid)
    if not isinstance(element, GeoDataFrame):
        raise ValueError(
            f"Table {table_name!r} annotates {region!r}, which is not a shapes element. pixnet aggregates into "
            "shapes (circles, squares, polygons) or Visium HD bins read with pixnet.io.visium_hd."
        )
    ids = table.obs[instance_key].to_numpy()
    try:
        geoms = element.loc[ids]
    except KeyError as err:
        raise KeyError(
            f"Some rows of table {table_name!r} have no shape in {region!r} (instance ids not found)."
        ) from err
    return TableSpots(table, shapes_to_spots(geoms, to_cs), region, None)


def shapes_to_spots(gdf: GeoDataFrame, to_cs: np.ndarray) -> Spots:
    """Circles (points with a ``radius`` column) or polygons, mapped by the affine ``to_cs``."""
    geom = gdf.geometry.to_numpy()
    kinds = set(shapely.get_type_id(geom).tolist())
    linear, shift = to_cs[:2, :2], to_cs[:2, 2]
    if kinds == {0}:  # points: circles with a radius column
        if "radius" not in gdf.columns:
            raise ValueError(
                "Point shapes need a 'radius' column to be spots; make circles with "
                "spatialdata.models.ShapesModel.parse(xy, geometry=0, radius=...)."
            )
        xy = shapely.get_coordinates(geom) @ linear.T + shift
        scale = np.sqrt(abs(np.linalg.det(linear)))
        return Spots("circle", xy, gdf["radius"].to_numpy(np.float64) * scale)
    if not kinds <= {3, 6}:
        raise ValueError(f"Spots must be circles or polygons; found geometry types {sorted(kinds)}.")
    polys = shapely.transform(geom, lambda c: c @ linear.T + shift)
    centres = shapely.get_coordinates(shapely.centroid(polys))
    return Spots("polygon", centres, None, 0.0, polys)


def table_counts(table: ad.AnnData, genes: list[str], *, other: bool) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Counts of ``genes`` (and, if ``other``, of all remaining genes as a last column), and bin totals.

    Returns a CSR float32 matrix (bins x genes[+1]) and the totals over all genes.
    """
    missing = [g for g in genes if g not in table.var_names]
    if missing:
        raise KeyError(f"{len(missing)} of the model's genes are not in the table: {missing[:10]}.")
    x = sparse.csr_matrix(in_memory(table.X), dtype=np.float32)
    if x.nnz and (not np.isfinite(x.data).all() or (x.data < 0).any()):
        raise ValueError("The table's counts contain NaN, inf or negative values; pixnet trains on raw counts.")
    totals = np.asarray(x.sum(axis=1)).ravel()
    if not totals.any():
        raise ValueError(
            "Every bin of the table has zero counts (no tissue, or an empty matrix): there is nothing to learn "
            "from. Check that the run's filtered_feature_bc_matrix.h5 is the right one."
        )
    sub = x[:, table.var_names.get_indexer(genes)]
    if other:
        rest = totals - np.asarray(sub.sum(axis=1)).ravel()
        sub = sparse.hstack([sub, sparse.csr_matrix(np.maximum(rest, 0)[:, None])], format="csr")
    return sparse.csr_matrix(sub, dtype=np.float32), totals.astype(np.float32)
