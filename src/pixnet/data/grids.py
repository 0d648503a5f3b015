"""Where a table's Visium HD bins lie now: the grid the reader recorded, checked, or fitted to the bins.

A recorded grid (:func:`pixnet.io.visium_hd`) is in the reader's pixels; the slide's elements
may have been moved since (a translation, a scale into um, an image registered anew), so it is
used only while it still puts a sample of the bins on their shapes or labels; else the grid is
fitted where the bins lie in the coordinate system.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import shapely
from geopandas import GeoDataFrame
from spatialdata import SpatialData
from spatialdata.models import get_table_keys

from .._keys import ARRAY_COL, ARRAY_ROW, UNS_KEY, bin_size_of
from ..geometry import BinGrid
from .image import element_to_cs, image_levels

logger = logging.getLogger(__name__)


def table_grid(sdata: SpatialData, table_name: str, cs: str) -> BinGrid | None:
    """The Visium HD bin grid of a table in ``cs`` pixels: recorded by :func:`pixnet.io.visium_hd`, or fitted.

    Tables made by other readers (spatialdata-io with squares, circles or labels, a store read
    back, sopa) keep ``array_row``/``array_col`` and the bins' positions: the grid is fitted to
    the bins' centres (of the shapes the table annotates, or ``obsm["spatial"]`` for labels).
    None when the table is not one of Visium HD bins.
    """
    table = sdata.tables[table_name]
    recorded = table.uns.get(UNS_KEY, {}).get("grid")
    if recorded is not None:  # in full-resolution pixels, the reader's coordinate system
        grid = BinGrid.from_dict(recorded)
        if grid_holds(sdata, table, grid, cs):
            return grid
        # the elements were moved since (a translation, a scale into um...): the grid is fitted where the bins lie now
        logger.info("%s: its recorded grid no longer matches its bins in %r; fitted anew", table_name, cs)
    return fitted_grid(sdata, table, table_bin_size(table, table_name), cs)


def fitted_grid(sdata: SpatialData, table: ad.AnnData, size: float | None, cs: str) -> BinGrid | None:
    """The grid of ``size`` um bins fitted where a table's bins lie in ``cs``; None if not a regular array."""
    if size is None or ARRAY_ROW not in table.obs or ARRAY_COL not in table.obs or table.n_obs < 3:
        return None
    take = np.unique(np.linspace(0, table.n_obs - 1, min(table.n_obs, 20_000)).astype(np.int64))
    xy = _centres(sdata, table, take, cs)
    if xy is None:
        return None
    rows, cols = table.obs[ARRAY_ROW].to_numpy()[take], table.obs[ARRAY_COL].to_numpy()[take]
    try:
        fitted = BinGrid.fit(rows, cols, xy[:, 0], xy[:, 1], bin_size_um=size, um_per_px=1.0)
    except ValueError:
        return None
    grid = BinGrid(fitted.affine, size, size / fitted.side_px)
    if np.abs(grid.centres(rows, cols) - xy).max() > 0.25 * grid.side_px:
        return None  # not a regular array: keep the shapes as they are
    return grid


def grid_holds(sdata: SpatialData, table: ad.AnnData, grid: BinGrid, cs: str) -> bool:
    """Whether a recorded grid puts a sample of the table's bins where their shapes lie in ``cs`` now."""
    if ARRAY_ROW not in table.obs or ARRAY_COL not in table.obs or table.n_obs == 0:
        return True
    take = np.unique(np.linspace(0, table.n_obs - 1, min(table.n_obs, 256)).astype(np.int64))
    try:
        xy = _centres(sdata, table, take, cs)
    except ValueError:  # no transformation to cs: the caller's own check says so
        return True
    if xy is None:
        return True
    rows, cols = table.obs[ARRAY_ROW].to_numpy()[take], table.obs[ARRAY_COL].to_numpy()[take]
    return bool(np.abs(grid.centres(rows, cols) - xy).max() <= 0.25 * grid.side_px)


def annotated_element(table: ad.AnnData) -> str | None:
    """The one element a table annotates (a one-element list, as spatialdata's queries leave it, is that element)."""
    region = table.uns.get("spatialdata_attrs", {}).get("region")
    if isinstance(region, list | tuple) and len(region) == 1:
        region = region[0]
    return str(region) if isinstance(region, str) else None


def table_bin_size(table: ad.AnnData, table_name: str = "") -> float | None:
    """Bin size (um) from ``uns`` or the names spatialdata-io gives (``square_016um``)."""
    size = table.uns.get(UNS_KEY, {}).get("bin_size_um")
    if size:
        return float(size)
    region = annotated_element(table)
    for name in [table_name] + ([region] if region else []):
        size = bin_size_of(name)
        if size is not None:
            return size
    return None


def _centres(sdata: SpatialData, table: ad.AnnData, take: np.ndarray, cs: str) -> np.ndarray | None:
    """Centres of rows ``take`` in ``cs``: of the shapes they annotate, or ``obsm["spatial"]`` otherwise."""
    instance_key, region = get_table_keys(table)[2], annotated_element(table)
    element = sdata[region] if region is not None and region in sdata else None
    if isinstance(element, GeoDataFrame):
        to_cs = element_to_cs(element, cs)
        try:
            geoms = element.geometry.loc[table.obs[instance_key].to_numpy()[take]].to_numpy()
        except KeyError:
            return None
        xy = shapely.get_coordinates(shapely.centroid(geoms))
        return xy @ to_cs[:2, :2].T + to_cs[:2, 2]
    if element is not None and not isinstance(element, GeoDataFrame):  # labels: one pixel per bin, where they lie now
        xy = _label_centres(sdata, element, table, take, instance_key, cs)
        if xy is not None:
            return xy
    if "spatial" in table.obsm and element is not None:  # spatialdata-io keeps full-resolution centres
        return np.asarray(table.obsm["spatial"], np.float64)[take, :2]
    return None


def _label_centres(
    sdata: SpatialData, element, table: ad.AnnData, take: np.ndarray, instance_key: str, cs: str
) -> np.ndarray | None:
    """Centres in ``cs`` of rows ``take`` of a table annotating a labels image of one pixel per bin, else None.

    The raster's pixel of a bin is found from one chunk: a bin labelled there ties the raster's
    pixels to ``array_row``/``array_col`` (``pixel = (row - r0, col - c0)``), checked on every bin
    of that chunk; the centres then go through the element's own transformation, so they follow
    the labels wherever they were moved (``obsm["spatial"]`` stays where the reader put them).
    """
    data = image_levels(element)[0].data
    if data.ndim != 2:
        return None
    ids = table.obs[instance_key].to_numpy()
    rows, cols = table.obs[ARRAY_ROW].to_numpy(), table.obs[ARRAY_COL].to_numpy()
    find = _finder(ids)
    if find is None:
        return None
    (h, w), (ch, cw) = data.shape, getattr(data, "chunksize", (2048, 2048))
    for y0, x0 in ((h // 2 // ch * ch, w // 2 // cw * cw), (0, 0), (h // 4 // ch * ch, w // 4 // cw * cw)):
        block = np.asarray(data[y0 : y0 + ch, x0 : x0 + cw])  # one chunk: a bin labelled there anchors the raster
        ys, xs = np.nonzero(block)
        pick = np.unique(np.linspace(0, len(ys) - 1, min(len(ys), 4096)).astype(np.int64)) if len(ys) else ys
        ys, xs = ys[pick], xs[pick]  # a sample of the chunk's bins: enough to anchor and check
        found = find(block[ys, xs])
        ok = ~np.isnan(found)
        if not ok.any():
            continue
        i = found[ok].astype(np.int64)
        r0, c0 = rows[i] - (y0 + ys[ok]), cols[i] - (x0 + xs[ok])
        if not ((r0 == r0[0]).all() and (c0 == c0[0]).all()):
            return None  # not a raster of the array's rows and columns
        to_cs = element_to_cs(element, cs)
        px = np.stack([cols[take] - c0[0], rows[take] - r0[0]]).astype(np.float64)
        px += _centre_in_pixel(table, take, px, to_cs, _fullres_frames(sdata, cs))[:, None]
        return (to_cs @ np.vstack([px, np.ones(len(take))]))[:2].T
    return None


def _finder(ids: np.ndarray):
    """``values -> row of each value in ids`` (NaN where absent), or None when ids repeat.

    Sorted ids (pixnet's and spatialdata-io's labels, as read) are searched; others are indexed (1-2 s at 8M bins).
    """
    if len(ids) and np.issubdtype(ids.dtype, np.number) and bool((ids[1:] > ids[:-1]).all()):

        def find(values):
            at = np.minimum(np.searchsorted(ids, values), len(ids) - 1)
            return np.where(ids[at] == values, at, np.nan)

        return find
    where = pd.Series(np.arange(len(ids)), index=ids)
    if not where.index.is_unique:
        return None
    return lambda values: where.reindex(values).to_numpy(np.float64)


def _centre_in_pixel(table: ad.AnnData, take: np.ndarray, px: np.ndarray, to_cs: np.ndarray, frames) -> np.ndarray:
    """Where in its labels pixel a bin's centre lies: ``(0.5, 0.5)`` or ``(0, 0)``.

    ``(0.5, 0.5)`` is spatialdata's pixel centre (pixnet's labels); spatialdata-io's labels put a
    bin's centre on its pixel's corner.

    Told by the reader's centres (``obsm["spatial"]``, full-resolution pixels) where the labels lie
    as read, or moved together with the H&E (``frames``); else the pixel's centre is taken.
    """
    if "spatial" not in table.obsm or not len(take):
        return np.full(2, 0.5)
    xy = np.vstack([np.asarray(table.obsm["spatial"], np.float64)[take, :2].T, np.ones(len(take))])
    for image_to_cs in frames:  # obsm["spatial"] is in full-resolution pixels: as read, or moved with the image
        frac = (np.linalg.inv(to_cs) @ image_to_cs @ xy)[:2] - px
        for c in (0.5, 0.0):
            if np.abs(frac - c).max() < 1e-3:
                return np.full(2, c)
    return np.full(2, 0.5)


def _fullres_frames(sdata: SpatialData, cs: str) -> list[np.ndarray]:
    """Where full-resolution pixels may lie in ``cs``: as the reader put them, or through the H&E's transformation."""
    attrs = sdata.attrs.get(UNS_KEY, {})
    names = [attrs.get("image")] + sorted(k for k in sdata.images if k.endswith("_full_image"))
    frames = [np.eye(3)]
    for name in dict.fromkeys(n for n in names if n in sdata.images):
        try:
            frames.append(element_to_cs(sdata.images[name], cs))
        except ValueError:  # not in cs
            pass
    return frames
