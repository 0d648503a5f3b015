"""The working resolution and tile size for spots of a given size, so users never have to choose them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..model.aggregate import Spots

#: Working resolution for bins up to 16 um (Visium HD): a 16 um bin is 32 px, H&E nuclei ~15 px.
FINEST_UM_PER_PX = 0.5
#: Larger spots are seen at a coarser resolution so that one is about this many pixels across:
#: what a 16 um bin is at 0.5 um/px, and what keeps a few dozen spots in a tile on a CPU budget.
SPOT_PX = 32.0
DEFAULT_TILE_PX = 256


def spot_diameter_um(spots: Sequence[Spots], cs_um_per_px: Sequence[float]) -> float:
    """Median diameter (um) of the spots of several slides: circles' diameter, squares' side, polygons' extent."""
    sizes = []
    for s, um in zip(spots, cs_um_per_px):
        if len(s) == 0:
            continue
        half = s.extent() if s.kind == "polygon" else np.asarray(s.size)
        sizes.append(2 * float(np.median(half)) * um)
    if not sizes:
        raise ValueError("No spots to train on: every table is empty.")
    return float(np.median(sizes))


def working_resolution(
    diameter_um: float, *, um_per_px: float | None = None, context_px: int = 16
) -> tuple[float, int]:
    """Micrometres per working pixel and the training tile side for spots ``diameter_um`` across.

    ``um_per_px`` (if given) is kept; the tile is the default 256 px, or the next multiple of 32
    that holds a spot with ``context_px`` on each side (in ``2 x 2`` spot windows at least).

    Returns
    -------
    ``(um_per_px, tile_px)``.

    """
    if um_per_px is None:
        um_per_px = max(FINEST_UM_PER_PX, diameter_um / SPOT_PX)
    spot_px = diameter_um / um_per_px * 1.05  # squares rotated by a degree or two reach a little further
    need = int(np.ceil((spot_px + 2 * context_px) / 32) * 32)
    return float(um_per_px), max(DEFAULT_TILE_PX, need)
