"""Find and check the files of a Space Ranger output before reading them, so errors name the file."""

from __future__ import annotations

import gzip
import json
import numbers
import warnings
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .._keys import bin_size_of, bin_table_name, is_bin_table

POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]


def outs_folder(path: str | Path) -> Path:
    """The Visium HD ``outs/`` folder at ``path`` (or ``path/outs``), or a clear error."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist. Pass the `outs/` folder of a Space Ranger Visium HD run.")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is a file. Pass the `outs/` folder of a Space Ranger Visium HD run.")
    if not (path / "binned_outputs").is_dir() and (path / "outs" / "binned_outputs").is_dir():
        path = path / "outs"
    if path.name == "binned_outputs":  # a folder inside outs/
        path = path.parent
    elif path.parent.name == "binned_outputs" and is_bin_table(path.name):
        path = path.parent.parent
    if not (path / "binned_outputs").is_dir():
        archives = sorted(p.name for p in path.glob("*binned_outputs.tar*"))
        hint = " It looks like a Visium (55 um) run: use pixnet.io.visium." if (path / "spatial").is_dir() else ""
        if archives:
            hint = f" It holds {', '.join(archives)}: extract it there first (tar xzf {archives[0]})."
        raise FileNotFoundError(
            f"{path} is not a Space Ranger Visium HD output: it has no `binned_outputs/` folder "
            f"(it holds {listing(path)}).{hint}"
        )
    return path


def available_bin_sizes(outs: Path) -> list[int]:
    """Bin sizes (um) that have a folder in ``binned_outputs/``."""
    sizes = []
    for d in (outs / "binned_outputs").iterdir():
        if d.is_dir() and is_bin_table(d.name):
            sizes.append(int(bin_size_of(d.name)))
    return sorted(sizes)


def bin_folder(outs: Path, bin_size: int) -> Path:
    """``binned_outputs/square_XXXum`` for a bin size, or a ValueError listing those present."""
    whole = isinstance(bin_size, numbers.Real) and not isinstance(bin_size, bool) and bin_size > 0
    if not whole or int(bin_size) != bin_size:  # numpy's integers and floats are Real too
        raise ValueError(f"bin sizes are whole micrometres, such as 2, 8 or 16; got {bin_size!r}.")
    d = outs / "binned_outputs" / bin_table_name(int(bin_size))
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


def scalefactors(folder: Path, outs: Path | None = None) -> dict:
    """``spatial/scalefactors_json.json`` of a bin folder, checked for the keys pixnet uses.

    A bin folder copied without it borrows the run's (``outs/spatial/`` or ``segmented_outputs/spatial/``):
    micrometres per pixel and the image scale factors are the same for every bin size.
    """
    path = folder / "spatial" / "scalefactors_json.json"
    if not path.is_file() and (folder / path.name).is_file():  # a copy that flattened spatial/
        path = folder / path.name
    if not path.is_file() and outs is not None:
        spares = [p / "spatial" / "scalefactors_json.json" for p in (outs, outs / "segmented_outputs")]
        spare = next((p for p in spares if p.is_file()), None)
        if spare is not None:
            warnings.warn(f"{path} is missing; using {spare} (the same micrometres per pixel).", stacklevel=3)
            sf = dict(_checked_scalefactors(spare))
            bin_um = bin_size_of(folder.name) if is_bin_table(folder.name) else None
            if bin_um:  # the run-level file describes no bin size
                sf["bin_size_um"] = bin_um
                sf["spot_diameter_fullres"] = sf["bin_size_um"] / sf["microns_per_pixel"]
            return sf
    return _checked_scalefactors(path)


def _checked_scalefactors(path: Path) -> dict:
    sf = read_json(path)
    missing = [k for k in ("microns_per_pixel", "spot_diameter_fullres") if k not in sf]
    if missing:
        raise ValueError(f"{path} lacks {missing}; is this a Visium HD run from Space Ranger >= 3.0?")
    if not sf["microns_per_pixel"] or sf["microns_per_pixel"] <= 0:
        raise ValueError(f"{path} gives microns_per_pixel={sf['microns_per_pixel']!r}; it must be positive.")
    return sf


def find_file(folder: Path, names: Sequence[str], *, dirs: bool = False) -> Path | None:
    """The first of ``names`` in ``folder``, also under a dataset-id prefix (``{id}_name``)."""
    if not folder.is_dir():
        return None
    for name in names:
        exact = folder / name
        if exact.is_dir() if dirs else exact.is_file():
            return exact
        hits = sorted(p for p in folder.glob(f"*_{name}") if (p.is_dir() if dirs else p.is_file()))
        if len(hits) == 1:
            return hits[0]
    return None


def listing(folder: Path, limit: int = 12) -> str:
    """What a folder holds, for error messages: ``a.h5, spatial/, ...`` or ``nothing``/``no such folder``."""
    if not folder.is_dir():
        return f"there is no {folder.name}/ folder"
    items = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not items:
        return "nothing"
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


POSITION_FILES = (
    "tissue_positions.parquet",  # Space Ranger >= 3 (Visium HD)
    "tissue_positions.csv",  # Space Ranger 2 (Visium), a header row
    "tissue_positions.csv.gz",
    "tissue_positions_list.csv",  # Space Ranger 1 (Visium), no header
    "tissue_positions_list.csv.gz",
)


def positions_file(folder: Path) -> Path:
    """The bin positions of a bin folder in any of Space Ranger's forms, or an error listing what is there."""
    spatial = folder / "spatial"
    path = find_file(spatial, POSITION_FILES) or find_file(folder, POSITION_FILES)  # some copies flatten spatial/
    if path is None:
        raise FileNotFoundError(
            f"No bin positions for {folder.name}: {spatial / POSITION_FILES[0]} is missing, and so are "
            f"{', '.join(POSITION_FILES[1:])} (found in {spatial}: {listing(spatial)}). "
            "Re-copy the bin folder's spatial/ from the Space Ranger output."
        )
    return path


def read_positions(folder: Path) -> pa.Table:
    """The bin positions (parquet, or CSV with or without a header row) as an Arrow table of the six columns."""
    path = positions_file(folder)
    try:
        if path.name.endswith(".parquet"):
            table = pq.read_table(path)
        else:
            table = _read_positions_csv(path)
    except (pa.ArrowException, OSError, EOFError) as err:
        kind = "parquet" if path.name.endswith(".parquet") else "CSV"
        raise ValueError(f"{path} cannot be read as {kind} (truncated or corrupt?): {err}. Re-copy it.") from err
    missing = [c for c in POSITION_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; expected {POSITION_COLUMNS}.")
    if table.column("barcode").type != pa.string():
        barcode = table.column("barcode").cast(pa.string())
        table = table.set_column(table.column_names.index("barcode"), "barcode", barcode)
    return table


def first_line(path: Path) -> str:
    """The first line of a text file, gzipped or not."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", errors="replace") as f:
        return f.readline()


def delimiter(first: str) -> str:
    """What separates a table's columns, told from its first line: a tab, a comma, else runs of spaces.

    Not from the file's name: a ``.txt`` or ``.tsv`` re-saved from a spreadsheet may hold commas, a
    ``.csv`` tabs. A line with neither (one column) reads as comma-separated.
    """
    if first.count("\t") > first.count(","):
        return "\t"
    return "," if "," in first or " " not in first.strip() else r"\s+"


def _read_positions_csv(path: Path) -> pa.Table:
    """``tissue_positions.csv`` (header row) or ``tissue_positions_list.csv`` (none), gzipped or not."""
    first = first_line(path)
    # a file re-saved by hand may be tab-separated, or carry pandas' index as a first, unnamed column
    sep = "\t" if delimiter(first) == "\t" else ","
    header = "barcode" in [c.strip().strip('"') for c in first.split(sep)]
    read = pacsv.ReadOptions(column_names=None if header else POSITION_COLUMNS)
    convert = pacsv.ConvertOptions(column_types={"barcode": pa.string()})
    parse = pacsv.ParseOptions(delimiter=sep)
    return pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)


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
    """The full-resolution microscope image, where spatialdata-io looks for it, recognised by content.

    ``microscope_image/`` (TIFF-based files first: the scan), else ``{prefix}tissue_image.*`` in ``outs/``;
    files that are not images (notes, checksums, ``.DS_Store``) are passed over whatever their suffix.
    """
    from ._image import image_format

    folder = outs / "microscope_image"
    candidates = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    candidates += sorted(p for p in outs.glob(f"{prefix}tissue_image*") if p.is_file())
    kinds = [(p, image_format(p)) for p in candidates]
    images = [p for p, k in kinds if k == "tiff"] + [p for p, k in kinds if k in ("png", "jpeg")]
    return images[0] if images else None


#: Counts matrices of a bin folder, in order of preference: (name, a folder?, raw).
COUNTS_FORMS = (
    ("filtered_feature_bc_matrix.h5", False, False),
    ("filtered_feature_bc_matrix", True, False),
    ("raw_feature_bc_matrix.h5", False, True),
    ("raw_feature_bc_matrix", True, True),
)
MTX_FILES = {
    "matrix": ("matrix.mtx.gz", "matrix.mtx"),
    "barcodes": ("barcodes.tsv.gz", "barcodes.tsv"),
    "features": ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv"),  # genes.tsv: Cell Ranger 2
}


def mtx_files(folder: Path) -> dict[str, Path] | None:
    """The three files of a 10x matrix folder (Market Exchange form), or None if one is missing."""
    found = {k: find_file(folder, names) for k, names in MTX_FILES.items()}
    return found if all(found.values()) else None


def counts_file(folder: Path) -> tuple[Path, bool]:
    """The bin folder's counts: the filtered HDF5 matrix, its matrix folder, or the raw ones (``raw=True``)."""
    incomplete = []
    for name, is_dir, raw in COUNTS_FORMS:
        path = find_file(folder, [name], dirs=is_dir)
        if path is None:
            continue
        if not is_dir:
            return path, raw
        if mtx_files(path) is not None:
            return path, raw
        incomplete.append(f"{path.name}/ holds {listing(path)}")
    mtx = "/ (matrix.mtx.gz, barcodes.tsv.gz, features.tsv.gz)"
    forms = ", ".join(n + (mtx if d else "") for n, d, _ in COUNTS_FORMS[1:])
    extra = f"; {'; '.join(incomplete)}" if incomplete else ""
    raise FileNotFoundError(
        f"No counts matrix in {folder}: filtered_feature_bc_matrix.h5 is missing, and so are {forms} "
        f"(found: {listing(folder)}{extra}). Re-copy the bin folder from the Space Ranger output."
    )
