"""Read a Space Ranger Visium HD ``outs/`` folder into SpatialData, lean enough for whole slides."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from geopandas import GeoDataFrame
from spatialdata import SpatialData
from spatialdata.models import Labels2DModel, ShapesModel, TableModel
from spatialdata.transformations import Affine, BaseTransformation, Identity, Scale
from spatialdata.transformations import Sequence as TSequence

from .._keys import (
    ARRAY_COL,
    ARRAY_ROW,
    INSTANCE_KEY,
    LABELS_INSTANCE_KEY,
    ON_IMAGE,
    REGION_KEY,
    UNS_KEY,
    bin_table_name,
    reader_geometry,
)
from ..geometry import BinGrid
from . import _files
from ._image import read_image
from ._matrix import read_10x
from ._segmentation import read_segmentations

logger = logging.getLogger(__name__)


def visium_hd(
    path: str | Path,
    *,
    bin_sizes: Sequence[int] | None = None,
    dataset_id: str | None = None,
    fullres_image_file: str | Path | None = None,
    bins_as: Literal["auto", "squares", "labels"] = "auto",
    load_segmentations: bool = True,
) -> SpatialData:
    """Read a 10x Genomics Visium HD run (Space Ranger ``outs/``) as a :class:`~spatialdata.SpatialData`.

    Elements are named as :func:`spatialdata_io.visium_hd` names them, with ``{id}`` the
    dataset id (the runs' file prefix, often empty):

    - ``{id}_full_image``: the full-resolution H&E, multiscale and lazy (read tile by tile);
      ``{id}_hires_image`` and ``{id}_lowres_image``: Space Ranger's downscaled PNGs.
    - tables ``square_002um``, ``square_008um``, ``square_016um`` (one per bin size): counts
      of the in-tissue bins, ``obs_names`` = barcodes, ``obs`` with ``array_row``,
      ``array_col``, ``in_tissue``, ``location_id``, ``region``; ``obsm["spatial"]`` = bin
      centres in full-resolution pixels; ``uns["pixnet"]`` with the bin size, micrometres per
      pixel and the exact grid (an affine map of the array onto the image).
    - the bins' geometry: ``{id}_square_008um`` shapes (exact squares, the array's rotation
      included) for bins of 8 um and more, and ``{id}_square_002um_labels`` labels for 2 um
      bins, one pixel per bin with an affine transformation onto the image: 11 million square
      polygons would cost gigabytes and minutes, the labels cost 45 MB.
    - if Space Ranger segmented cells: ``{id}_cell_segmentations`` shapes and the
      ``cell_segmentations`` table, read by spatialdata-io.

    All elements are in the coordinate system ``{id}`` (``"global"`` when the id is empty),
    in full-resolution pixels; ``sdata.attrs["pixnet"]`` records the image and micrometres per pixel.

    Every form Space Ranger versions and partial copies produce is read: bin positions as
    ``tissue_positions.parquet``, ``tissue_positions.csv`` (header row) or
    ``tissue_positions_list.csv`` (none), gzipped or not; counts as
    ``filtered_feature_bc_matrix.h5``, the ``filtered_feature_bc_matrix/`` folder (``matrix.mtx``,
    ``barcodes.tsv``, ``features.tsv`` or ``genes.tsv``, gzipped or not) or, failing those, the raw
    matrix restricted to the bins in tissue; file names with a dataset-id prefix; images told by
    content (TIFF, BigTIFF, OME-TIFF, SVS, PNG, JPEG), channels first or last. Optional parts that
    are missing, empty or unreadable (``segmented_outputs/``, the downscaled PNGs) are skipped with
    a warning. Bins whose centre lies beyond the image are marked False in
    ``obs["pixnet_on_image"]``, with a warning that names the likely cause (a downscaled image).

    Parameters
    ----------
    path
        The ``outs/`` folder (or the run folder that contains it).
    bin_sizes
        Bin sizes (um) to load; each must be in ``binned_outputs/``. By default every size the run
        has (Space Ranger writes 2, 8 and 16); then a bin folder copied without its counts or
        positions is skipped with a warning.
    dataset_id
        File prefix of the run, as in ``{dataset_id}_feature_slice.h5``; inferred by default.
    fullres_image_file
        The full-resolution microscope image, if it is not in ``outs/microscope_image/`` or
        named ``{prefix}tissue_image.*`` (Space Ranger does not copy it into ``outs/``).
    bins_as
        ``"squares"`` (shapes), ``"labels"`` or ``"auto"`` (labels below 8 um, squares above).
    load_segmentations
        Also read Space Ranger's cell segmentation when the run has one.

    """
    outs = _files.outs_folder(path)
    folders, asked = _bin_folders(outs, bin_sizes), bin_sizes is not None
    _, dataset_id = _files.feature_slice(outs, dataset_id)
    cs = dataset_id or "global"
    top = _files.scalefactors(next(iter(folders.values())), outs)
    um_per_px = float(top["microns_per_pixel"])
    spatial = {
        cs: Identity(),
        f"{dataset_id}_downscaled_hires": Scale([top.get("tissue_hires_scalef", 1.0)] * 2, axes=("x", "y")),
        f"{dataset_id}_downscaled_lowres": Scale([top.get("tissue_lowres_scalef", 1.0)] * 2, axes=("x", "y")),
    }
    images = _read_images(outs, dataset_id, cs, fullres_image_file, top)
    tables, shapes, labels = {}, {}, {}
    for b, folder in folders.items():
        try:
            table, element, kind = _read_bins(folder, b, dataset_id, um_per_px, spatial, bins_as, outs)
        except FileNotFoundError as err:  # a bin folder copied in part: needed only if asked for
            if asked or b == max(folders) and not tables:
                raise
            warnings.warn(f"Skipped the {b} um bins (pass bin_sizes=... to choose): {err}", stacklevel=2)
            continue
        tables[bin_table_name(b)] = table
        (shapes if kind == "shapes" else labels)[table.uns["spatialdata_attrs"]["region"]] = element
    seg = read_segmentations(outs, dataset_id, cs) if load_segmentations else None
    if seg is not None:
        shapes.update(seg.shapes)
        tables.update(seg.tables)
    full = f"{dataset_id}_full_image"
    bin_tables = {bin_table_name(b): tables[bin_table_name(b)] for b in folders if bin_table_name(b) in tables}
    _check_image_under_bins(full, images[full], bin_tables, cs, top)
    sdata = SpatialData(images=images, labels=labels, shapes=shapes, tables=tables)
    sdata.attrs[UNS_KEY] = {
        "image": f"{dataset_id}_full_image",
        "coordinate_system": cs,
        "um_per_px": um_per_px,
        "dataset_id": dataset_id,
        "source": str(outs),
        "bin_tables": {str(b): bin_table_name(b) for b in folders if bin_table_name(b) in tables},
    }
    return sdata


def _bin_folders(outs: Path, bin_sizes) -> dict[int, Path]:
    """The bin folders to read: those asked for (each must exist), or by default every one the run has."""
    if bin_sizes is None:
        sizes = _files.available_bin_sizes(outs)
        if not sizes:
            raise FileNotFoundError(
                f"{outs / 'binned_outputs'} holds no bin folders (square_002um, square_008um, square_016um); it "
                f"holds {_files.listing(outs / 'binned_outputs')}. Re-copy binned_outputs/ from the Space Ranger run."
            )
        return {b: _files.bin_folder(outs, b) for b in sizes}
    bin_sizes = [bin_sizes] if np.ndim(bin_sizes) == 0 else list(np.ravel(bin_sizes).tolist())
    if not bin_sizes:
        raise ValueError("bin_sizes is empty; pass at least one bin size, such as (8,) or (2, 8, 16).")
    return {int(b): _files.bin_folder(outs, b) for b in bin_sizes}


def _read_images(outs: Path, dataset_id: str, cs: str, fullres: str | Path | None, sf: dict) -> dict:
    prefix = dataset_id + "_" if dataset_id else ""
    path = Path(fullres).expanduser() if fullres is not None else _files.fullres_image(outs, prefix)
    if path is None:
        raise FileNotFoundError(
            f"No full-resolution H&E image in {outs} (looked for *tissue_image.* and in microscope_image/: "
            f"{_files.listing(outs / 'microscope_image')}). "
            "Space Ranger does not copy it into outs/: pass fullres_image_file='path/to/image.tif'."
        )
    images = {f"{dataset_id}_full_image": read_image(path, transformations={cs: Identity()})}
    for kind, key in (("hires", "tissue_hires_scalef"), ("lowres", "tissue_lowres_scalef")):
        png = outs / "spatial" / f"tissue_{kind}_image.png"
        if png.is_file() and key in sf:
            to_full = Scale([1 / sf[key]] * 2, axes=("x", "y"))
            tr = {f"{dataset_id}_downscaled_{kind}": Identity(), cs: to_full}
            try:
                images[f"{dataset_id}_{kind}_image"] = read_image(png, transformations=tr, multiscale=False)
            except ValueError as err:  # an optional part: the slide still reads
                warnings.warn(f"Skipped {png.name}: {err}", stacklevel=3)
    return images


def _check_image_under_bins(name: str, image, tables: dict, cs: str, sf: dict) -> None:
    """Warn, with the numbers and the fix, when bins lie beyond the image (a downscaled image given as full resolution).

    The bins stay readable (a scale can still be set on the image); ``obs["pixnet_on_image"]`` marks
    them, and fit and predict refuse when most lie beyond.
    """
    from ..data.coverage import coverage, image_extent

    extent = image_extent(image, cs)
    keys = {f"tissue_{k}_image.png": f"tissue_{k}_scalef" for k in ("hires", "lowres")}
    scales = {png: 1 / sf[key] for png, key in keys.items() if sf.get(key)}
    for table_name, table in tables.items():
        what = f"bins of {table_name}"
        cov = coverage(table.obsm["spatial"], extent, what=what, image=name, cs=cs, scales=scales)
        if cov.message is not None:
            table.obs[ON_IMAGE] = cov.on
            warnings.warn(f"{cov.message} They are marked False in obs[{ON_IMAGE!r}].", stacklevel=3)


def _why_missing(codes, known: pa.ChunkedArray) -> str:
    """Why the matrix's barcodes miss the positions': a '-1' suffix added or removed by hand, else another run."""
    sample = [str(c) for c in codes[:100]]
    added, removed = [c + "-1" for c in sample], [c.removesuffix("-1") for c in sample]
    for fixed, says in ((added, "lack the positions' '-1' suffix"), (removed, "carry a '-1' the positions lack")):
        if fixed != sample and pc.all(pc.is_in(pa.array(fixed, pa.string()), known)).as_py():
            return f"its barcodes {says} (e.g. {sample[0]!r}): a file edited? Re-copy the bin folder."
    return "the two files come from different runs. Re-copy the bin folder from one Space Ranger output."


def _read_bins(folder: Path, b: int, dataset_id: str, um_per_px: float, spatial: dict, bins_as: str, outs: Path):
    sf = _files.scalefactors(folder, outs)
    if "bin_size_um" in sf and not np.isclose(sf["bin_size_um"], b):
        raise ValueError(f"{folder}/spatial/scalefactors_json.json says bin_size_um={sf['bin_size_um']}, not {b}.")
    counts, raw = _files.counts_file(folder)
    positions_path = _files.positions_file(folder)
    adata = read_10x(counts)
    positions = _files.read_positions(folder)
    idx = pc.index_in(pa.array(adata.obs_names.to_numpy(), pa.string()), positions.column("barcode"))
    if idx.null_count:
        raise ValueError(
            f"{idx.null_count} barcodes of {counts} are missing from {positions_path}: "
            + _why_missing(adata.obs_names, positions.column("barcode"))
        )
    idx = idx.to_numpy()
    col = {c: positions.column(c).to_numpy()[idx] for c in _files.POSITION_COLUMNS[1:]}
    del positions
    if raw:  # the raw matrix lists every bin of the array; keep those Space Ranger puts under tissue
        keep = col["in_tissue"].astype(bool)
        warnings.warn(
            f"{folder} has no filtered matrix; read {counts.name} and kept the {int(keep.sum())} of "
            f"{len(keep)} bins marked in tissue in {positions_path.name}.",
            stacklevel=3,
        )
        adata = adata[keep].copy()
        col = {c: v[keep] for c, v in col.items()}
    rows, cols = col[ARRAY_ROW].astype(np.int32), col[ARRAY_COL].astype(np.int32)
    xy = np.stack([col["pxl_col_in_fullres"], col["pxl_row_in_fullres"]], axis=1).astype(np.float64)
    grid = BinGrid.fit(rows, cols, xy[:, 0], xy[:, 1], bin_size_um=b, um_per_px=um_per_px)
    err = np.abs(grid.centres(rows[:1000], cols[:1000]) - xy[:1000]).max() if len(rows) else 0.0
    if err > 0.25 * grid.side_px:
        warnings.warn(
            f"{b} um bins are off a regular grid by up to {err:.1f} px; bin geometry is approximate.", stacklevel=3
        )
    as_labels = bins_as == "labels" or (bins_as == "auto" and b < 8)
    name = reader_geometry(dataset_id, b, labels=as_labels)
    adata.obs = pd.DataFrame(
        {
            "in_tissue": col["in_tissue"].astype(np.int32),
            ARRAY_ROW: rows,
            ARRAY_COL: cols,
            INSTANCE_KEY: np.arange(adata.n_obs, dtype=np.int64),
            REGION_KEY: pd.Categorical([name] * adata.n_obs) if adata.n_obs else pd.Categorical([], categories=[name]),
        },
        index=adata.obs_names,
    )
    adata.obsm["spatial"] = xy
    adata.uns[UNS_KEY] = {
        "bin_size_um": float(b),
        "um_per_px": um_per_px,
        "grid": grid.to_dict(),
        "source": str(folder),
    }
    if as_labels:
        adata.obs[LABELS_INSTANCE_KEY] = adata.obs[INSTANCE_KEY].to_numpy() + 1
        element, key = _labels(grid, rows, cols, spatial), LABELS_INSTANCE_KEY
    else:
        gdf = GeoDataFrame(geometry=grid.polygons(rows, cols), index=adata.obs[INSTANCE_KEY].to_numpy())
        element, key = ShapesModel.parse(gdf, transformations=spatial), INSTANCE_KEY
    table = TableModel.parse(adata, region=name, region_key=REGION_KEY, instance_key=key)
    return table, element, "labels" if as_labels else "shapes"


def _labels(grid: BinGrid, rows, cols, spatial: dict[str, BaseTransformation]):
    """One pixel per bin (value = location_id + 1), placed on the image by the grid's affine."""
    r0, c0 = (int(rows.min()), int(cols.min())) if len(rows) else (0, 0)
    h, w = (int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1) if len(rows) else (1, 1)
    dtype = np.uint32 if len(rows) < 2**32 - 1 else np.uint64
    data = np.zeros((h, w), dtype)
    data[rows - r0, cols - c0] = np.arange(1, len(rows) + 1, dtype=dtype)
    # Label pixel j covers [j, j+1): its centre j + 0.5 is array column c0 + j.
    shift = np.array([[1, 0, c0 - 0.5], [0, 1, r0 - 0.5], [0, 0, 1]])
    to_image = Affine(grid.affine @ shift, input_axes=("x", "y"), output_axes=("x", "y"))
    transformations = {
        name: TSequence([to_image, t]) if not isinstance(t, Identity) else to_image for name, t in spatial.items()
    }
    return Labels2DModel.parse(data, dims=("y", "x"), transformations=transformations, chunks=(2048, 2048))


def read_table_grid(table: ad.AnnData) -> BinGrid:
    """The bin grid recorded by :func:`visium_hd` in a table's ``uns``."""
    try:
        return BinGrid.from_dict(table.uns[UNS_KEY]["grid"])
    except KeyError as err:
        raise KeyError(
            "This table has no bin grid in uns['pixnet']['grid']; read the run with pixnet.io.visium_hd."
        ) from err
