"""Where the tissue is on an H&E image, for slides that come without measured bins."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu


def tissue_mask(image: np.ndarray, *, min_fraction: float = 0.001) -> np.ndarray:
    """Boolean mask of stained tissue on an RGB ``(H, W, 3)`` uint8 image (best at a low resolution).

    Stain saturates colour while glass stays grey or white: Otsu's threshold on saturation
    splits the two; small specks are removed and holes filled.
    """
    img = np.asarray(image, np.float32)
    if img.ndim != 3 or img.shape[-1] < 3:
        raise ValueError(f"tissue_mask expects an RGB image (H, W, 3); got shape {img.shape}.")
    sat = img[..., :3].max(-1) - img[..., :3].min(-1)
    if np.ptp(sat) < 1e-6:
        return np.zeros(sat.shape, bool)
    mask = sat > threshold_otsu(sat)
    mask = ndimage.binary_opening(mask, iterations=2)
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=3))
    labels, n = ndimage.label(mask)
    if n:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
        keep = np.flatnonzero(sizes >= min_fraction * mask.size) + 1
        mask = np.isin(labels, keep)
    return mask
