"""What to predict into: a Visium HD table's bins, a new bin grid, or any shapes element."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from spatialdata import deepcopy
from spatialdata.models import get_table_keys

from .._keys import ARRAY_COL, ARRAY_ROW, UNS_KEY, barcodes, check_bin_size, target_name
from ..data import element_to_cs, shapes_to_spots, table_spots
from ..data.grids import table_grid
from ..data.slide import Slide
from ..geometry import BinGrid, Spots
from ..geometry.binsets import isin, pack, unique, unpack
from ..pp import tissue_mask

logger = logging.getLogger(__name__)


@dataclass
class Target:
    """Spots to predict, in coordinate-system pixels, with the obs of the table to write."""

    name: str  # what the elements are named after: square_008um, or the shapes element's name
    spots: Spots
    obs: pd.DataFrame
    spatial: np.ndarray  # (n, 2) centres for obsm["spatial"]
    grid: BinGrid | None = None
    source_table: str | None = None  # the measured table these are the bins of
    geometry: object = None  # shapes of the spots (a GeoDataFrame), or None for labels of a grid
    instance: np.ndarray | None = None  # ids of the spots in `geometry` (None: 0..n-1, made when the table is)

    @property
    def as_labels(self) -> bool:
        """Whether the prediction annotates a labels image (a 2 um grid: millions of bins) rather than shapes."""
        return self.grid is not None and self.grid.bin_size_um < 8 and self.geometry is None

    def instance_ids(self) -> np.ndarray:
        """``(n,)`` ids of the rows in the element they annotate.

        1..n in a labels image (0 is its background); else the ids of the spots in ``geometry``, or 0..n-1.
        """
        n = len(self.obs)
        if self.as_labels:
            return np.arange(1, n + 1)
        return np.arange(n) if self.instance is None else self.instance


def resolve_target(slide: Slide, *, bin_size: float | None, shapes: str | None) -> Target:
    """Bins of ``bin_size`` (the measured table's, or a new grid on the array) or the shapes element ``shapes``.

    With neither, the spots a reader recorded in ``sdata.attrs["pixnet"]["shapes"]`` (:func:`pixnet.io.spots`).
    """
    sdata = slide.sdata
    if bin_size is None and shapes is None:
        shapes = sdata.attrs.get(UNS_KEY, {}).get("shapes")
    if (bin_size is None) == (shapes is None):
        raise ValueError("Pass exactly one of bin_size=... (square bins) or shapes=... (a shapes element's name).")
    if shapes is not None:
        return _shapes_target(slide, shapes)
    name = target_name(bin_size=bin_size)
    if name in sdata.tables:  # the measured bins, however they were read: predict exactly those
        return _table_target(slide, name)
    return _new_grid(slide, check_bin_size(bin_size), name)


def _table_target(slide: Slide, name: str) -> Target:
    """The rows of a measured table: its bins as squares of their grid, or the shapes it annotates."""
    ts = table_spots(slide.sdata, name, slide.cs)
    if ts.grid is not None:
        # the measured table's columns, not copied here: the prediction's table copies them once the pass is done
        # (3 columns of 8M bins, ~100 MB less at predict's peak)
        obs = pd.DataFrame({c: ts.table.obs[c] for c in ("in_tissue", ARRAY_ROW, ARRAY_COL) if c in ts.table.obs},
                           index=ts.table.obs.index, copy=False)  # fmt: skip
        # Space Ranger's centres while the bins lie where the reader put them (its grid still holds); else the
        # centres where they lie now (the slide was moved since)
        recorded = ts.table.uns.get(UNS_KEY, {}).get("grid")
        kept = recorded is not None and "spatial" in ts.table.obsm and _same_grid(ts.grid, BinGrid.from_dict(recorded))
        spatial = np.asarray(ts.table.obsm["spatial"]) if kept else ts.spots.centres
        return Target(name, ts.spots, obs, spatial, ts.grid, name)
    geometry = deepcopy(slide.sdata.shapes[ts.region])
    instance = ts.table.obs[get_table_keys(ts.table)[2]].to_numpy()
    obs = pd.DataFrame(index=ts.table.obs_names.copy())
    return Target(name, ts.spots, obs, ts.spots.centres, None, name, geometry, instance)


def _same_grid(a: BinGrid, b: BinGrid) -> bool:
    return bool(np.allclose(a.affine, b.affine, rtol=0, atol=1e-9)) and a.bin_size_um == b.bin_size_um


def _new_grid(slide: Slide, bin_size: float, name: str) -> Target:
    """A new grid of ``bin_size`` bins on the slide's Visium HD array, over the measured tissue.

    The array's grid and the tissue are the finest measured table's (not a prediction's table).
    """
    sdata = slide.sdata
    # the measured bins' grids: a prediction's table (a new grid itself) would make the next grid depend on it
    measured = [t for t in sdata.tables if "model" not in sdata.tables[t].uns.get(UNS_KEY, {})]
    grids = [(g, sdata.tables[t]) for t in measured if (g := _grid_or_none(sdata, t, slide.cs)) is not None]
    if not grids:
        return _image_grid(slide, bin_size, name)
    old, ref = min(grids, key=lambda kv: kv[0].bin_size_um)
    grid = old.rescale(bin_size)
    if grid.side_px * slide.um_per_px < slide.um_per_px:
        raise ValueError(f"bin_size={bin_size:g} um is smaller than a pixel of the image ({slide.um_per_px:g} um).")
    rr, cc = _bins_over(old, grid, ref.obs[ARRAY_ROW].to_numpy(), ref.obs[ARRAY_COL].to_numpy())
    index = pd.Index(barcodes(bin_size, rr, cc))
    obs = pd.DataFrame({ARRAY_ROW: rr.astype(np.int32), ARRAY_COL: cc.astype(np.int32)}, index=index)
    centres = grid.centres(rr, cc)
    spots = Spots.squares(centres, grid.side_px / 2, grid.angle)
    return Target(name, spots, obs, centres, grid, None)


def _bins_over(old: BinGrid, grid: BinGrid, rows: np.ndarray, cols: np.ndarray, *, chunk: int = 2**20):
    """Rows and columns of ``grid``'s bins centred on a measured bin ``(rows, cols)`` of ``old``, in row order.

    The two grids share their axes (``old.rescale``): a measured bin spans a box of ``grid``'s
    coordinates, and the new bins whose centres fall in it (with a margin for rounding) are the
    candidates (or, for bins of a whole multiple of the measured side, the blocks the measured
    bins fall in: :func:`_whole_multiple`), kept when their centre lies in a measured bin (as
    ``old.index_of`` rounds it).
    Finer or coarser, every such bin is found: several per measured bin when ``grid`` is finer,
    none for most when it is coarser. Bins are handled ``chunk`` at a time and pairs as one int64
    key each (a set of pairs over 8.2M bins took +3.4 GB and 90 s; ``benchmarks/RESULTS.md``), and
    the centres' keys looked up by :func:`~pixnet.geometry.binsets.isin` (``np.isin`` took 15 s of it, 2026-12-02).
    """
    measured = pack(rows, cols)
    keys = _whole_multiple(old, grid, rows, cols)
    if keys is None:
        keys = _candidates(old, grid, rows, cols, chunk)
    rr, cc = unpack(keys)
    centre = grid.centres(rr, cc)
    k = pack(*old.index_of(centre[:, 0], centre[:, 1]))
    keep = isin(k, measured) & (rr >= 0) & (cc >= 0)
    return rr[keep], cc[keep]


def _whole_multiple(old: BinGrid, grid: BinGrid, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
    """Sorted keys of the candidates when ``grid``'s bins are ``k`` x ``k`` of ``old``'s (``k`` whole); else None.

    ``old.rescale`` puts new bin ``(R, C)`` over measured bins ``[kR, kR + k) x [kC, kC + k)``, its
    centre inside them: the measured bins' blocks are the candidates (one sort of 8.2M keys, ~1 s,
    against ~6 s for the general search).
    """
    ratio = grid.bin_size_um / old.bin_size_um
    k = round(ratio)
    if k < 1 or abs(ratio - k) > 1e-9:
        return None
    return unique(pack(np.floor_divide(rows, k), np.floor_divide(cols, k)))


def _candidates(old: BinGrid, grid: BinGrid, rows: np.ndarray, cols: np.ndarray, chunk: int) -> np.ndarray:
    """Sorted keys of ``grid``'s bins whose centres may lie in a measured bin (a box around each, with a margin)."""
    inv = np.linalg.inv(grid.affine)
    span = int(np.ceil(old.side_px / grid.side_px)) + 2  # new bins a measured bin spans along an axis, at most
    step = max(1, chunk // span**2)
    cand = []
    for s in range(0, len(rows), step):
        xy = old.corners(rows[s : s + step], cols[s : s + step])  # (n, 4, 2)
        c = inv[0, 0] * xy[..., 0] + inv[0, 1] * xy[..., 1] + inv[0, 2]  # in grid's columns and rows
        r = inv[1, 0] * xy[..., 0] + inv[1, 1] * xy[..., 1] + inv[1, 2]
        c0, c1 = np.ceil(c.min(1) - 1e-6).astype(np.int64), np.floor(c.max(1) + 1e-6).astype(np.int64)
        r0, r1 = np.ceil(r.min(1) - 1e-6).astype(np.int64), np.floor(r.max(1) + 1e-6).astype(np.int64)
        k = np.arange(span)
        cc, rr = c0[:, None] + k, r0[:, None] + k  # (n, span) each, valid up to c1 and r1
        ok = (rr <= r1[:, None])[:, :, None] & (cc <= c1[:, None])[:, None, :]
        keys = pack(np.broadcast_to(rr[:, :, None], ok.shape)[ok], np.broadcast_to(cc[:, None, :], ok.shape)[ok])
        cand.append(np.unique(keys))
    return unique(np.concatenate(cand)) if cand else np.zeros(0, np.int64)  # sorted: by row, then column


def _grid_or_none(sdata, table: str, cs: str) -> BinGrid | None:
    try:
        return table_grid(sdata, table, cs)
    except (KeyError, ValueError):  # a table that annotates nothing, or lives in another coordinate system
        return None


def _image_grid(slide: Slide, bin_size: float, name: str) -> Target:
    """An H&E-only slide: a grid aligned with the image, over the tissue found on it."""
    side = bin_size / slide.um_per_px  # bin side in coordinate-system pixels
    if bin_size < slide.um_per_px:
        raise ValueError(f"bin_size={bin_size:g} um is smaller than a pixel of the image ({slide.um_per_px:g} um).")
    low = slide.working_image(max(slide.um_per_px, min(bin_size, 16.0)))
    mask = tissue_mask(low.load())
    if not mask.any():
        raise ValueError("No tissue was found on the image; pass shapes=... to say where to predict.")
    grid = BinGrid(np.array([[side, 0, side / 2], [0, side, side / 2], [0, 0, 1]]), bin_size, slide.um_per_px)
    n_rows, n_cols = int(np.ceil(mask.shape[0] * low.f / side)), int(np.ceil(mask.shape[1] * low.f / side))
    rr, cc = np.divmod(np.arange(n_rows * n_cols), n_cols)
    xy = grid.centres(rr, cc) / low.f
    iy = np.clip(xy[:, 1].astype(int), 0, mask.shape[0] - 1)
    ix = np.clip(xy[:, 0].astype(int), 0, mask.shape[1] - 1)
    keep = mask[iy, ix]
    rr, cc = rr[keep], cc[keep]
    index = pd.Index(barcodes(bin_size, rr, cc))
    obs = pd.DataFrame({ARRAY_ROW: rr.astype(np.int32), ARRAY_COL: cc.astype(np.int32)}, index=index)
    centres = grid.centres(rr, cc)
    spots = Spots.squares(centres, side / 2)
    return Target(name, spots, obs, centres, grid, None)


def _shapes_element(sdata, shapes: str) -> str:
    """The shapes element named ``shapes``, or the one the table of that name annotates.

    Readers name a run's elements ``{dataset_id}_cell_segmentations`` (``_cell_segmentations``
    for a folder without a file prefix) but its table ``cell_segmentations``: either name works.
    """
    if shapes in sdata.shapes:
        return shapes
    if shapes in sdata.tables:
        region = sdata.tables[shapes].uns.get("spatialdata_attrs", {}).get("region")
        region = [region] if isinstance(region, str) else list(region or [])
        if len(region) == 1 and region[0] in sdata.shapes:
            logger.info("shapes=%r: the shapes element %r, which the table %r annotates", shapes, region[0], shapes)
            return region[0]
    raise KeyError(f"No shapes element {shapes!r} in the SpatialData object (shapes: {sorted(sdata.shapes)}).")


def _shapes_target(slide: Slide, shapes: str) -> Target:
    """Every shape of the element; in the order of the table that annotates it, if there is one.

    The prediction is named after ``shapes`` as given (what :func:`pixnet.tl.evaluate` is given too).
    """
    sdata, name = slide.sdata, shapes
    shapes = _shapes_element(sdata, shapes)
    gdf = sdata.shapes[shapes]
    geometry = deepcopy(gdf)  # the prediction gets its own copy of the shapes, transformations included
    source = _table_of(sdata, shapes)
    if source is not None:
        ts = table_spots(sdata, source, slide.cs)
        obs = pd.DataFrame(index=ts.table.obs_names.copy())
        instance = ts.table.obs[get_table_keys(ts.table)[2]].to_numpy()
        return Target(name, ts.spots, obs, ts.spots.centres, None, source, geometry, instance)
    what = f"Shapes element {shapes!r}"
    spots = shapes_to_spots(gdf, element_to_cs(gdf, slide.cs, what), what=what)
    obs = pd.DataFrame(index=pd.Index(gdf.index.astype(str)))
    return Target(name, spots, obs, spots.centres, None, None, geometry, gdf.index.to_numpy())


def _table_of(sdata, element: str) -> str | None:
    for name, table in sdata.tables.items():
        region = table.uns.get("spatialdata_attrs", {}).get("region")
        if region == element or (isinstance(region, list) and region == [element]):
            return str(name)  # spatialdata-io keys some tables with an enum, which anndata cannot write in uns
    return None
