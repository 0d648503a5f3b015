"""iStar-style folders: ``he-raw.jpg``, ``cnts.tsv``, ``locs-raw.tsv``, ``pixel-size-raw.txt``, ``radius-raw.txt``.

The layout iStar (Zhang et al., Nat. Biotechnol. 2024) and several tools after it read: the H&E,
a spots x genes count table, the spot centres in the H&E's pixels, the pixel size and the spot
radius in pixels, one value per text file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from spatialdata import SpatialData

from .spots import _read_delimited, spots

logger = logging.getLogger(__name__)

#: What each file of an iStar folder holds (named in errors when one is missing).
ISTAR_FILES = {
    "he-raw.jpg": "the full-resolution H&E image (he-raw.png or he-raw.tif are read too)",
    "cnts.tsv": "raw counts, spots x genes, tab-separated, the spot id in the first column and genes in the header",
    "locs-raw.tsv": "spot centres: the spot id in the first column, then columns x and y in pixels of he-raw.jpg",
    "pixel-size-raw.txt": "one number: micrometres per pixel of he-raw.jpg",
    "radius-raw.txt": "one number: the spot radius in pixels of he-raw.jpg",
}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def istar(folder: str | Path, *, sample_id: str | None = None) -> SpatialData:
    """Read an iStar-style folder of spot-level spatial transcriptomics.

    Parameters
    ----------
    folder
        A folder with ``he-raw.jpg`` (the H&E; PNG or TIFF accepted), ``cnts.tsv`` (raw counts,
        spots x genes, spot id first), ``locs-raw.tsv`` (spot id, ``x``, ``y`` in pixels of the
        H&E), ``pixel-size-raw.txt`` (micrometres per pixel of the H&E) and ``radius-raw.txt``
        (the spot radius in pixels of the H&E). The spot diameter is ``2 * radius * pixel size``
        micrometres.
    sample_id
        Prefix of the image element's name (default: the folder's name).

    Returns
    -------
    The SpatialData of :func:`pixnet.io.spots`: the image, circles ``spots`` of the spots' true
    diameter, the table ``table`` of raw counts, and ``sdata.attrs["pixnet"]``.

    Raises
    ------
    FileNotFoundError
        If a file is missing (the message says which and what it holds).
    ValueError
        If a text file does not hold one positive number, or the counts and positions share no spot.

    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass an iStar folder ({', '.join(ISTAR_FILES)}).")
    image = _image(folder)
    um_per_px = _number(folder / "pixel-size-raw.txt")
    radius_px = _number(folder / "radius-raw.txt")
    locs = _locs(_need(folder / "locs-raw.tsv"))
    return spots(
        image=image, counts=_need(folder / "cnts.tsv"), positions=locs, spot_diameter_um=2 * radius_px * um_per_px,
        um_per_px=um_per_px, sample_id=sample_id or folder.name,
    )  # fmt: skip


def _need(path: Path) -> Path:
    if not path.is_file():
        what = ISTAR_FILES.get(path.name, "")
        raise FileNotFoundError(f"{path} is missing; an iStar folder has {path.name}: {what}.")
    return path


def _image(folder: Path) -> Path:
    for suffix in _IMAGE_SUFFIXES:
        if (folder / f"he-raw{suffix}").is_file():
            return folder / f"he-raw{suffix}"
    return _need(folder / "he-raw.jpg")


def _number(path: Path) -> float:
    text = _need(path).read_text().strip()
    try:
        value = float(text.split()[0])
    except (ValueError, IndexError):
        raise ValueError(f"{path} should hold one number ({ISTAR_FILES[path.name]}); it holds {text[:40]!r}.") from None
    if not value > 0:
        raise ValueError(f"{path} holds {value}; it must be positive ({ISTAR_FILES[path.name]}).")
    return value


def _locs(path: Path) -> pd.DataFrame:
    locs = _read_delimited(path)
    if not {"x", "y"} <= set(locs.columns):
        numeric = locs.select_dtypes("number").columns
        if len(numeric) < 2:
            raise KeyError(
                f"{path} has columns {list(locs.columns)}; it needs the spot id first, then columns x and y (pixels)."
            )
        logger.info("%s has no columns x and y: using %s and %s", path, numeric[0], numeric[1])
        locs = locs.rename(columns={numeric[0]: "x", numeric[1]: "y"})
    return locs
