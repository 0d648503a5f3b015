"""Every name pixnet writes or reads: elements, tables, ``uns``/``obs`` keys and ``attrs``.

Bin sizes are named one way everywhere (fit, predict, evaluate, the plots, the CLI):

- a whole number of micrometres as spatialdata-io names it, three digits: ``square_008um``,
  ``square_055um``;
- any other size with its decimals (at most three), after the same three digits:
  ``square_002.5um``, ``square_012.25um``.

A size given to more than three decimals is refused (``ValueError``) rather than rounded to
another table's name.
"""

from __future__ import annotations

import numbers
import re

import numpy as np

#: Key under which pixnet records its metadata in ``AnnData.uns`` and ``SpatialData.attrs``.
UNS_KEY = "pixnet"

#: spatialdata-io's names for Visium HD tables and their keys.
REGION_KEY = "region"
INSTANCE_KEY = "location_id"
LABELS_INSTANCE_KEY = "relabeled_location_id"
ARRAY_ROW = "array_row"
ARRAY_COL = "array_col"

#: Boolean ``obs`` column: whether the bin's centre lies on the slide image (False bins are not trained on or scored).
ON_IMAGE = "pixnet_on_image"

#: ``obs`` column of a prediction: expected total counts over all genes.
PREDICTED_TOTAL = "predicted_total_counts"

#: Channel of a density map holding the expected counts of all genes the model does not name.
OTHER_CHANNEL = "other_genes"

#: Names of the circles and the table of spot-level data read by :func:`pixnet.io.spots` and its layouts.
SPOTS_SHAPES = "spots"
SPOTS_TABLE = "table"

#: Prefix of the elements :func:`pixnet.tl.predict` writes, and the name of a model in ``attrs``.
DEFAULT_KEY_ADDED = "pixnet"

_DECIMALS = 3
_BIN_NAME = re.compile(r"square_(\d{3,}(?:\.\d{1,3})?)um")


def check_bin_size(bin_size) -> float:
    """``bin_size`` as a float after checking it is a positive number of micrometres with at most 3 decimals.

    Raises
    ------
    ValueError
        For anything else (a string, a bool, 0, a negative size, 2.0001).

    """
    if isinstance(bin_size, bool) or not isinstance(bin_size, numbers.Real) or not bin_size > 0:  # numpy's too
        raise ValueError(f"bin_size must be a positive number of micrometres, got {bin_size!r}.")
    size = float(bin_size)
    if abs(size - round(size, _DECIMALS)) > 1e-9:
        raise ValueError(
            f"bin_size={bin_size!r} has more than {_DECIMALS} decimals; bin sizes are named to the nanometre "
            f"(for example 2.5 -> {bin_table_name(2.5)!r}). Pass bin_size={round(size, _DECIMALS):g}."
        )
    return round(size, _DECIMALS)


def bin_size_label(bin_size) -> str:
    """The bin size as it appears in names: ``"008"`` for 8, ``"002.5"`` for 2.5."""
    size = check_bin_size(bin_size)
    whole = int(size)
    if size == whole:
        return f"{whole:03d}"
    decimals = f"{size - whole:.{_DECIMALS}f}"[2:].rstrip("0")
    return f"{whole:03d}.{decimals}"


def bin_table_name(bin_size) -> str:
    """The table of ``bin_size`` um bins: ``square_008um`` (spatialdata-io's name), ``square_002.5um``."""
    return f"square_{bin_size_label(bin_size)}um"


def bin_size_of(name: str) -> float | None:
    """The bin size a table (or bin folder) name holds (``square_016um`` -> 16.0), or None."""
    m = _BIN_NAME.search(name)
    return float(m.group(1)) if m else None


def is_bin_table(name: str) -> bool:
    """Whether ``name`` is a table of square bins (``square_008um``, not a prediction of them)."""
    return _BIN_NAME.fullmatch(name) is not None


def barcode_prefix(bin_size) -> str:
    """Prefix of the barcodes of a bin grid, as Space Ranger writes it: ``s_008um_`` (``s_002.5um_``)."""
    return f"s_{bin_size_label(bin_size)}um_"


def barcodes(bin_size, rows, cols) -> np.ndarray:
    """Barcodes of Visium HD bins ``(rows, cols)``, as Space Ranger writes them: ``s_008um_00012_00345-1``."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    if len(rows) == 0:  # numpy's zfill fails on empty arrays
        return np.array([], dtype="U22")
    r, c = np.char.zfill(rows.astype(str), 5), np.char.zfill(cols.astype(str), 5)
    return np.char.add(np.char.add(np.char.add(np.char.add(barcode_prefix(bin_size), r), "_"), c), "-1")


def target_name(*, bin_size=None, shapes: str | None = None) -> str:
    """What a prediction is named after: the bins' table name, or the shapes element's name."""
    if (bin_size is None) == (shapes is None):
        raise ValueError("Pass exactly one of bin_size=... (square bins) or shapes=... (a shapes element's name).")
    return bin_table_name(bin_size) if bin_size is not None else shapes


def prediction_table(key_added: str, target: str) -> str:
    """The table :func:`pixnet.tl.predict` writes: ``pixnet_square_008um``."""
    return f"{key_added}_{target}"


def prediction_geometry(key_added: str, target: str, *, labels: bool) -> str:
    """The bins or shapes the prediction table annotates: ``pixnet_square_008um_shapes`` (``_labels`` for 2 um)."""
    return f"{key_added}_{target}_" + ("labels" if labels else "shapes")


def map_image(key_added: str) -> str:
    """The dense map image :func:`pixnet.tl.predict` writes: ``pixnet_map``."""
    return f"{key_added}_map"


def prediction_names(key_added: str, target: str, *, labels: bool, dense: bool = True) -> dict[str, str]:
    """Every element one prediction writes: ``table``, ``geometry`` and (dense models) ``map``."""
    names = {
        "table": prediction_table(key_added, target),
        "geometry": prediction_geometry(key_added, target, labels=labels),
    }
    if dense:
        names["map"] = map_image(key_added)
    return names


def reader_geometry(dataset_id: str, bin_size, *, labels: bool) -> str:
    """The bins' element :func:`pixnet.io.visium_hd` writes: ``{id}_square_008um`` (``..._labels`` for 2 um)."""
    return f"{dataset_id}_{bin_table_name(bin_size)}" + ("_labels" if labels else "")
