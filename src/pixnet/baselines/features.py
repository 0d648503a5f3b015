"""Hand-made image features of spots (colour and texture), for the baselines pixnet is compared with."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..geometry import Spots, spot_weights


def colour_texture_features(
    image: np.ndarray, spots: Spots, *, rings: tuple[float, ...] = (1.0, 2.0, 4.0)
) -> np.ndarray:
    """Colour and texture of each spot and its surroundings, for the ridge baseline.

    Per spot: mean and spread of RGB, of haematoxylin/eosin density and of edge strength,
    inside the spot and in concentric surroundings ``rings`` times its size.

    ``image`` is ``(H, W, 3)`` uint8 and ``spots`` in its pixels. Returns ``(n, n_features)``.
    """
    img = image.astype(np.float32) / 255.0
    od = -np.log(np.clip(img, 1 / 255, 1))
    hema = od @ np.array([0.65, 0.70, 0.29], np.float32)  # haematoxylin-like projection
    eos = od @ np.array([0.07, 0.99, 0.11], np.float32)
    grey = img.mean(-1)
    edges = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
    channels = np.concatenate([img, hema[..., None], eos[..., None], edges[..., None]], -1)  # (H, W, 6)
    flat = channels.reshape(-1, channels.shape[-1]).astype(np.float64)
    feats = []
    for r in rings:
        grown = Spots(
            spots.kind if spots.kind != "polygon" else "circle", spots.centres, spots.extent() * r, spots.angle
        )
        s, p, w = spot_weights(grown, image.shape[:2], supersample=1)
        area = np.maximum(np.bincount(s, w, minlength=len(spots)), 1e-9)[:, None]
        mean = np.stack([np.bincount(s, w * flat[p, k], minlength=len(spots)) for k in range(flat.shape[1])], 1) / area
        sq = (
            np.stack([np.bincount(s, w * flat[p, k] ** 2, minlength=len(spots)) for k in range(flat.shape[1])], 1)
            / area
        )
        feats += [mean, np.sqrt(np.maximum(sq - mean**2, 0))]
    return np.concatenate(feats, 1).astype(np.float32)
