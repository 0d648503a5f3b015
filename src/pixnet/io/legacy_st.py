"""Legacy Spatial Transcriptomics (Stahl et al. 2016): the HER2ST and STNet file layouts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from spatialdata import SpatialData

from ._files import delimiter, first_line
from .spots import spots

logger = logging.getLogger(__name__)

#: Legacy ST arrays: 100 um spots, 200 um centre to centre.
ST_SPOT_UM = 100.0
ST_PITCH_UM = 200.0


def legacy_st(
    *,
    image: str | Path,
    counts: str | Path | pd.DataFrame,
    spots_file: str | Path | pd.DataFrame,
    um_per_px: float | None = None,
    spot_diameter_um: float = ST_SPOT_UM,
    pitch_um: float = ST_PITCH_UM,
    only_selected: bool = True,
    sample_id: str | None = None,
) -> SpatialData:
    """Read a legacy Spatial Transcriptomics section (HER2ST, STNet and the ST pipeline's files).

    The count matrix is indexed by the spot's array coordinates ``"{x}x{y}"`` (HER2ST's
    ``ST-cnts/NAME.tsv.gz``, STNet's ``*_stdata.tsv.gz``). The spot file gives each spot's
    centre in image pixels, in one of the layouts:

    - the ST spot detector's selection table (HER2ST ``ST-spotfiles/NAME_selection.tsv``):
      columns ``x y new_x new_y pixel_x pixel_y selected``; only ``selected == 1`` spots (under
      tissue) are kept unless ``only_selected=False``;
    - STNet's ``spots_*.csv.gz``: indexed by ``"{x}x{y}"`` with pixel columns ``X`` and ``Y``.

    Parameters
    ----------
    image, counts, spots_file
        The H&E (JPEG or TIFF), the spots x genes counts, the spot positions.
    um_per_px
        Micrometres per image pixel; by default derived from the spot pitch (no ST file stores it).
    spot_diameter_um, pitch_um
        100 and 200 um on legacy ST arrays.
    only_selected
        Keep only spots the selection table marks as under tissue.
    sample_id
        Prefix of the image element's name (default: the image file's stem).

    Returns
    -------
    The SpatialData of :func:`pixnet.io.spots`.

    """
    pos = spots_file if isinstance(spots_file, pd.DataFrame) else _read_spot_file(Path(spots_file).expanduser())
    pos = _st_positions(pos, only_selected=only_selected, source=str(spots_file)[:200])
    return spots(
        image=image, counts=counts, positions=pos, spot_diameter_um=spot_diameter_um, um_per_px=um_per_px,
        pitch_um=pitch_um, x="pixel_x", y="pixel_y", sample_id=sample_id,
    )  # fmt: skip


def _read_spot_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: pass the spot file (HER2ST's NAME_selection.tsv, STNet's spots_*.csv)."
        )
    return pd.read_csv(path, sep=delimiter(first_line(path)))  # from its first line, not its name


def _st_positions(pos: pd.DataFrame, *, only_selected: bool, source: str) -> pd.DataFrame:
    """Spot centres ``pixel_x``, ``pixel_y`` indexed by ``"{x}x{y}"``, from either layout."""
    cols = set(pos.columns)
    if {"x", "y", "pixel_x", "pixel_y"} <= cols:  # the spot detector's selection table
        if only_selected and "selected" in cols:
            pos = pos[pos["selected"].astype(int) == 1]
        ids = pos["x"].round().astype(int).astype(str) + "x" + pos["y"].round().astype(int).astype(str)
        return pd.DataFrame({"pixel_x": pos["pixel_x"].to_numpy(), "pixel_y": pos["pixel_y"].to_numpy()}, index=ids)
    first = pos.columns[0]
    if {"X", "Y"} <= cols:  # STNet: the id in the first (unnamed) column or the index
        index = pos[first].astype(str) if first not in ("X", "Y") else pos.index.astype(str)
        if not index.str.fullmatch(r"\d+x\d+").all():
            raise ValueError(f"The spot ids of {source} are not of the form '{{x}}x{{y}}' (e.g. {list(index[:3])}).")
        return pd.DataFrame(
            {"pixel_x": pos["X"].to_numpy(np.float64), "pixel_y": pos["Y"].to_numpy(np.float64)},
            index=np.asarray(index),
        )
    raise ValueError(
        f"{source} is not a legacy ST spot file: it has columns {list(pos.columns)[:8]}; expected "
        "'x y pixel_x pixel_y [selected]' (ST spot detector, HER2ST) or an id column with 'X Y' (STNet). "
        "For other layouts use pixnet.io.spots(..., positions=..., x=..., y=...)."
    )
