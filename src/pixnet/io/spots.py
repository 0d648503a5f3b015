"""Spot-level data that is not a 10x folder: an H&E image, a count matrix and spot centres.

Legacy Spatial Transcriptomics (100 um spots on a 200 um grid), STNet and HER2ST layouts,
iStar-style folders and any other spots x genes matrix with spot centres in image pixels
become the same SpatialData as the Visium readers give, so fit, predict and evaluate work on it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import shapely
from geopandas import GeoDataFrame
from scipy import sparse
from scipy.spatial import cKDTree
from spatialdata import SpatialData
from spatialdata.models import ShapesModel, TableModel
from spatialdata.transformations import Identity

from .._keys import INSTANCE_KEY, REGION_KEY, SPOTS_SHAPES, SPOTS_TABLE, UNS_KEY
from ._files import delimiter, first_line
from ._image import read_image

logger = logging.getLogger(__name__)


def spots(
    *,
    image: str | Path,
    counts: str | Path | pd.DataFrame | ad.AnnData,
    positions: str | Path | pd.DataFrame,
    spot_diameter_um: float,
    um_per_px: float | None = None,
    pitch_um: float | None = None,
    x: str = "x",
    y: str = "y",
    sample_id: str | None = None,
) -> SpatialData:
    """Read spot-level spatial transcriptomics from an image, a count matrix and spot centres.

    Parameters
    ----------
    image
        The full-resolution H&E (TIFF, JPEG, PNG); spot centres are in its pixels.
    counts
        Raw counts, spots x genes: a TSV/CSV file (optionally gzipped; first column the spot id,
        header the genes), an ``.h5ad`` file, a DataFrame or an AnnData. A genes x spots matrix
        whose columns are the spot ids is transposed.
    positions
        Spot centres: a TSV/CSV file or DataFrame indexed by spot id (first column) with the
        columns ``x`` and ``y`` (image pixels, ``x`` along the width).
    spot_diameter_um
        The spots' diameter in micrometres (Visium 55, legacy ST 100).
    um_per_px, pitch_um
        The image's micrometres per pixel, or the centre-to-centre distance of neighbouring spots
        (legacy ST 200 um, Visium 100 um) from which it is derived.
    x, y
        The position columns.
    sample_id
        Prefix of the element names (default: the image file's stem).

    Returns
    -------
    A SpatialData with the image ``{sample_id}_image`` (lazy, multiscale), circles ``spots``
    (centres and radius in image pixels) and the table ``table`` (raw counts, ``obsm["spatial"]``
    the centres), all in the coordinate system ``"global"``; ``sdata.attrs["pixnet"]`` records
    the image, micrometres per pixel, spot diameter and the table, so :func:`pixnet.tl.fit`
    finds them.

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    KeyError
        If the positions lack the columns ``x`` and ``y``.
    ValueError
        If the spots and the matrix share no id, the scale is not given, a value is not positive,
        or most spots share their position with another (so the pitch gives no scale).

    """
    image = Path(image).expanduser()
    if not spot_diameter_um or spot_diameter_um <= 0:
        raise ValueError(f"spot_diameter_um must be positive (Visium 55, legacy ST 100); got {spot_diameter_um!r}.")
    table = _counts(counts)
    pos = _positions(positions, x, y)
    table, pos = _join(table, pos)
    xy = pos[[x, y]].to_numpy(np.float64)
    um_per_px = _scale(xy, um_per_px=um_per_px, pitch_um=pitch_um)
    sid = sample_id or image.stem
    return assemble(
        image=image, table=table, xy=xy, radius_px=spot_diameter_um / 2 / um_per_px, um_per_px=um_per_px,
        spot_diameter_um=spot_diameter_um, sample_id=sid, source=str(image.parent),
    )  # fmt: skip


def assemble(
    *, image, table: ad.AnnData, xy: np.ndarray, radius_px: float, um_per_px: float, spot_diameter_um: float,
    sample_id: str, source: str, shape: str = "circle",
) -> SpatialData:  # fmt: skip
    """The SpatialData of a spot-level slide: image, spots, table annotating them, and pixnet's attrs.

    ``image`` is a path or an image element already parsed; ``xy`` the spot centres in its pixels.
    ``shape="circle"`` makes circles of radius ``radius_px``; ``shape="square"`` axis-aligned
    square polygons of half side ``radius_px`` (binned data such as HEST's Visium HD samples), in
    which case ``spot_diameter_um`` is the side.
    """
    if shape not in ("circle", "square"):
        raise ValueError(f"shape must be 'circle' or 'square', got {shape!r}.")
    if len(xy) != table.n_obs:
        raise ValueError(f"{len(xy)} spot centres for {table.n_obs} rows of the count matrix; they must match.")
    if not np.isfinite(xy).all():
        raise ValueError("Some spot centres are NaN or infinite; drop those spots or fix their positions.")
    transformations = {"global": Identity()}
    element = read_image(Path(image), transformations=transformations) if isinstance(image, str | Path) else image
    n = table.n_obs
    if shape == "circle":
        spots = ShapesModel.parse(xy, geometry=0, radius=np.full(n, float(radius_px)), transformations=transformations)
    else:
        r = float(radius_px)
        boxes = shapely.box(xy[:, 0] - r, xy[:, 1] - r, xy[:, 0] + r, xy[:, 1] + r)
        spots = ShapesModel.parse(GeoDataFrame(geometry=boxes), transformations=transformations)
    table = table.copy()
    table.obs[INSTANCE_KEY] = np.arange(n, dtype=np.int64)
    table.obs[REGION_KEY] = pd.Categorical([SPOTS_SHAPES] * n, categories=[SPOTS_SHAPES])
    table.obsm["spatial"] = xy
    table.uns[UNS_KEY] = {"um_per_px": um_per_px, "spot_diameter_um": float(spot_diameter_um), "source": source}
    table = TableModel.parse(table, region=SPOTS_SHAPES, region_key=REGION_KEY, instance_key=INSTANCE_KEY)
    name = f"{sample_id}_image"
    sdata = SpatialData(images={name: element}, shapes={SPOTS_SHAPES: spots}, tables={SPOTS_TABLE: table})
    sdata.attrs[UNS_KEY] = {
        "image": name, "um_per_px": um_per_px, "spot_diameter_um": float(spot_diameter_um),
        "table": SPOTS_TABLE, "shapes": SPOTS_SHAPES, "coordinate_system": "global", "source": source,
    }  # fmt: skip
    logger.info(
        "%s: %d %ss of %g um, %d genes, %.3f um/px", sample_id, n, shape, spot_diameter_um, table.n_vars, um_per_px
    )
    return sdata


def _read_delimited(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found.")
    try:
        sep = delimiter(first_line(path))  # from its first line, not its name: a .txt may hold commas
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} cannot be read as a table: {err}") from err
    try:
        return pd.read_csv(path, sep=sep, index_col=0)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as err:
        what = {",": "CSV", "\t": "TSV"}.get(sep, "space-separated")
        raise ValueError(f"{path} cannot be read as a {what} table: {err}") from err


def _counts(counts) -> ad.AnnData:
    """Spots x genes raw counts as AnnData with spot ids as ``obs_names`` (float32 CSR)."""
    if isinstance(counts, str | Path):
        path = Path(counts).expanduser()
        if path.suffix == ".h5ad":
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found.")
            counts = ad.read_h5ad(path)
        else:
            counts = _read_delimited(path)
    if isinstance(counts, pd.DataFrame):
        numeric = counts.select_dtypes("number")
        if numeric.shape[1] < counts.shape[1]:
            dropped = [c for c in counts.columns if c not in numeric.columns][:5]
            n_dropped = counts.shape[1] - numeric.shape[1]
            logger.warning("ignoring %d non-numeric columns of the count matrix (%s)", n_dropped, dropped)
        counts = ad.AnnData(
            sparse.csr_matrix(numeric.to_numpy(np.float32)),
            obs=pd.DataFrame(index=numeric.index.astype(str)),
            var=pd.DataFrame(index=numeric.columns.astype(str)),
        )
    if not isinstance(counts, ad.AnnData):
        raise TypeError(f"counts must be a file path, a DataFrame or an AnnData; got {type(counts).__name__}.")
    counts = counts.copy()
    if not sparse.issparse(counts.X):  # every reader gives CSR counts, as spatialdata-io's do
        counts.X = sparse.csr_matrix(np.asarray(counts.X, np.float32))
    counts.obs_names = counts.obs_names.astype(str)
    counts.var_names = counts.var_names.astype(str)
    if not counts.var_names.is_unique:
        logger.warning("%d duplicated gene names made unique", int(counts.var_names.duplicated().sum()))
        counts.var_names_make_unique()
    return counts


def _positions(positions, x: str, y: str) -> pd.DataFrame:
    if isinstance(positions, str | Path):
        positions = _read_delimited(Path(positions).expanduser())
    if not isinstance(positions, pd.DataFrame):
        raise TypeError(f"positions must be a file path or a DataFrame; got {type(positions).__name__}.")
    missing = [c for c in (x, y) if c not in positions.columns]
    if missing:
        raise KeyError(
            f"The positions lack the columns {missing} (they have {list(positions.columns)}); "
            "pass x=... and y=... naming the spot centre's image-pixel columns."
        )
    positions = positions.copy()
    positions.index = positions.index.astype(str)
    return positions


def _join(table: ad.AnnData, pos: pd.DataFrame) -> tuple[ad.AnnData, pd.DataFrame]:
    """The spots present in both, in the matrix's order; a transposed matrix is turned round."""
    common = table.obs_names.intersection(pos.index)
    if len(common) == 0 and len(table.var_names.intersection(pos.index)):
        logger.info("the count matrix is genes x spots; transposing it")
        table = table.T.copy()
        common = table.obs_names.intersection(pos.index)
    if not table.obs_names.is_unique:
        twice = table.obs_names[table.obs_names.duplicated()].unique()
        raise ValueError(
            f"The count matrix lists {len(twice)} spot id(s) more than once ({list(twice[:5])}); spot ids must be "
            "unique: sum or drop the repeated rows first."
        )
    if len(common) == 0:
        raise ValueError(
            f"No spot id is in both the count matrix ({list(table.obs_names[:3])}, ...) and the positions "
            f"({list(pos.index[:3])}, ...); both must be indexed by the same spot ids."
        )
    dropped = table.n_obs - len(common), len(pos) - len(common)
    if any(dropped):
        logger.info("%d spots of the matrix have no position and %d positions no counts; both left out", *dropped)
    keep = table.obs_names[table.obs_names.isin(common)]
    if not pos.index.is_unique:
        raise ValueError("The positions list a spot id more than once; spot ids must be unique.")
    return table[keep].copy(), pos.loc[keep]


def _scale(xy: np.ndarray, *, um_per_px: float | None, pitch_um: float | None) -> float:
    """Micrometres per pixel: given, or the spot pitch over the median nearest-neighbour distance."""
    if um_per_px is not None:
        if not um_per_px > 0:
            raise ValueError(f"um_per_px must be positive, got {um_per_px!r}.")
        return float(um_per_px)
    if pitch_um is None:
        raise ValueError(
            "The image's scale is unknown: pass um_per_px=... or pitch_um=... (the distance between "
            "neighbouring spot centres: 200 for legacy ST, 100 for Visium)."
        )
    if len(xy) < 3:
        raise ValueError("At least three spots are needed to derive the pixel size from the pitch; pass um_per_px=...")
    dist, _ = cKDTree(xy).query(xy, k=2)
    nearest = float(np.median(dist[:, 1]))
    if not nearest > 0:
        raise ValueError(
            "Most spots have another at the same place (two spots share a position), so the pitch cannot "
            "give the pixel size; check the position columns or pass um_per_px=..."
        )
    return float(pitch_um / nearest)
