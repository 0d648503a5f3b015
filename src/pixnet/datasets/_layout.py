"""Tissue layout of a synthetic slide: tissue outline, regions and cells, in micrometres."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ._jit import lazy_njit
from ._programme import Programme

FIELD_UM = 4.0  # resolution of the coarse fields (tissue mask, regions, orientation)


@dataclass(frozen=True)
class Layout:
    """Everything drawn on a slide, in micrometres of the slide (x right, y down)."""

    extent_um: float  # the slide is [0, extent_um]^2
    tissue_field: np.ndarray  # (n, n) on the FIELD_UM grid: tissue where > 0
    region_fields: np.ndarray  # (n_regions, n, n): the region is the arg-max
    cells: dict[str, np.ndarray]  # per-cell arrays, see `_place_cells`

    def _sample(self, field: np.ndarray, x_um, y_um) -> np.ndarray:
        coords = [np.asarray(y_um, np.float32) / FIELD_UM - 0.5, np.asarray(x_um, np.float32) / FIELD_UM - 0.5]
        return ndimage.map_coordinates(field, coords, order=1, mode="nearest")

    def tissue_at(self, x_um, y_um) -> np.ndarray:
        """Whether points lie on the tissue (edges interpolated, so outlines are smooth)."""
        return self._sample(self.tissue_field, x_um, y_um) > 0

    def region_at(self, x_um, y_um) -> np.ndarray:
        """Region index of points."""
        return np.argmax(np.stack([self._sample(f, x_um, y_um) for f in self.region_fields]), axis=0).astype(np.int8)


def _smooth_noise(rng: np.random.Generator, n: int, sigma_um: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma_um / FIELD_UM, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def make_layout(programme: Programme, *, extent_um: float, capture: tuple[float, float], seed: int) -> Layout:
    """Draw tissue outline, regions and cells for a slide of ``extent_um`` micrometres.

    ``capture`` is the (start, end) of the capture area along both axes: tissue is placed so
    that it fills most of it, as a real section on a Visium HD slide does.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 29]))
    n = int(np.ceil(extent_um / FIELD_UM))
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * FIELD_UM
    c0, c1 = capture
    centre, half = (c0 + c1) / 2, (c1 - c0) / 2
    # A blob whose edge wanders: radial falloff plus large-scale noise, with a few lumens.
    radius = np.hypot((xx - centre) / half, (yy - centre) / half)
    scale = max(half, 200.0)
    outline = 1.05 - radius + 0.18 * _smooth_noise(rng, n, 0.35 * scale)
    tissue_field = np.minimum(outline, 2.6 - _smooth_noise(rng, n, 12.0)).astype(np.float32)  # lumens are holes
    tissue = tissue_field > 0
    # Regions: the arg-max of smooth fields, each with its own grain size.
    grains = [0.30, 0.22, 0.10, 0.18]
    fields = [_smooth_noise(rng, n, g * scale + 40.0) for g in grains[: len(programme.regions)]]
    biases = np.array([0.35, 0.25, -0.35, -0.15])[: len(fields)]
    region_fields = (np.stack(fields) + biases[:, None, None]).astype(np.float32)
    region = np.argmax(region_fields, axis=0).astype(np.int8)
    flow = np.pi * _smooth_noise(rng, n, 60.0)
    cells = _place_cells(programme, tissue, region, flow, rng)
    return Layout(extent_um, tissue_field, region_fields, cells)


def _place_cells(programme: Programme, tissue, region, flow, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = tissue.shape[0]
    types = programme.cell_types
    type_index = {t.name: i for i, t in enumerate(types)}
    areas = np.array([np.pi * t.cell_um**2 for t in types])
    region_area = np.bincount(region[tissue].ravel(), minlength=len(programme.regions)) * FIELD_UM**2
    # Enough candidates per region to reach its packing, with some to spare for rejections.
    xs, ys, ts = [], [], []
    for r, reg in enumerate(programme.regions):
        names = list(reg.mixture)
        p = np.array([reg.mixture[k] for k in names])
        mean_area = float(p @ areas[[type_index[k] for k in names]])
        m = int(3.0 * reg.packing * region_area[r] / mean_area) + 1
        cand = np.flatnonzero((region == r) & tissue)
        if len(cand) == 0:
            continue
        pick = cand[rng.integers(0, len(cand), m)]
        ys.append((pick // n + rng.random(m)) * FIELD_UM)
        xs.append((pick % n + rng.random(m)) * FIELD_UM)
        ts.append(np.array([type_index[k] for k in names])[rng.choice(len(names), m, p=p)])
    if not xs:
        raise ValueError("The synthetic tissue is empty; use a larger size_um.")
    x, y, t = np.concatenate(xs), np.concatenate(ys), np.concatenate(ts)
    order = rng.permutation(len(x))
    x, y, t = x[order], y[order], t[order]
    size = np.array([types[k].cell_um for k in t]) * rng.lognormal(0, 0.12, len(t))
    i, j = (y / FIELD_UM).astype(np.int64), (x / FIELD_UM).astype(np.int64)
    reg = region[i, j]
    budget = np.array([r.packing for r in programme.regions]) * region_area
    keep = _accept(x, y, size, reg.astype(np.int64), np.pi * size**2, budget, 0.82)
    x, y, t, size, reg = x[keep], y[keep], t[keep], size[keep], reg[keep]
    elong = np.array([types[k].elongation for k in t]) * rng.lognormal(0, 0.1, len(t))
    aligned = np.isin(t, [type_index.get("fibroblast", -1), type_index.get("endothelial", -1)])
    theta = np.where(aligned, flow[i[keep], j[keep]] + rng.normal(0, 0.25, len(t)), rng.uniform(0, np.pi, len(t)))
    nuc = np.array([types[k].nucleus_um for k in t]) / np.array([types[k].cell_um for k in t]) * size
    nuc *= rng.lognormal(0, 0.1, len(t))
    # Plasma cells and adipocytes carry their nucleus off centre.
    ecc = np.array([0.45 if types[k].name in ("plasma", "adipocyte") else 0.08 for k in t])
    phi = rng.uniform(0, 2 * np.pi, len(t))
    off = ecc * (size - nuc)
    root = np.sqrt(elong)
    return {
        "x": x,
        "y": y,
        "type": t.astype(np.int16),
        "region": reg.astype(np.int8),
        "a": size * root,  # body semi-axes
        "b": size / root,
        "na": nuc * np.sqrt(root),  # nucleus semi-axes, less elongated than the body
        "nb": nuc / np.sqrt(root),
        "theta": theta,
        "nx": off * np.cos(phi),
        "ny": off * np.sin(phi),
        "scale": rng.lognormal(-0.03, 0.25, len(t)),  # cell-to-cell variation not visible in the image
    }


@lazy_njit
def _accept(x, y, radius, reg, area, budget, overlap):  # pragma: no cover - compiled
    """Random sequential adsorption: keep a candidate if it does not overlap earlier ones."""
    n = len(x)
    cell = 8.0
    rmax = radius.max()
    nx = int(x.max() / cell) + 2
    ny = int(y.max() / cell) + 2
    head = -np.ones(nx * ny, np.int64)
    nxt = -np.ones(n, np.int64)
    used = np.zeros(len(budget))
    keep = np.zeros(n, np.bool_)
    for k in range(n):
        r = reg[k]
        if used[r] >= budget[r]:
            continue
        reach = int((radius[k] + rmax) * overlap / cell) + 1
        ci, cj = int(y[k] / cell), int(x[k] / cell)
        ok = True
        for di in range(-reach, reach + 1):
            ii = ci + di
            if ii < 0 or ii >= ny or not ok:
                continue
            for dj in range(-reach, reach + 1):
                jj = cj + dj
                if jj < 0 or jj >= nx:
                    continue
                m = head[ii * nx + jj]
                while m >= 0:
                    d2 = (x[k] - x[m]) ** 2 + (y[k] - y[m]) ** 2
                    lim = overlap * (radius[k] + radius[m])
                    if d2 < lim * lim:
                        ok = False
                        break
                    m = nxt[m]
                if not ok:
                    break
        if ok:
            keep[k] = True
            used[r] += area[k]
            b = ci * nx + cj
            nxt[k] = head[b]
            head[b] = k
    return keep
