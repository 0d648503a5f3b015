"""Training tiles: image crops with the bins that lie inside them, their area weights and targets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from torch.utils.data import Dataset, Sampler

from ..geometry import Spots, spot_weights


@dataclass
class SlideData:
    """One slide (or one table of it) on the working grid: image, spots in working pixels, targets."""

    image: np.ndarray  # (H, W, 3) uint8
    spots: Spots  # working pixels
    counts: sparse.csr_matrix  # (n, C) float32
    totals: np.ndarray  # (n,) counts over all genes

    def __post_init__(self):
        if len(self.spots) != self.counts.shape[0]:
            raise ValueError("spots and counts differ in length.")
        self.extent = self.spots.extent()


@dataclass(frozen=True)
class TileSpec:
    """How tiles are cut: ``tile`` working pixels square, bins scored only ``context`` pixels from the edge."""

    tile: int = 256
    context: int = 16
    map_stride: int = 2
    supersample: int = 2

    def __post_init__(self):
        if self.tile % 32 or self.tile < 64:
            raise ValueError(f"tile must be a multiple of 32 and at least 64 pixels, got {self.tile}.")
        if self.tile % self.map_stride:
            raise ValueError("tile must be a multiple of map_stride.")


def spatial_split(centres: np.ndarray, *, block: float, val_fraction: float, seed: int) -> np.ndarray:
    """Validation mask from square blocks of side ``block`` (neighbouring bins share blocks, so no leak)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if val_fraction == 0 or len(centres) == 0:
        return np.zeros(len(centres), bool)
    ij = np.floor(centres / block).astype(np.int64)
    blocks, inverse = np.unique(ij, axis=0, return_inverse=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 71]))
    n_val = int(round(val_fraction * len(blocks)))
    n_val = min(max(n_val, 1), len(blocks) - 1) if len(blocks) > 1 else 0
    val_blocks = rng.permutation(len(blocks))[:n_val]
    return np.isin(inverse.ravel(), val_blocks)


class EpochSampler(Sampler[int]):
    """Indices ``epoch * n .. (epoch + 1) * n``: each epoch draws new tiles, reproducibly from the seed.

    A run resumed mid-epoch from a checkpoint continues with exactly the tiles the killed run
    had not yet trained on: ``position`` (set by the trainer) says which epoch and how many
    batches are done, and is read when the first index is drawn.
    """

    def __init__(self, n: int, batch_size: int = 1):
        self.n, self.batch_size, self.epoch = n, batch_size, 0
        self.position = None  # callable -> (epoch, batches already trained in it)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at the start of every epoch
        self.epoch = epoch

    def __iter__(self):
        def indices():
            epoch, done = self.position() if self.position is not None else (self.epoch, 0)
            yield from range(epoch * self.n + done * self.batch_size, (epoch + 1) * self.n)

        return indices()

    def __len__(self) -> int:
        return self.n


class _Tiles(Dataset):
    def __init__(self, slides: list[SlideData], spec: TileSpec):
        self.slides, self.spec = slides, spec

    def _item(self, s: int, y0: int, x0: int, candidates: np.ndarray, rng: np.random.Generator | None) -> dict:
        slide, t = self.slides[s], self.spec.tile
        img = _crop(slide.image, y0, x0, t)
        local = slide.spots.subset(candidates).scaled(1.0, (x0, y0))
        keep = _inside(local.centres, slide.extent[candidates], self.spec)
        idx = candidates[keep]
        m = t // self.spec.map_stride
        spot, pixel, weight = spot_weights(
            local.subset(keep).scaled(self.spec.map_stride), (m, m), supersample=self.spec.supersample
        )
        if rng is not None:
            img, pixel = _augment(img, pixel, m, rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),  # (3, T, T) uint8
            "spot": torch.from_numpy(spot),
            "pixel": torch.from_numpy(pixel),
            "weight": torch.from_numpy(weight),
            "counts": torch.from_numpy(slide.counts[idx].toarray()),  # (n, C)
            "totals": torch.from_numpy(slide.totals[idx]),
            "map_size": m,
        }


class TrainTiles(_Tiles):
    """Random tiles around training bins, with flips, rotations and colour jitter."""

    def __init__(
        self, slides, masks: list[np.ndarray], spec: TileSpec, *, n_tiles: int, seed: int, augment: bool = True
    ):
        super().__init__(slides, spec)
        self.train_idx = [np.flatnonzero(m) for m in masks]
        weights = np.array([len(i) for i in self.train_idx], np.float64)
        if weights.sum() == 0:
            raise ValueError("No training bins: the slide has no bins inside its tissue, or val_fraction is too large.")
        self.p = weights / weights.sum()
        self.n_tiles, self.seed, self.augment = n_tiles, seed, augment

    def __len__(self) -> int:
        return self.n_tiles

    def __getitem__(self, k: int) -> dict:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 97, int(k)]))
        s = int(rng.choice(len(self.slides), p=self.p))
        slide, t = self.slides[s], self.spec.tile
        anchor = self.train_idx[s][rng.integers(len(self.train_idx[s]))]
        cx, cy = slide.spots.centres[anchor]
        lo, hi = self.spec.context + slide.extent[anchor] + 1, t - self.spec.context - slide.extent[anchor] - 1
        lo, hi = min(lo, hi), max(lo, hi)  # the anchor bin lies wholly inside the scored window
        x0 = int(np.floor(cx - rng.uniform(lo, hi)))
        y0 = int(np.floor(cy - rng.uniform(lo, hi)))
        near = _near(slide, self.train_idx[s], y0, x0, t)
        return self._item(s, y0, x0, near, rng if self.augment else None)


class ValTiles(_Tiles):
    """Fixed overlapping tiles in which every validation bin is scored exactly once."""

    def __init__(self, slides, masks: list[np.ndarray], spec: TileSpec):
        super().__init__(slides, spec)
        self.items: list[tuple[int, int, int, np.ndarray]] = []
        for s, (slide, mask) in enumerate(zip(slides, masks)):
            left = np.flatnonzero(mask)
            if len(left) == 0:
                continue
            ext = float(slide.extent[left].max())
            stride = max(32, int(spec.tile - 2 * spec.context - 2 * ext - 2))
            lo = np.floor(slide.spots.centres[left].min(0) - ext - spec.context).astype(int)
            hi = np.ceil(slide.spots.centres[left].max(0) + ext + spec.context).astype(int)
            for y0 in range(lo[1], hi[1], stride):
                for x0 in range(lo[0], hi[0], stride):
                    inside = _fully_inside(slide, left, y0, x0, spec)
                    if inside.any():
                        self.items.append((s, y0, x0, left[inside]))
                        left = left[~inside]
            if len(left):  # bins larger than a tile's scoring window cannot be scored
                raise ValueError(f"{len(left)} validation bins do not fit in a {spec.tile} px tile; use a larger tile.")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict:
        s, y0, x0, idx = self.items[k]
        return self._item(s, y0, x0, idx, None)


def _near(slide: SlideData, idx: np.ndarray, y0: int, x0: int, t: int) -> np.ndarray:
    c = slide.spots.centres[idx]
    return idx[(c[:, 0] >= x0) & (c[:, 0] < x0 + t) & (c[:, 1] >= y0) & (c[:, 1] < y0 + t)]


def _fully_inside(slide: SlideData, idx: np.ndarray, y0: int, x0: int, spec: TileSpec) -> np.ndarray:
    return _inside(slide.spots.centres[idx] - (x0, y0), slide.extent[idx], spec)


def _inside(local: np.ndarray, extent: np.ndarray, spec: TileSpec) -> np.ndarray:
    """Which bins (centres in tile pixels, ``(n, 2)``) lie wholly inside the tile's scored window."""
    e = extent[:, None] - 1e-6  # tolerate the rounding of the grid's affine
    return ((local - e) >= spec.context).all(1) & ((local + e) <= spec.tile - spec.context).all(1)


def _crop(image: np.ndarray, y0: int, x0: int, t: int) -> np.ndarray:
    """A ``t`` x ``t`` crop, padded with white where it leaves the slide."""
    h, w = image.shape[:2]
    out = np.full((t, t, 3), 255, np.uint8)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + t), min(w, x0 + t)
    if ye > ys and xe > xs:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = image[ys:ye, xs:xe]
    return out


def _augment(img: np.ndarray, pixel: np.ndarray, m: int, rng: np.random.Generator):
    """Flip / rotate the image and move the bins' map pixels with it; jitter the stain."""
    i, j = np.divmod(pixel, m)
    if rng.random() < 0.5:
        img, j = img[:, ::-1], m - 1 - j
    if rng.random() < 0.5:
        img, i = img[::-1], m - 1 - i
    for _ in range(int(rng.integers(4))):  # np.rot90 moves pixel (i, j) to (m - 1 - j, i)
        img, i, j = np.rot90(img), m - 1 - j, i
    od = -np.log((img.astype(np.float32) + 1) / 256)
    od = od * rng.lognormal(0, 0.08, 3).astype(np.float32) + rng.normal(0, 0.02, 3).astype(np.float32)
    img = np.clip(256 * np.exp(-od) - 1, 0, 255).astype(np.uint8)
    return img, i * m + j


def collate(items: list[dict]) -> dict:
    """Stack tiles; offset each tile's spot and pixel indices into the batch."""
    m2 = items[0]["map_size"] ** 2
    spot, pixel, n = [], [], 0
    for b, it in enumerate(items):
        spot.append(it["spot"] + n)
        pixel.append(it["pixel"] + b * m2)
        n += len(it["counts"])
    return {
        "image": torch.stack([it["image"] for it in items]),
        "spot": torch.cat(spot),
        "pixel": torch.cat(pixel),
        "weight": torch.cat([it["weight"] for it in items]),
        "counts": torch.cat([it["counts"] for it in items]),
        "totals": torch.cat([it["totals"] for it in items]),
        "n_spots": n,
    }
