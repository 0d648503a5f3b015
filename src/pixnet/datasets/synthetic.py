"""A synthetic slide in the real Space Ranger Visium HD layout, with its ground truth."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from pathlib import Path

import h5py
import numpy as np
import tifffile
from PIL import Image
from skimage.transform import resize
from tqdm.auto import tqdm

from .._cache import default_data_dir
from .._keys import barcodes, bin_table_name
from ._counts import Grid, block_weights, coarsen, sample_counts
from ._layout import make_layout
from ._programme import make_programme
from ._render import Stain, render_tile
from ._segmentation import _per_cell, _write_segmentation
from ._spaceranger import MatrixWriter, PositionsWriter, scalefactors, write_feature_slice, write_json

logger = logging.getLogger(__name__)

TRUTH_FILE = "pixnet_truth.h5"
MANIFEST_FILE = "pixnet_demo.json"
BIN_SIZES = (2, 8, 16)
FULL_SIZE_UM = 6700.0  # 3350 x 3350 bins of 2 um: the array of a real Visium HD slide
_TILE = 1024


def visium_hd_demo(
    path: str | Path | None = None,
    *,
    size_um: float = 1000.0,
    full_size: bool = False,
    seed: int = 0,
    programme_seed: int = 0,
    n_genes: int = 400,
    rotation_deg: float = 0.0,
    prefix: str = "",
    stain_variation: float = 0.0,
    um_per_px: float = 0.2737,
    segmentation: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic Visium HD run as a Space Ranger ``outs/`` folder and return its path.

    The slide is drawn from a hidden expression programme: tissue regions (tumour, stroma,
    immune aggregates, fat) made of cell types that each have their own colour, shape and
    genes. Counts are Poisson draws around the expected counts of every 2 um bin; the 8 and
    16 um bins are exact sums of their 2 um bins. The folder reads with
    :func:`pixnet.io.visium_hd` and with :func:`spatialdata_io.visium_hd`.

    Parameters
    ----------
    path
        Folder to write (it becomes the ``outs/`` folder). By default a folder named after the
        parameters under :func:`default_data_dir`, reused when it already holds this slide.
    size_um
        Side of the square capture area in micrometres. The default (1 mm) fits and predicts
        on a CPU in minutes.
    full_size
        Make a full 6.7 mm slide (3350 x 3350 = 11.2 million 2 um bins); overrides ``size_um``.
    seed
        Seed of the layout: tissue outline, regions, cells, counts.
    programme_seed
        Seed of the biology: genes and what each cell type looks like and expresses. Two
        slides with the same ``programme_seed`` and different ``seed`` share their biology.
    n_genes
        Number of genes in the panel.
    rotation_deg
        Rotation of the bin array relative to the image, as on a real slide (a few degrees).
    prefix
        File prefix real runs carry, the dataset id (``"Visium_HD_Human_Breast"``): the files
        are then ``{prefix}_feature_slice.h5`` and ``{prefix}_tissue_image.tif``.
    stain_variation
        Perturbation of the H&E stain colours (0 = reference stain, 1 = a strong batch effect).
    um_per_px
        Micrometres per pixel of the full-resolution image.
    segmentation
        Also write Space Ranger's cell segmentation (``segmented_outputs/``: cell polygons and
        the counts of the 2 um bins assigned to each cell).
    overwrite
        Replace an existing folder at ``path``.

    Returns
    -------
    The ``outs/`` folder. The ground truth (expected counts of every 2 um bin, as the UMIs
    each cell type and region puts there times their gene profiles) is in ``pixnet_truth.h5``
    inside it: read it with :func:`expected_counts`.

    """
    if full_size:
        size_um = FULL_SIZE_UM
    if size_um < 64:
        raise ValueError(f"size_um={size_um} is too small for a slide; use at least 64 (micrometres).")
    params = {
        "size_um": float(size_um), "seed": int(seed), "programme_seed": int(programme_seed), "n_genes": int(n_genes),
        "rotation_deg": float(rotation_deg), "prefix": prefix, "stain_variation": float(stain_variation),
        "um_per_px": float(um_per_px), "segmentation": bool(segmentation), "version": 2,
    }  # fmt: skip
    if path is None:
        key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
        path = default_data_dir() / f"visium_hd_demo_{key}"
    path = Path(path)
    manifest = path / MANIFEST_FILE
    if path.exists():
        if manifest.exists() and json.loads(manifest.read_text()) == params and not overwrite:
            return path
        if not overwrite:
            raise FileExistsError(f"{path} exists and holds another slide; pass overwrite=True or another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()  # as mkdir makes folders (the user's umask): it becomes the slide's (mkdtemp's are 0700)
    try:
        _write_slide(tmp, params)
        write_json(tmp / MANIFEST_FILE, params)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)  # atomic: a half-written slide is never found at `path`
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_slide(out: Path, p: dict) -> None:
    mpp, size = p["um_per_px"], p["size_um"]
    programme = make_programme(p["programme_seed"], p["n_genes"])
    angle = np.deg2rad(p["rotation_deg"])
    span = size * (abs(np.cos(angle)) + abs(np.sin(angle)))
    extent = span + 2 * 40.0
    centre = extent / 2
    n = int(size // 2)
    ex, ey = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    origin = centre - (ex + ey) * n  # n bins of 2 um = 2n um on each axis, centred
    grid = Grid(n=n, origin_um=(float(origin[0]), float(origin[1])), angle=float(angle), um_per_px=mpp)
    layout = make_layout(programme, extent_um=extent, capture=(centre - n, centre + n), seed=p["seed"])
    stain = Stain.draw(p["stain_variation"], p["seed"])
    logger.info("synthetic slide: %d cells, %d x %d bins of 2 um", len(layout.cells["x"]), n, n)

    hires_f, lowres_scale = _write_images(out, layout, programme, stain, extent, mpp, p)
    shape = int(np.ceil(extent / mpp))
    sf = {"hires": 1.0 / hires_f, "lowres": lowres_scale}
    (out / "spatial").mkdir(exist_ok=True)
    write_json(out / "spatial" / "scalefactors_json.json", scalefactors(bin_size=2, um_per_px=mpp, **sf))
    write_feature_slice(out / f"{_prefix(p)}feature_slice.h5", grid.affine(2))
    _write_bins(out, layout, programme, grid, p, sf)
    logger.info("wrote %s (%d x %d px image)", out, shape, shape)


def _write_images(out: Path, layout, programme, stain, extent: float, mpp: float, p: dict) -> tuple[int, float]:
    """Full-resolution tiled TIFF, plus the hires and lowres PNGs Space Ranger writes."""
    shape = int(np.ceil(extent / mpp))
    hires_f = max(2, int(2 ** np.ceil(np.log2(shape / 6000))))
    mosaic = np.zeros((-(-shape // hires_f), -(-shape // hires_f), 3), np.float32)
    n_tiles = -(-shape // _TILE)

    def tiles():
        for ty in tqdm(range(n_tiles), desc="rendering H&E", leave=False, disable=None):
            for tx in range(n_tiles):
                y0, x0 = ty * _TILE, tx * _TILE
                h, w = min(_TILE, shape - y0), min(_TILE, shape - x0)
                tile = render_tile(layout, programme, stain, y0=y0, x0=x0, h=h, w=w, um_per_px=mpp, seed=p["seed"])
                small = _block_mean(tile, hires_f)
                mosaic[
                    y0 // hires_f : y0 // hires_f + small.shape[0], x0 // hires_f : x0 // hires_f + small.shape[1]
                ] = small
                padded = np.full((_TILE, _TILE, 3), 255, np.uint8)
                padded[:h, :w] = tile
                yield padded

    if p["prefix"]:
        image_path = out / f"{_prefix(p)}tissue_image.tif"
    else:
        (out / "microscope_image").mkdir(parents=True, exist_ok=True)
        image_path = out / "microscope_image" / "tissue_image.tif"
    tifffile.imwrite(
        image_path, tiles(), shape=(shape, shape, 3), dtype=np.uint8, tile=(_TILE, _TILE), photometric="rgb",
        bigtiff=shape * shape * 3 > 2**31, resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER",
    )  # fmt: skip
    spatial = out / "spatial"
    spatial.mkdir(exist_ok=True)
    hires = np.clip(mosaic, 0, 255).astype(np.uint8)
    Image.fromarray(hires).save(spatial / "tissue_hires_image.png")
    low_side = min(600, hires.shape[0])
    lowres = resize(hires, (low_side, low_side), anti_aliasing=True, preserve_range=True).astype(np.uint8)
    Image.fromarray(lowres).save(spatial / "tissue_lowres_image.png")
    return hires_f, low_side / shape


def _prefix(p: dict) -> str:
    return f"{p['prefix']}_" if p["prefix"] else ""


def _block_mean(tile: np.ndarray, f: int) -> np.ndarray:
    h, w = tile.shape[0] // f * f, tile.shape[1] // f * f
    if h == 0 or w == 0:
        return np.zeros((max(1, tile.shape[0] // f), max(1, tile.shape[1] // f), 3), np.float32)
    return tile[:h, :w].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))


def _write_bins(out: Path, layout, programme, grid: Grid, p: dict, sf: dict) -> None:
    genes = list(programme.genes)
    gene_ids = [f"ENSG{10_000_000 + i:011d}" for i in range(len(genes))]
    rng = np.random.default_rng(np.random.SeedSequence([p["seed"], p["programme_seed"], 53]))
    n = grid.n
    writers = {}
    for b in BIN_SIZES:
        d = out / "binned_outputs" / bin_table_name(b)
        (d / "spatial").mkdir(parents=True, exist_ok=True)
        write_json(d / "spatial" / "scalefactors_json.json", scalefactors(bin_size=b, um_per_px=grid.um_per_px, **sf))
        writers[b] = (
            MatrixWriter(d / "filtered_feature_bc_matrix.h5", genes, gene_ids),
            PositionsWriter(d / "spatial" / "tissue_positions.parquet"),
        )
    truth_w, truth_rc, truth_cell, cell_parts = [], [], [], []
    block = 64  # 2 um rows per block: a multiple of 8 so that 8 and 16 um bins never straddle blocks
    for r0 in tqdm(range(0, n, block), desc="sampling counts", leave=False, disable=None):
        r1 = min(n, r0 + block)
        w, tissue, cell_of_bin = block_weights(layout, programme, grid, r0, r1)
        w[~tissue] = 0.0  # the section's outline: nothing is captured off the tissue
        rows, cols = np.divmod(np.arange((r1 - r0) * n), n)
        rows += r0
        inside = tissue.ravel()
        counts = sample_counts(w.reshape(-1, w.shape[-1])[inside], programme.profiles, rng)
        truth_w.append(w.reshape(-1, w.shape[-1])[inside].astype(np.float32))
        truth_rc.append(np.stack([rows[inside], cols[inside]], axis=1).astype(np.int32))
        truth_cell.append(cell_of_bin.ravel()[inside].astype(np.int32))
        if p["segmentation"]:
            cell_parts.append(_per_cell(counts, truth_cell[-1], len(layout.cells["x"])))
        for b in BIN_SIZES:
            f = b // 2
            nb = n // f
            mw, pw = writers[b]
            if f == 1:
                m, cr, cc = counts, rows[inside], cols[inside]
            else:
                m, cr, cc = coarsen(counts, rows[inside], cols[inside], f, nb)
                ok = cr < nb
                m, cr, cc = m[ok], cr[ok], cc[ok]
            mw.append(m, barcodes(b, cr, cc))
            ar, ac = np.divmod(np.arange(r0 // f * nb, min(r1 // f, nb) * nb), nb)
            if len(ar):
                in_t = np.zeros(len(ar), bool)
                in_t[np.searchsorted(ar * nb + ac, cr * nb + cc)] = True
                px_x, px_y = grid.centres_px(b, ar, ac)
                pw.append(barcodes(b, ar, ac), in_t, ar, ac, px_y, px_x)
    for mw, pw in writers.values():
        mw.close()
        pw.close()
    cell_of_bin = np.concatenate(truth_cell)
    if p["segmentation"]:
        _write_segmentation(out, layout, grid, sum(cell_parts), genes, gene_ids, sf)
    with h5py.File(out / TRUTH_FILE, "w") as f:
        f["weights"] = np.concatenate(truth_w)
        f["array_row_col"] = np.concatenate(truth_rc)
        f["cell_of_bin"] = cell_of_bin
        f["profiles"] = programme.profiles
        f["components"] = np.array(programme.components, dtype="S")
        f["genes"] = np.array(genes, dtype="S")
        f.attrs["description"] = (
            "Expected counts of the in-tissue 2 um bins: weights (bins x components, UMIs) @ profiles "
            "(components x genes). Bins are in the order of the 2 um filtered matrix."
        )
