"""Render a layout as an H&E image, tile by tile (Beer-Lambert mixing of two stains)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ._layout import Layout
from ._programme import Programme
from ._raster import rasterise

# Ruifrok & Johnston's optical density vectors of haematoxylin and eosin (RGB).
_HEMATOXYLIN = np.array([0.650, 0.704, 0.286])
_EOSIN = np.array([0.072, 0.990, 0.105])
_MARGIN = 16  # pixels rendered around a tile so that blurs are seamless


@dataclass(frozen=True)
class Stain:
    """Colour of a slide's stains: each slide of a real study differs a little."""

    hematoxylin: np.ndarray
    eosin: np.ndarray
    h_strength: float = 1.0
    e_strength: float = 1.0
    background: float = 0.96

    @classmethod
    def draw(cls, variation: float, seed: int) -> Stain:
        """The reference stain perturbed by ``variation`` (0 = reference, 1 = strong batch effect)."""
        if variation <= 0:
            return cls(_HEMATOXYLIN, _EOSIN)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 41]))
        h = np.clip(_HEMATOXYLIN + rng.normal(0, 0.08 * variation, 3), 0.05, None)
        e = np.clip(_EOSIN + rng.normal(0, 0.08 * variation, 3), 0.02, None)
        return cls(
            h / np.linalg.norm(h),
            e / np.linalg.norm(e),
            float(np.exp(rng.normal(0, 0.15 * variation))),
            float(np.exp(rng.normal(0, 0.15 * variation))),
            float(np.clip(0.96 + rng.normal(0, 0.02 * variation), 0.85, 1.0)),
        )


def _hash_noise(rows: np.ndarray, cols: np.ndarray, seed: int) -> np.ndarray:
    """Standard-normal-ish noise that depends only on the global pixel position (seamless tiles)."""
    h = rows.astype(np.uint64) * np.uint64(0x9E3779B1) + cols.astype(np.uint64) * np.uint64(0x85EBCA77)
    h ^= np.uint64((seed * 0xC2B2AE3D) & 0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    h *= np.uint64(0x2C1B3C6D)
    h ^= h >> np.uint64(12)
    h *= np.uint64(0x297A2D39)
    h ^= h >> np.uint64(15)
    u = (h & np.uint64(0xFFFFFF)).astype(np.float32) / np.float32(0x1000000)
    return (u - 0.5) * np.float32(3.4641)


def render_tile(
    layout: Layout, programme: Programme, stain: Stain, *, y0: int, x0: int, h: int, w: int, um_per_px: float, seed: int
) -> np.ndarray:
    """RGB uint8 pixels ``[y0:y0+h, x0:x0+w]`` of the slide image."""
    m = _MARGIN
    hh, ww = h + 2 * m, w + 2 * m
    origin = np.array([(x0 - m) * um_per_px, (y0 - m) * um_per_px])
    labels, nucleus = rasterise(layout, (hh, ww), origin, np.array([um_per_px, 0.0]), np.array([0.0, um_per_px]))
    rows, cols = np.mgrid[y0 - m : y0 - m + hh, x0 - m : x0 - m + ww]
    xu, yu = (cols + 0.5) * um_per_px, (rows + 0.5) * um_per_px
    tissue, region = layout.tissue_at(xu, yu), layout.region_at(xu, yu)
    fine = ndimage.gaussian_filter(_hash_noise(rows, cols, seed), 0.8)
    coarse = ndimage.gaussian_filter(_hash_noise(rows, cols, seed + 1), 4.0) * 4.0
    streak = ndimage.gaussian_filter(_hash_noise(rows, cols, seed + 2), (1.0, 5.0)) * 3.0

    types = programme.cell_types
    ecm = np.array([r.ecm_eosin for r in programme.regions], np.float32)[region]
    fib = np.array([r.fibres for r in programme.regions], np.float32)[region]
    e_od = np.where(tissue, ecm * (1 + fib * (0.35 * streak + 0.25 * coarse) + 0.15 * fine), 0.0).astype(np.float32)
    h_od = np.where(tissue, 0.04 + 0.02 * coarse, 0.0).astype(np.float32)

    cell = labels > 0
    ctype = np.zeros_like(labels)
    ctype[cell] = layout.cells["type"][labels[cell] - 1]
    eos = np.array([t.eosin for t in types], np.float32)[ctype]
    hem = np.array([t.hematoxylin for t in types], np.float32)[ctype]
    e_od = np.where(cell, eos * (1 + 0.18 * fine + 0.1 * coarse), e_od)
    h_od = np.where(cell, 0.07, h_od)
    chromatin = ndimage.gaussian_filter(_hash_noise(rows, cols, seed + 3), 0.6) * 1.6
    h_od = np.where(nucleus, hem * (1 + 0.28 * chromatin), h_od)
    e_od = np.where(nucleus, 0.10, e_od)
    # Membranes: the rim of every cell is a little darker; adipocytes are nothing but rim.
    edge = cell & (
        (labels != np.roll(labels, 1, 0)) | (labels != np.roll(labels, -1, 0))
        | (labels != np.roll(labels, 1, 1)) | (labels != np.roll(labels, -1, 1))
    )  # fmt: skip
    membrane = np.array([t.membrane for t in types])[ctype] & cell
    edge = ndimage.binary_dilation(edge) & cell
    e_od = np.where(edge, np.where(membrane, 0.50, e_od * 1.25), e_od)

    od = h_od[..., None] * stain.h_strength * stain.hematoxylin + e_od[..., None] * stain.e_strength * stain.eosin
    rgb = 255.0 * stain.background * np.exp(-od - 0.03)
    rgb = ndimage.gaussian_filter(rgb, (0.7, 0.7, 0)) + 2.0 * _hash_noise(rows, cols, seed + 4)[..., None]
    return np.clip(rgb[m:-m, m:-m], 0, 255).astype(np.uint8)
