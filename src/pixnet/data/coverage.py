"""Whether the bins lie on the image: the check where slide and table meet (read, fit, predict)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from .image import element_to_cs, image_levels

logger = logging.getLogger(__name__)

#: Above this share of bins off the image, fit and predict refuse: the image is not the one the bins were placed on.
MOST_OFF = 0.5


@dataclass
class Coverage:
    """Which spots have their centre on the image, and what to tell the user when some do not."""

    on: np.ndarray  # (n,) bool
    message: str | None  # None when every spot is on the image

    @property
    def n_off(self) -> int:
        return int((~self.on).sum())

    @property
    def mostly_off(self) -> bool:
        return len(self.on) > 0 and self.n_off > MOST_OFF * len(self.on)


def image_extent(element, cs: str) -> np.ndarray:
    """``(x0, y0, x1, y1)`` of an image element's full-resolution level in coordinate system ``cs``."""
    level = image_levels(element)[0]
    to_cs = element_to_cs(level, cs, "The image")
    corners = np.array([[0, 0, 1], [level.sizes["x"], level.sizes["y"], 1]], np.float64) @ to_cs.T
    return np.concatenate([corners[:, :2].min(0), corners[:, :2].max(0)])


def coverage(
    centres: np.ndarray, extent: np.ndarray, *, what: str, image: str, cs: str, scales: dict[str, float] | None = None
) -> Coverage:
    """Spots whose centre lies on the image, and a message with the numbers and the fix when some do not.

    ``scales``: for images the slide image might have been confused with (``tissue_hires_image``), the
    factor from their pixels to the coordinate system; the message names the one that explains the mismatch.
    """
    xy = np.asarray(centres, np.float64)
    x0, y0, x1, y1 = extent
    on = (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1) if len(xy) else np.ones(0, bool)
    if on.all():
        return Coverage(on, None)
    lo, hi = xy.min(0), xy.max(0)
    n_off = int((~on).sum())
    msg = (
        f"{n_off} of {len(xy)} {what} ({100 * n_off / len(xy):.0f}%) lie beyond the image {image!r}: it spans "
        f"x {x0:.0f}-{x1:.0f}, y {y0:.0f}-{y1:.0f} in coordinate system {cs!r}, the bins reach "
        f"x {lo[0]:.0f}-{hi[0]:.0f}, y {lo[1]:.0f}-{hi[1]:.0f}. {_hint(xy, extent, scales or {}, cs)}"
    )
    return Coverage(on, msg)


def _hint(xy: np.ndarray, extent: np.ndarray, scales: dict[str, float], cs: str) -> str:
    """Which image this looks like and how to fix it (the image that would hold the bins)."""
    x0, y0, x1, y1 = extent
    for name, factor in scales.items():
        if factor > 1.05 or factor < 0.95:  # the image scaled by `factor` would hold every bin
            sx1, sy1 = x0 + (x1 - x0) * factor, y0 + (y1 - y0) * factor
            inside = (xy[:, 0] < sx1) & (xy[:, 1] < sy1) & (xy[:, 0] >= x0) & (xy[:, 1] >= y0)
            if inside.mean() > 0.99 and (xy[:, 0].max() - x0) > 0.3 * (sx1 - x0):
                return (
                    f"The image looks like {name} ({1 / factor:.4g} of full resolution): pass the full-resolution "
                    f"image (fullres_image_file=... for pixnet.io.visium_hd), or place this one on the bins with "
                    f"set_transformation(image, Scale([{factor:.4g}, {factor:.4g}], axes=('x', 'y')), {cs!r})."
                )
    reach = max((xy[:, 0].max() - x0) / max(x1 - x0, 1e-9), (xy[:, 1].max() - y0) / max(y1 - y0, 1e-9))
    if reach > 1.2:
        return (
            f"The bins reach {reach:.2f}x the image's size: is it a downscaled copy? Pass the full-resolution "
            f"image the bins were registered to, or scale this one by about {reach:.3g}."
        )
    return "Bins beyond the image edge have no pixels under them; they are marked in obs['pixnet_on_image']."


def check_coverage(cov: Coverage, *, action: str, then: str, refuse: bool = True) -> None:
    """Refuse (``refuse`` and most spots off) or warn with the numbers; silent when every spot is on the image."""
    if cov.message is None:
        return
    if refuse and cov.mostly_off:
        raise ValueError(f"{cov.message} pixnet will not {action} bins with no image under them.")
    warnings.warn(f"{cov.message} {then}", stacklevel=3)


def other_image_scales(sdata, image: str, cs: str) -> dict[str, float]:
    """For each other image of ``sdata`` as large as ``image``: its scale into ``cs`` over ``image``'s."""
    level = image_levels(sdata.images[image])[0]
    size = np.array([level.sizes["x"], level.sizes["y"]])
    mine = abs(element_to_cs(level, cs)[0, 0])
    out = {}
    for name, element in sdata.images.items():
        other = image_levels(element)[0]
        if name == image or np.abs(np.array([other.sizes["x"], other.sizes["y"]]) - size).max() > 2:
            continue
        try:
            out[name] = abs(element_to_cs(other, cs)[0, 0]) / mine
        except ValueError:
            continue
    return out
