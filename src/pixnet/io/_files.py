"""Find and check the files of a Space Ranger output before reading them, so errors name the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
_IMAGE_SUFFIXES = {".tif", ".tiff", ".btf", ".png", ".jpg", ".jpeg"}


def outs_folder(path: str | Path) -> Path:
    """The Visium HD ``outs/`` folder at ``path`` (or ``path/outs``), or a clear error."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist. Pass the `outs/` folder of a Space Ranger Visium HD run.")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file. Pass the `outs/` folder of a Space Ranger Visium HD run.")
    if not (path / "binned_outputs").is_dir() and (path / "outs" / "binned_outputs").is_dir():
        path = path / "outs"
    if not (path / "binned_outputs").is_dir():
        hint = " It looks like a Visium (55 um) run: use pixnet.io.visium." if (path / "spatial").is_dir() else ""
        raise FileNotFoundError(
            f"{path} is not a Space Ranger Visium HD output: it has no `binned_outputs/` folder.{hint}"
        )
    return path


def available_bin_sizes(outs: Path) -> list[int]:
    """Bin sizes (um) that have a folder in ``binned_outputs/``."""
    sizes = []
    for d in (outs / "binned_outputs").iterdir():
        m = re.fullmatch(r"square_(\d{3})um", d.name)
        if d.is_dir() and m:
            sizes.append(int(m.group(1)))
    return sorted(sizes)


def bin_folder(outs: Path, bin_size: int) -> Path:
    """``binned_outputs/square_XXXum`` for a bin size, or a ValueError listing those present."""
    if not isinstance(bin_size, int | float) or bin_size <= 0 or int(bin_size) != bin_size:
        raise ValueError(f"bin sizes are whole micrometres, such as 2, 8 or 16; got {bin_size!r}.")
    d = outs / "binned_outputs" / f"square_{int(bin_size):03d}um"
    if not d.is_dir():
        have = ", ".join(map(str, available_bin_sizes(outs))) or "none"
        raise ValueError(
            f"No {bin_size} um bins in {outs / 'binned_outputs'} (available: {have}). Pass bin_sizes=... from those."
        )
    return d


def read_json(path: Path) -> dict:
    """A small JSON file, or an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; it is part of every Space Ranger output. Re-copy the run's `outs/` folder."
        )
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path} is not valid JSON (truncated copy?): {err}. Re-copy it from the Space Ranger output."
        ) from err


def scalefactors(folder: Path) -> dict:
    """``spatial/scalefactors_json.json`` of a bin folder, checked for the keys pixnet uses."""
    path = folder / "spatial" / "scalefactors_json.json"
    sf = read_json(path)
    missing = [k for k in ("microns_per_pixel", "spot_diameter_fullres") if k not in sf]
    if missing:
        raise ValueError(f"{path} lacks {missing}; is this a Visium HD run from Space Ranger >= 3.0?")
    if not sf["microns_per_pixel"] or sf["microns_per_pixel"] <= 0:
        raise ValueError(f"{path} gives microns_per_pixel={sf['microns_per_pixel']!r}; it must be positive.")
    return sf


def read_positions(folder: Path) -> pa.Table:
    """``spatial/tissue_positions.parquet`` as an Arrow table with the six Space Ranger columns."""
    path = folder / "spatial" / "tissue_positions.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. Re-copy the run's `outs/` folder (Space Ranger >= 3.0 writes it).")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path} cannot be read as parquet (truncated or corrupt?): {err}. Re-copy it.") from err
    missing = [c for c in POSITION_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; expected {POSITION_COLUMNS}.")
    return table


def feature_slice(outs: Path, dataset_id: str | None) -> tuple[Path, str]:
    """The feature slice file and the dataset id (its file prefix), as spatialdata-io infers them."""
    if dataset_id is None and (outs / "feature_slice.h5").is_file():
        return outs / "feature_slice.h5", ""
    candidates = sorted(outs.glob("*feature_slice.h5"))
    if dataset_id is not None:
        for p in (outs / f"{dataset_id}_feature_slice.h5", outs / "feature_slice.h5"):
            if p.is_file():
                return p, dataset_id
        raise FileNotFoundError(f"{outs / (dataset_id + '_feature_slice.h5')} not found; check `dataset_id`.")
    if len(candidates) == 1:
        return candidates[0], candidates[0].name[: -len("_feature_slice.h5")]
    if not candidates:
        raise FileNotFoundError(
            f"No feature_slice.h5 in {outs}; every Visium HD output has one. Re-copy the `outs/` folder."
        )
    raise ValueError(f"Several feature slice files in {outs}: {[c.name for c in candidates]}; pass dataset_id=...")


def fullres_image(outs: Path, prefix: str) -> Path | None:
    """The full-resolution microscope image, where spatialdata-io looks for it."""
    folder = outs / "microscope_image"
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
        if files:
            return files[0]
    files = sorted(p for p in outs.glob(f"{prefix}tissue_image.*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    return files[0] if files else None
