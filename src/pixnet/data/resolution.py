"""Defaults that follow from the spots' size (working resolution, tile, loss), so users never have to choose them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..geometry import Spots

#: Bins up to this size (Visium HD) are seen at FINEST_UM_PER_PX in BIN_TILE_PX tiles: the settings
#: the synthetic accuracy benchmark was tuned with (a 16 um bin is 32 px, a nucleus ~15 px).
FINE_BIN_UM = 16.0
FINEST_UM_PER_PX = 0.5
BIN_TILE_PX = 256
#: Larger spots (Visium's 55 um, legacy ST's 100 um) are seen at a coarser resolution, about this many
#: pixels across, in SPOT_TILE_PX tiles, which keeps training affordable on a CPU: on HER2ST (100 um
#: spots) a step took ~14 s at 2 um/px in 256 px tiles and ~8 s at 4 um/px in 128 px tiles, with the
#: same validation PCC after 3 epochs (0.18 and 0.19; benchmarks/RESULTS.md, "Real tissue").
SPOT_PX = 25.0
SPOT_TILE_PX = 128


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

    Bins up to 16 um: 0.5 um/px in 256 px tiles. Larger spots: about 25 px across (100 um spots at
    4 um/px, 55 um at 2.2) in 128 px tiles. ``um_per_px`` (if given) is kept, and the tile grows to
    the next multiple of 32 that holds a spot with ``context_px`` on each side.

    Returns
    -------
    ``(um_per_px, tile_px)``.

    """
    small = _is_fine(diameter_um)
    if um_per_px is None:
        um_per_px = FINEST_UM_PER_PX if small else max(FINEST_UM_PER_PX, diameter_um / SPOT_PX)
    spot_px = diameter_um / um_per_px * 1.05  # squares rotated by a degree or two reach a little further
    need = int(np.ceil((spot_px + 2 * context_px) / 32) * 32)
    return float(um_per_px), max(BIN_TILE_PX if small else SPOT_TILE_PX, need)


def default_loss(diameter_um: float, semantics: str = "density") -> str:
    """The training loss for spots ``diameter_um`` across, when ``fit(loss=None)``.

    Maps of normalised values (``"sum"``, ``"mean"``) are fitted with the paper's ``"mse_pcc"``.
    Density maps of bins up to 16 um: ``"poisson_pcc"``, which scored best at 2, 8 and 16 um on
    the synthetic accuracy benchmark. Larger spots (Visium, legacy ST): ``"mse_pcc"`` on the
    log-normalised values, which on real tissue (HER2ST, 100 um spots, leave-one-section-out)
    raised PCC@M from 0.281 / 0.246 to 0.300 / 0.274 on C3 / C5 and made gene-specific structure
    appear (PCC after the shared factor 0.17 / 0.12 to 0.24 / 0.22): the Poisson likelihood of
    absolute counts spends the few hundred spots on each spot's total, which differs between
    sections with capture efficiency, rather than on its composition (benchmarks/RESULTS.md).
    """
    if semantics != "density":
        return "mse_pcc"
    return "poisson_pcc" if _is_fine(diameter_um) else "mse_pcc"


def default_val_fraction(diameter_um: float, *, early_stopping: bool = False) -> float:
    """Share of the blocks held out for validation when ``fit(val_fraction=None)``.

    Bins up to 16 um (tens of thousands of them): 0.15, and the epoch with the best validation PCC
    is kept. Larger spots (a few hundred to a few thousand per slide): 0, train on every spot and
    keep the last epoch. On real tissue (HER2ST, 100 um spots, leave-one-section-out, 48 epochs,
    seed 0) training on every spot raised PCC@M on all four held-out sections, C2/C3/C4/C5
    0.268/0.300/0.326/0.274 to 0.279/0.306/0.339/0.289 (benchmarks/RESULTS.md, "Training on every
    spot"): with ~550 training spots, the 15% held out cost more than choosing the epoch gained.
    With ``early_stopping`` asked for, 0.15 whatever the size: stopping needs validation spots.
    """
    return 0.15 if early_stopping or _is_fine(diameter_um) else 0.0


def _is_fine(diameter_um: float) -> bool:
    """Bins of Visium HD's sizes: up to 16 um, allowing for the rounding of a measured geometry (16.000000000000004)."""
    return diameter_um <= FINE_BIN_UM * (1 + 1e-6)
