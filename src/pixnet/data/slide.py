"""What a verb's call refers to: the slide image, its coordinate system and scale, the table.

The SpatialData layer every verb reads slides through.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

from spatialdata import SpatialData
from spatialdata.transformations import Identity, get_transformation

from .._keys import UNS_KEY, bin_table_name, is_bin_table
from .bins import TableSpots
from .coverage import Coverage, check_coverage, coverage, image_extent, other_image_scales
from .grids import table_grid
from .image import SlideImage

logger = logging.getLogger(__name__)


@dataclass
class Slide:
    """A SpatialData object with the image pixnet reads and the scale of its coordinate system."""

    sdata: SpatialData
    image: str
    cs: str
    um_per_px: float  # micrometres per unit of the coordinate system

    def coverage(self, centres, *, what: str) -> Coverage:
        """Which of these centres (in ``cs``) lie on the image, with the numbers and the fix when some do not."""
        extent = image_extent(self.sdata.images[self.image], self.cs)
        scales = other_image_scales(self.sdata, self.image, self.cs)
        return coverage(centres, extent, what=what, image=self.image, cs=self.cs, scales=scales)

    def working_image(self, um_per_px: float) -> SlideImage:
        """The image on a working grid of ``um_per_px``."""
        return SlideImage(
            self.sdata.images[self.image], cs=self.cs, cs_um_per_px=self.um_per_px, work_um_per_px=um_per_px
        )


def on_image(slide: Slide, ts: TableSpots, *, what: str) -> TableSpots:
    """The spots of ``ts`` on the slide image, for training: refuses when most are off it, warns when some are."""
    cov = slide.coverage(ts.spots.centres, what=what)
    check_coverage(
        cov, action="train on", then=f"The {cov.n_off} bins off the image are left out of training; "
        "pass the image they were registered to, to use them."
    )  # fmt: skip
    if not cov.n_off:
        return ts
    logger.info("training on %d of %d %s (%d off the image)", cov.on.sum(), len(cov.on), what, cov.n_off)
    return TableSpots(ts.table[cov.on], ts.spots.subset(cov.on), ts.region, ts.grid)


def resolve_slide(sdata: SpatialData, *, image: str | None = None, um_per_px: float | None = None) -> Slide:
    """The slide image and its scale, from arguments, what :mod:`pixnet.io` recorded in ``sdata.attrs``, or the data.

    A SpatialData made by another reader (spatialdata-io, a store read back, sopa) has no record:
    the image is its ``*_full_image`` (or its only image), and the scale comes from its Visium HD
    bins (their known size over their pitch on the image).
    """
    if not isinstance(sdata, SpatialData):
        raise TypeError(
            f"Expected a SpatialData object, got {type(sdata).__name__}. Read data with pixnet.io.visium_hd."
        )
    attrs = sdata.attrs.get(UNS_KEY, {})
    name, cs = image_and_cs(sdata, image=image)
    given = um_per_px or attrs.get("um_per_px")
    scale = given or _bins_um_per_px(sdata, cs)
    if given:
        _check_scale(sdata, cs, float(given))
    if scale is None:
        raise ValueError(
            "The image's micrometres per pixel are unknown: pass um_per_px=... "
            "(a 40x scan is about 0.25, 20x about 0.5)."
        )
    if not scale > 0:
        raise ValueError(f"um_per_px must be positive, got {scale}.")
    return Slide(sdata, name, cs, float(scale))


def image_and_cs(sdata: SpatialData, *, image: str | None = None, record: dict | None = None) -> tuple[str, str]:
    """The H&E element's name and the coordinate system pixnet works in.

    From the arguments, a prediction's ``record`` (its table's ``uns["pixnet"]``), what
    :mod:`pixnet.io` recorded in ``sdata.attrs``, or the data: spatialdata-io's ``*_full_image``
    (or the only image) and the coordinate system the image is in as it is (an identity), else its first.

    Raises
    ------
    KeyError, ValueError
        The image named is not there; which image is the H&E cannot be told.

    """
    record, attrs = record or {}, sdata.attrs.get(UNS_KEY, {})
    name = image or record.get("image") or attrs.get("image") or _default_image(sdata)
    if name not in sdata.images:
        raise KeyError(f"No image {name!r} in the SpatialData object (images: {sorted(sdata.images)}).")
    cs = record.get("coordinate_system") or attrs.get("coordinate_system")  # what pixnet recorded
    if cs is None:
        transformations = get_transformation(sdata.images[name], get_all=True)
        cs = next((k for k, t in transformations.items() if isinstance(t, Identity)), next(iter(transformations)))
    return name, cs


def _default_image(sdata: SpatialData) -> str:
    """The full-resolution H&E: spatialdata-io's ``*_full_image``, or the only image."""
    candidates = list(sdata.images)
    full = [k for k in candidates if k.endswith("_full_image")]
    if len(full) == 1:
        return full[0]
    if len(candidates) != 1:
        raise ValueError(
            f"Which image is the H&E? The SpatialData has images {candidates}; pass image='...'."
            if candidates
            else "The SpatialData object has no image: pixnet predicts from the H&E image. Add one (Image2DModel)."
        )
    return candidates[0]


def _check_scale(sdata: SpatialData, cs: str, um_per_px: float) -> None:
    """Warn when the Visium HD bins measure another micrometres per pixel than the one given or recorded."""
    measured = _bins_um_per_px(sdata, cs, measured=True)
    if measured is not None and abs(measured / um_per_px - 1) > 0.05:
        warnings.warn(
            f"The image is taken to have {um_per_px:.4g} um per pixel, but the Visium HD bins measure "
            f"{measured:.4g} (their size over their pitch in {cs!r}). If the bins are right, pass "
            f"um_per_px={measured:.4g}; the network would otherwise see the tissue at the wrong magnification.",
            stacklevel=3,
        )


def _bins_um_per_px(sdata: SpatialData, cs: str, *, measured: bool = False) -> float | None:
    """Micrometres per ``cs`` unit from the Visium HD bins of a table (their size over their pitch)."""
    for name in sorted(sdata.tables):
        try:
            grid = table_grid(sdata, name, cs)
        except (KeyError, ValueError):  # a table that annotates nothing, or lives elsewhere
            continue
        if grid is not None:
            value = grid.bin_size_um / grid.side_px if measured else grid.um_per_px
            logger.info("micrometres per pixel from the %g um bins of %r: %.4f", grid.bin_size_um, name, value)
            return value
    return None


def resolve_table(
    sdata: SpatialData, *, bin_size: float | None, table: str | None, default: float | None = None
) -> str:
    """The table named by ``table``, or the Visium HD table of ``bin_size`` um bins.

    With neither, the table a reader recorded in ``sdata.attrs["pixnet"]["table"]`` (the spots of
    :func:`pixnet.io.spots`), else the bins of ``default`` um.
    """
    if table is None and bin_size is None:
        table = sdata.attrs.get(UNS_KEY, {}).get("table")
    if table is not None:
        if table not in sdata.tables:
            raise KeyError(f"No table {table!r} in the SpatialData object (tables: {sorted(sdata.tables)}).")
        return table
    size = bin_size if bin_size is not None else default
    if size is None:
        raise ValueError("Pass bin_size=... (for Visium HD bins) or table=... (any table annotating shapes).")
    name = bin_table_name(size)
    if name not in sdata.tables:
        have = sorted(t for t in sdata.tables if is_bin_table(t))
        raise KeyError(
            f"No table of {size:g} um bins ({name!r}); this SpatialData has {have or sorted(sdata.tables)}. "
            "Read the run with pixnet.io.visium_hd(..., bin_sizes=...), or pass table=..."
        )
    return name
