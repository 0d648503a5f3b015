"""Read a Visium (55 um spots) run through spatialdata-io, with the spots' true size and the image's scale."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from spatialdata import SpatialData

from .._keys import UNS_KEY
from . import _files

logger = logging.getLogger(__name__)

#: Visium (v1 and CytAssist v2): 55 um spots, 100 um centre to centre.
VISIUM_SPOT_UM = 55.0
VISIUM_PITCH_UM = 100.0
#: Space Ranger's ``spot_diameter_fullres`` spans "a theoretical 65 um spot" (its documentation).
SPACERANGER_SPOT_UM = 65.0
_COUNTS_FILE = "filtered_feature_bc_matrix.h5"


def visium(path: str | Path, *, spot_diameter_um: float = VISIUM_SPOT_UM, **kwargs) -> SpatialData:
    """Read a 10x Genomics Visium run with :func:`spatialdata_io.visium`, spots of their true size.

    A plain ``outs/`` folder (files without a sample prefix) is read too: the dataset id, which
    names the elements, is then the run's folder name. The pixel size of the full-resolution image
    comes from the spot pitch (neighbouring spots are 100 um apart); ``microns_per_pixel`` of
    ``scalefactors_json.json``, where present, is checked against it. The circles are remade with
    the spots' true diameter (55 um): spatialdata-io draws them with Space Ranger's
    ``spot_diameter_fullres``, which spans a theoretical 65 um spot; a diameter that matches
    neither 55 nor 65 um at the pitch's scale is reported. The counts are
    ``filtered_feature_bc_matrix.h5`` or, where it is absent, the ``filtered_feature_bc_matrix/``
    folder (``matrix.mtx.gz``, ``barcodes.tsv.gz``, ``features.tsv.gz``) or those three files in
    ``outs/`` with a common prefix (as GEO shares them).

    Parameters
    ----------
    path
        The run's ``outs/`` folder.
    spot_diameter_um
        The spots' diameter in micrometres (55 on Visium v1 and CytAssist v2 slides).
    **kwargs
        Passed to :func:`spatialdata_io.visium` (``dataset_id``, ``fullres_image_file``, ...).

    Returns
    -------
    spatialdata-io's SpatialData (elements named by the dataset id; the table ``table``), with
    the circles' radius set to ``spot_diameter_um / 2`` micrometres in full-resolution pixels
    and ``sdata.attrs["pixnet"]`` recording the image, its micrometres per pixel, the spot
    diameter, the table and the shapes, so :func:`pixnet.tl.fit` finds them.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a folder or no H&E image is found.
    ValueError
        If ``scalefactors_json.json`` lacks ``spot_diameter_fullres``.

    """
    import spatialdata_io

    given, path = path, _outs(path)
    sf = _files.read_json(path / "spatial" / "scalefactors_json.json")
    if "spot_diameter_fullres" not in sf:
        raise ValueError(f"{path}/spatial/scalefactors_json.json has no spot_diameter_fullres; is this a Visium run?")
    lacking = [k for k in ("tissue_hires_scalef", "tissue_lowres_scalef") if k not in sf]
    if lacking:  # spatialdata-io reads both, PNGs or not
        raise ValueError(
            f"{path}/spatial/scalefactors_json.json lacks {lacking}, which Space Ranger always writes (the scale of "
            "its hires and lowres PNGs); re-copy the file from the run, or add them (1.0 where the PNG is absent)."
        )
    counts = kwargs["counts_file"] = _counts_file(path, kwargs.get("counts_file") or _COUNTS_FILE)
    if kwargs.get("fullres_image_file") is not None:
        kwargs["fullres_image_file"] = _image_file(given, path, kwargs["fullres_image_file"])
    if kwargs.get("dataset_id") is None and not _prefixed(path, counts):
        kwargs["dataset_id"] = _dataset_id(path)
        logger.info("%s: files have no sample prefix; naming the elements %r", path, kwargs["dataset_id"])
    sdata = spatialdata_io.visium(path, **kwargs)
    images = [k for k in sdata.images if k.endswith("_full_image")] or [
        k for k in sdata.images if k.endswith("hires_image")
    ]
    if not images:
        raise FileNotFoundError(
            f"No H&E image was found for {path}: "
            "pass fullres_image_file='path/to/image.tif' (forwarded to spatialdata-io)."
        )
    table_name = "table"
    table = sdata.tables[table_name]
    _check_positions(path, table)
    shapes = table.uns["spatialdata_attrs"]["region"]
    um_per_px = _fullres_scale(path, table.obsm["spatial"], sf)
    _check_diameter(path, float(sf["spot_diameter_fullres"]) * um_per_px, spot_diameter_um)
    sdata.shapes[shapes]["radius"] = spot_diameter_um / 2 / um_per_px
    image = images[0]
    _check_rgb(sdata.images[image], kwargs.get("fullres_image_file") or image)
    if image.endswith("hires_image"):  # no full-resolution image: the hires PNG, in full-resolution units
        logger.info("%s: no full-resolution image; pixnet reads the hires image", path)
    cs = shapes if shapes in _systems(sdata.images[image]) else next(iter(_systems(sdata.images[image])))
    sdata.attrs[UNS_KEY] = {
        "image": image, "um_per_px": um_per_px, "spot_diameter_um": float(spot_diameter_um), "table": table_name,
        "shapes": shapes, "coordinate_system": cs, "source": str(path),
    }  # fmt: skip
    for t in sdata.tables.values():
        t.uns.setdefault(UNS_KEY, {}).update(um_per_px=um_per_px, spot_diameter_um=float(spot_diameter_um))
    return sdata


def _outs(path: str | Path) -> Path:
    """The run's ``outs/`` folder: ``path``, or ``path/outs`` when given the run's folder."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder; pass the `outs/` folder of a Space Ranger Visium run.")
    if not (path / "spatial").is_dir() and (path / "outs" / "spatial").is_dir():
        path = path / "outs"
    if (path / "binned_outputs").is_dir():
        raise ValueError(f"{path} is a Visium HD run (it has binned_outputs/): read it with pixnet.io.visium_hd.")
    return path


def _counts_file(path: Path, counts_file: str) -> str:
    """What spatialdata-io reads as the counts: ``counts_file`` (or ``{prefix}_{counts_file}``), else a matrix folder.

    Where the HDF5 matrix is absent, the matrix folder beside it (``filtered_feature_bc_matrix/``:
    ``matrix.mtx.gz``, ``barcodes.tsv.gz``, ``features.tsv.gz``, as Space Ranger writes it and GEO
    often shares it) or those three files with a common prefix in ``outs/`` are read instead, as
    ``{folder}/matrix.mtx.gz`` (spatialdata-io reads it with scanpy's ``read_10x_mtx``). A
    ``counts_file`` naming a folder is read as such a folder.
    """
    if any(p.name == counts_file or p.name.endswith(f"_{counts_file}") for p in path.iterdir() if p.is_file()):
        return counts_file
    folder = path / counts_file.removesuffix(".h5")  # filtered_feature_bc_matrix.h5 -> filtered_feature_bc_matrix/
    candidates = [(folder, "")]
    if counts_file == _COUNTS_FILE:  # the three files side by side in outs/, with or without a prefix
        candidates += [(path, p.name.removesuffix("matrix.mtx.gz")) for p in sorted(path.glob("*matrix.mtx.gz"))]
    for where, prefix in candidates:
        if all((where / f"{prefix}{f}").is_file() for f in ("matrix.mtx.gz", "barcodes.tsv.gz", "features.tsv.gz")):
            logger.info("%s: no %s; reading the matrix in %s", path, counts_file, where / f"{prefix}matrix.mtx.gz")
            return f"{where.relative_to(path)}/{prefix}matrix.mtx.gz".removeprefix("./")
    found = sorted(p.name for p in path.iterdir() if "matrix" in p.name)
    h5 = [f for f in found if f.endswith(".h5")]
    if h5:
        hint = f" Pass counts_file={h5[0]!r} to read it."
    elif folder.is_dir():
        hint = (
            f" {folder.name}/ holds {sorted(p.name for p in folder.iterdir())}: it needs matrix.mtx.gz, "
            "barcodes.tsv.gz and features.tsv.gz (gzip them if they are not)."
        )
    else:
        hint = " Copy filtered_feature_bc_matrix.h5 or the filtered_feature_bc_matrix/ folder there from the run."
    raise FileNotFoundError(f"No {counts_file} in {path} (matrices there: {found or 'none'}).{hint}")


def _image_file(given: str | Path, path: Path, image: str | Path) -> Path:
    """The user's full-resolution image: absolute, or relative to the working folder, the folder given or ``outs/``."""
    image = Path(image).expanduser()
    for candidate in (image, Path(given).expanduser() / image, path / image):
        if candidate.is_file():
            return candidate.resolve()  # spatialdata-io joins it onto outs/: an absolute path stays as it is
    raise FileNotFoundError(
        f"fullres_image_file={str(image)!r} was not found (nor in {path}); pass the path of the H&E image."
    )


def _check_rgb(element, source) -> None:
    """An RGB image, as spatialdata-io read it (it reads a greyscale or IF image too, refused only at fit)."""
    from ..data.image import image_levels

    level = image_levels(element)[0]
    if level.sizes.get("c", 0) < 3:
        raise ValueError(
            f"{source} has {level.sizes.get('c', 0)} channel(s) ({dict(level.sizes)}): pixnet needs the RGB H&E "
            "image (the brightfield scan, 3 colour channels), not a greyscale or fluorescence one; pass it as "
            "fullres_image_file=..."
        )


def _check_positions(path: Path, table) -> None:
    """Every spot of the matrix has a place: spatialdata-io leaves those the positions lack at NaN."""
    xy = np.asarray(table.obsm["spatial"], np.float64)
    lost = ~np.isfinite(xy).all(1)
    if lost.any():
        suffix = " (do the positions' barcodes lack the '-1' suffix the matrix's have?)" if lost.all() else ""
        raise ValueError(
            f"{int(lost.sum())} of {len(lost)} spots of the counts matrix are not in "
            f"{path}/spatial/tissue_positions*.csv{suffix}, e.g. {list(table.obs_names[lost][:3])}; the matrix and "
            "the positions must come from the same run."
        )


def _prefixed(path: Path, counts_file: str) -> bool:
    """Whether the counts file carries a sample prefix (``{id}_filtered_feature_bc_matrix.h5``)."""
    return any(p.name.endswith(f"_{counts_file}") for p in path.iterdir())


def _dataset_id(path: Path) -> str:
    """A name for the elements: the run's folder (the parent of ``outs/``), made a valid element name."""
    name = path.resolve().parent.name if path.name == "outs" else path.resolve().name
    name = re.sub(r"[^0-9A-Za-z_.-]", "_", name).strip("._-")
    return name or "visium"


def _systems(element) -> list[str]:
    from spatialdata.transformations import get_transformation

    return list(get_transformation(element, get_all=True))


def _fullres_scale(path: Path, xy: np.ndarray, sf: dict) -> float:
    """Micrometres per full-resolution pixel, from the spot pitch (100 um), checked against Space Ranger's."""
    xy = np.asarray(xy, np.float64)
    stated = sf.get("microns_per_pixel")
    xy = xy[np.isfinite(xy).all(1)]
    if len(xy) >= 3:
        dist, _ = cKDTree(xy).query(xy, k=2)
        pitch_px = float(np.median(dist[:, 1]))
        if pitch_px > 0:
            um_per_px = VISIUM_PITCH_UM / pitch_px
            if stated and abs(float(stated) - um_per_px) > 0.03 * um_per_px:
                logger.warning(
                    "%s: scalefactors give %.4f um/px but the spots, 100 um apart, are %.1f px apart (%.4f um/px); "
                    "using the pitch", path, float(stated), pitch_px, um_per_px,
                )  # fmt: skip
            return um_per_px
    if stated:
        return float(stated)
    logger.warning("%s: too few spots to measure the pitch; the scale comes from spot_diameter_fullres (65 um)", path)
    return SPACERANGER_SPOT_UM / float(sf["spot_diameter_fullres"])


def _check_diameter(path: Path, diameter_um: float, spot_um: float) -> None:
    """Report a ``spot_diameter_fullres`` that is neither Space Ranger's 65 um nor the spots' true size."""
    if abs(diameter_um - SPACERANGER_SPOT_UM) <= 0.1 * SPACERANGER_SPOT_UM:
        logger.info(
            "%s: spot_diameter_fullres spans %.1f um (Space Ranger's theoretical 65 um spot); "
            "circles of %g um are used",
            path, diameter_um, spot_um,
        )  # fmt: skip
    elif abs(diameter_um - spot_um) > 0.1 * spot_um:
        logger.warning(
            "%s: spot_diameter_fullres spans %.1f um at the scale of the spot pitch (100 um), neither %g um (the "
            "spots) nor 65 um (Space Ranger's convention); check the run, or pass spot_diameter_um=...",
            path, diameter_um, spot_um,
        )  # fmt: skip
