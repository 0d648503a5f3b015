"""A sample of HEST-1k (Jaume et al. 2024): its AnnData, its pyramidal TIFF and its metadata JSON.

HEST-1k stores each sample ``ID`` as ``st/ID.h5ad`` (raw counts, spot centres in pixels of the
whole-slide image in ``obsm["spatial"]``), ``wsis/ID.tif`` (the pyramidal H&E) and
``metadata/ID.json`` (``pixel_size_um_estimated`` / ``pixel_size_um_embedded``,
``spot_diameter``, ``inter_spot_dist``, ``st_technology``, ...). Visium HD samples are stored
binned into square pseudo-spots (128 um in HEST-1k v1.1) while their metadata give the 2 um
bin: the squares' side is taken from the spot grid itself.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import anndata as ad
import numpy as np
from scipy.spatial import cKDTree
from spatialdata import SpatialData

from .spots import _counts, assemble

logger = logging.getLogger(__name__)

#: Metadata keys accepted for each quantity, in order of preference.
PIXEL_SIZE_KEYS = ("pixel_size_um_estimated", "pixel_size_um_embedded", "pixel_size_um", "pixel_size", "mpp")
SPOT_DIAMETER_KEYS = ("spot_diameter", "spot_diameter_um")
PITCH_KEYS = ("inter_spot_dist", "inter_spot_dist_um", "spot_distance")
TECHNOLOGY_KEYS = ("st_technology", "technology")
#: Spot diameter and centre-to-centre distance (um) of each technology, when the metadata lack them.
TECHNOLOGY_SPOTS = {"visium": (55.0, 100.0), "spatial transcriptomics": (100.0, 200.0)}


def hest(
    root: str | Path | None = None,
    sample_id: str | None = None,
    *,
    st: str | Path | ad.AnnData | None = None,
    wsi: str | Path | None = None,
    metadata: str | Path | dict | None = None,
    um_per_px: float | None = None,
    spot_diameter_um: float | None = None,
) -> SpatialData:
    """Read one HEST-1k sample (Visium, Visium HD, legacy ST) as pixnet's spot-level SpatialData.

    Parameters
    ----------
    root, sample_id
        The HEST-1k folder (with ``st/``, ``wsis/``, ``metadata/``) and the sample's id
        (``TENX95``); they locate the three files below unless those are given.
    st
        The sample's AnnData (path or object): raw counts, spots x genes; spot centres ``(x, y)``
        in full-resolution pixels of the WSI in ``obsm["spatial"]`` (or the columns
        ``pxl_col_in_fullres``, ``pxl_row_in_fullres``).
    wsi
        The pyramidal TIFF the centres refer to.
    metadata
        The metadata JSON (path or dict).
    um_per_px, spot_diameter_um
        Override the metadata's pixel size (um per full-resolution pixel) and spot diameter (um).

    Returns
    -------
    The SpatialData of :func:`pixnet.io.spots`: the WSI, the spots ``spots`` (circles of the spot
    diameter; for Visium HD squares whose side is the grid's pitch), the table ``table`` and
    ``sdata.attrs["pixnet"]``.

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    KeyError
        If the metadata give no pixel size (the message lists the keys found), or the AnnData no centres.
    ValueError
        If the spot diameter is unknown for the sample's technology.

    """
    if um_per_px is not None and not um_per_px > 0:  # 0 fell back to the metadata, -1 blamed them
        raise ValueError(f"um_per_px must be a positive number of micrometres per pixel, got {um_per_px!r}.")
    st, wsi, metadata = _paths(root, sample_id, st=st, wsi=wsi, metadata=metadata)
    meta = _metadata(metadata)
    adata = st if isinstance(st, ad.AnnData) else ad.read_h5ad(st)
    xy = _centres(adata, st)
    source = str(metadata) if not isinstance(metadata, dict) else str(wsi)
    mpp = um_per_px or _first(meta, PIXEL_SIZE_KEYS)
    if mpp is None or not mpp > 0:
        raise KeyError(
            f"{source} gives no pixel size (one of {list(PIXEL_SIZE_KEYS)}); it has keys {sorted(meta)}. "
            "Pass um_per_px=... (micrometres per pixel of the WSI)."
        )
    tech = str(_first(meta, TECHNOLOGY_KEYS, number=False) or "").strip()
    pitch_px = _pitch_px(xy)
    shape = "square" if "hd" in tech.lower().split() else "circle"
    if shape == "square":  # HEST bins Visium HD into pseudo-spots: the grid's pitch is the bin side
        if not spot_diameter_um and pitch_px is None:
            raise ValueError(f"{source}: fewer than three bins, so their size is unknown; pass spot_diameter_um=...")
        side = spot_diameter_um or pitch_px * mpp
        stated = _first(meta, SPOT_DIAMETER_KEYS)
        if stated and abs(stated - side) > 0.05 * side and not spot_diameter_um:
            logger.warning(
                "%s: the metadata give %g um spots but the bins are %.1f um apart: using %.1f um squares "
                "(HEST stores Visium HD binned into larger pseudo-spots)", source, stated, side, side,
            )  # fmt: skip
        diameter = float(side)
    else:
        default = TECHNOLOGY_SPOTS.get(tech.lower(), (None, None))
        diameter = spot_diameter_um or _first(meta, SPOT_DIAMETER_KEYS) or default[0]
        if not diameter:
            raise ValueError(
                f"{source} gives no spot diameter ({list(SPOT_DIAMETER_KEYS)}) and its technology {tech!r} has no "
                "known spot size; pass spot_diameter_um=..."
            )
        pitch = _first(meta, PITCH_KEYS) or default[1]
        if pitch and pitch_px and abs(pitch / pitch_px - mpp) > 0.05 * mpp:
            logger.warning(
                "%s: the pixel size %.4f um disagrees with the spot pitch (%g um over %.1f px = %.4f um/px); "
                "check the metadata or pass um_per_px=...", source, mpp, pitch, pitch_px, pitch / pitch_px,
            )  # fmt: skip
    table = _counts(adata)
    table.uns.pop("spatial", None)  # HEST's downscaled copy of the image: not needed, the WSI is read
    sid = sample_id or Path(str(wsi)).stem
    return assemble(
        image=wsi, table=table, xy=xy, radius_px=diameter / 2 / mpp, um_per_px=float(mpp),
        spot_diameter_um=float(diameter), sample_id=sid, source=source, shape=shape,
    )  # fmt: skip


def _paths(root, sample_id, *, st, wsi, metadata):
    if root is not None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder; pass HEST-1k's folder (with st/, wsis/, metadata/).")
    if (st is None or wsi is None or metadata is None) and (root is None or sample_id is None):
        raise ValueError("Pass root=... and sample_id=..., or the files st=..., wsi=... and metadata=...")
    st = st if st is not None else root / "st" / f"{sample_id}.h5ad"
    if wsi is None:
        tifs = [root / "wsis" / f"{sample_id}{s}" for s in (".tif", ".tiff", ".btf")]
        wsi = next((p for p in tifs if p.is_file()), tifs[0])
    metadata = metadata if metadata is not None else root / "metadata" / f"{sample_id}.json"
    files = (("AnnData (st/ID.h5ad)", st), ("WSI (wsis/ID.tif)", wsi), ("metadata (metadata/ID.json)", metadata))
    for what, path in files:
        if isinstance(path, str | Path) and not Path(path).expanduser().is_file():
            raise FileNotFoundError(f"The sample's {what} {path} is missing.")
    wsi = Path(wsi).expanduser()
    return (st if isinstance(st, ad.AnnData) else Path(st).expanduser()), wsi, metadata


def _metadata(metadata) -> dict:
    if isinstance(metadata, dict):
        return metadata
    path = Path(metadata).expanduser()
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path} holds a {type(meta).__name__}; HEST metadata are a JSON object.")
    return meta


def _first(meta: dict, keys, *, number: bool = True):
    for key in keys:
        value = meta.get(key)
        if value is None or value == "":
            continue
        if not number:
            return value
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if np.isfinite(value) and value > 0:
            return value
    return None


def _centres(adata: ad.AnnData, source) -> np.ndarray:
    if "spatial" in adata.obsm:
        xy = np.asarray(adata.obsm["spatial"], np.float64)
        if xy.ndim == 2 and xy.shape[1] >= 2:
            return xy[:, :2]
    cols = ["pxl_col_in_fullres", "pxl_row_in_fullres"]
    if set(cols) <= set(adata.obs.columns):
        return adata.obs[cols].to_numpy(np.float64)
    raise KeyError(
        f"{source} has no spot centres: expected obsm['spatial'] (x, y in WSI pixels) or obs columns {cols}; "
        f"it has obsm {list(adata.obsm)} and obs {list(adata.obs.columns)[:10]}."
    )


def _pitch_px(xy: np.ndarray) -> float | None:
    """Median distance from each spot to its nearest neighbour, in pixels (None under three spots)."""
    if len(xy) < 3:
        return None
    dist, _ = cKDTree(xy).query(xy, k=2)
    d = float(np.median(dist[:, 1]))
    return d if d > 0 else None
