"""The spots a table annotates (squares, circles, polygons) in the image's coordinate system, with counts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anndata as ad
import numpy as np
import shapely
from geopandas import GeoDataFrame
from scipy import sparse
from spatialdata import SpatialData
from spatialdata.models import get_table_keys

from .._arrays import in_memory
from .._keys import ARRAY_COL, ARRAY_ROW
from ..geometry import BinGrid, Spots
from .grids import table_grid
from .image import element_to_cs

logger = logging.getLogger(__name__)


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
    if region not in sdata:
        raise KeyError(f"Table {table_name!r} annotates {region!r}, which is not in the SpatialData object.")
    element = sdata[region]
    to_cs = element_to_cs(
        element, cs, f"Element {region!r} of table {table_name!r}"
    )  # also checks that the bins live in `cs`
    grid = table_grid(sdata, table_name, cs)
    if grid is not None:  # Visium HD bins: exact (rotated) squares of the array, however they are drawn
        rows, cols = table.obs[ARRAY_ROW].to_numpy(), table.obs[ARRAY_COL].to_numpy()
        spots = Spots.squares(grid.centres(rows, cols), grid.side_px / 2, grid.angle)
        return TableSpots(table, spots, region, grid)
    if not isinstance(element, GeoDataFrame):
        raise ValueError(
            f"Table {table_name!r} annotates {region!r}, which is not a shapes element. pixnet aggregates into "
            "shapes (circles, squares, polygons) or Visium HD bins (a table with array_row, array_col and "
            "obsm['spatial'])."
        )
    spots = shapes_to_spots(_annotated(element, table, table_name, region), to_cs,
                            what=f"Shapes element {region!r} of table {table_name!r}")  # fmt: skip
    return TableSpots(table, spots, region, None)


def _annotated(element: GeoDataFrame, table: ad.AnnData, table_name: str, region: str) -> GeoDataFrame:
    """The shapes of the table's rows, in its order (matched by the instance key)."""
    ids = table.obs[get_table_keys(table)[2]].to_numpy()
    try:
        return element.loc[ids]
    except KeyError as err:
        raise KeyError(
            f"Some rows of table {table_name!r} have no shape in {region!r} (instance ids not found)."
        ) from err


def shapes_to_spots(gdf: GeoDataFrame, to_cs: np.ndarray, *, what: str = "The shapes element") -> Spots:
    """Circles (points with a ``radius`` column) or polygons, mapped by the affine ``to_cs``.

    Invalid polygons (a ring that crosses itself, as segmentation tools sometimes write) are
    repaired with :func:`shapely.make_valid`, with a warning; the element itself is not changed.

    Raises
    ------
    ValueError
        Geometries that are missing, empty, of zero area or with non-finite coordinates, circles
        without a positive finite ``radius``, or kinds other than points and (multi)polygons:
        they cover no pixel, so nothing can be predicted or learnt for them. ``what`` names the
        element in the message.

    """
    geom = gdf.geometry.to_numpy()
    names = gdf.index.to_numpy()
    kinds = set(shapely.get_type_id(geom[~shapely.is_missing(geom)]).tolist())
    linear, shift = to_cs[:2, :2], to_cs[:2, 2]
    if kinds == {0}:  # points: circles with a radius column
        if "radius" not in gdf.columns:
            raise ValueError(
                "Point shapes need a 'radius' column to be spots; make circles with "
                "spatialdata.models.ShapesModel.parse(xy, geometry=0, radius=...)."
            )
        radius = gdf["radius"].to_numpy(np.float64)
        xy = np.full((len(geom), 2), np.nan)  # NaN where missing or empty: rows stay aligned
        coords, index = shapely.get_coordinates(geom, return_index=True)
        xy[index] = coords
        _refuse(what, names, {
            "no geometry (None)": shapely.is_missing(geom),
            "an empty point": shapely.is_empty(geom),
            "non-finite coordinates": ~np.isfinite(xy).all(1),
            "a radius that is not a positive finite number": ~(np.isfinite(radius) & (radius > 0)),
        }, fix=_CIRCLE_FIX)  # fmt: skip
        scale = np.sqrt(abs(np.linalg.det(linear)))
        return Spots("circle", xy @ linear.T + shift, radius * scale)
    if not kinds <= {3, 6}:
        found = sorted(shapely.GeometryType(k).name for k in kinds)
        raise ValueError(f"{what}: spots must be circles (points with a radius) or polygons; found {found}.")
    _refuse(what, names, {
        "no geometry (None)": shapely.is_missing(geom),
        "an empty polygon": shapely.is_empty(geom),
        "non-finite coordinates": _non_finite(geom),
    }, fix=_POLYGON_FIX)  # fmt: skip
    invalid = ~shapely.is_valid(geom)
    if invalid.any():
        logger.warning(
            "%s: %d of %d polygons are invalid (e.g. %r: %s); pixnet uses shapely.make_valid's repair of them.",
            what, int(invalid.sum()), len(geom), names[invalid][0], shapely.is_valid_reason(geom[invalid][0]),
        )  # fmt: skip
        geom = geom.copy()
        geom[invalid] = shapely.make_valid(geom[invalid], method="structure", keep_collapsed=False)
    _refuse(what, names, {"zero area": ~(shapely.area(geom) > 0)}, fix=_POLYGON_FIX)
    polys = shapely.transform(geom, lambda c: c @ linear.T + shift)
    centres = shapely.get_coordinates(shapely.centroid(polys))
    return Spots("polygon", centres, None, 0.0, polys)


# what the message tells the user to run: tests/test_io_spots.py runs it on every form refused
_CIRCLE_FIX = (
    "gdf[np.isfinite(gdf.geometry.x) & np.isfinite(gdf.geometry.y) & np.isfinite(gdf.radius) & (gdf.radius > 0)]"
)
_POLYGON_FIX = "gdf[gdf.area > 0]"  # NaN for None and non-finite rings; 0 for empty, collapsed and bow-tie rings


def _non_finite(geom: np.ndarray) -> np.ndarray:
    """Per geometry: whether any of its coordinates is NaN or infinite."""
    xy, index = shapely.get_coordinates(geom, return_index=True)
    out = np.zeros(len(geom), bool)
    out[index[~np.isfinite(xy).all(1)]] = True
    return out


def _refuse(what: str, names: np.ndarray, problems: dict[str, np.ndarray], fix: str) -> None:
    """Raise one ValueError naming every problem found (``{reason: mask}`` over the shapes)."""
    found = [(reason, mask) for reason, mask in problems.items() if mask.any()]
    if found:
        lines = "; ".join(f"{int(m.sum())} with {why} (e.g. {[str(n) for n in names[m][:3]]})" for why, m in found)
        raise ValueError(
            f"{what}: of its {len(names)} shapes, {lines}. Such a shape covers no pixel, so pixnet can neither "
            f"predict nor learn its expression. Drop them first ({fix}) and parse the element again."
        )


def check_counts(table: ad.AnnData, name: str) -> None:
    """Refuse a table of measurements whose ``X`` is not counts (normalised or log-transformed by scanpy, say).

    pixnet normalises counts itself; values already normalised would be normalised twice, silently.
    Looks at the first 2,000 rows' values (integers, as counts are); scanpy's ``uns["log1p"]`` mark
    only words the message (it stays after ``X`` is restored, and is set when a layer alone is).

    Raises
    ------
    ValueError
        Naming the table and how to put its raw counts back in ``X``.

    """
    fix = (f"put the raw counts back in sdata.tables[{name!r}].X (from its .raw or a layer that holds them, "
           "e.g. table.X = table.layers['counts'].copy())")  # fmt: skip
    x = in_memory(table.X[: min(table.n_obs, 2000)])
    v = x.data if sparse.issparse(x) else np.asarray(x).ravel()
    v = v[np.isfinite(v)]  # NaN and inf: refused where the counts are read, by name
    if len(v) and not np.array_equal(v, np.round(v)):
        # scanpy's mark says why (it stays after X is restored, or when a layer alone was transformed: not a cause)
        how = "log-transformed (uns['log1p'] is set, by scanpy)" if "log1p" in table.uns else "normalised"
        raise ValueError(
            f"Table {name!r} holds non-integer values in X (e.g. {float(v[v != np.round(v)][0]):.4g}): {how}, "
            f"not counts; pixnet reads counts: {fix}."
        )


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
