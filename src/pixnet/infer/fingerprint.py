"""Model fingerprints: a stored map is reused only when the very same model made it."""

from __future__ import annotations

import hashlib
import json

from spatialdata import SpatialData

from .._keys import UNS_KEY
from ..model import PixNet
from .mapimage import level0


def fingerprint(model: PixNet) -> str:
    """Hash of a model's config and weights: a stored map is reused only for the very same model."""
    h = hashlib.sha1(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for k, v in sorted(model.module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def check_free(sdata: SpatialData, names: dict, model: PixNet, *, overwrite: bool) -> dict | None:
    """Refuse to replace elements unless ``overwrite``; return a reusable map made by the same model."""
    for kind in ("table", "geometry"):
        if names[kind] in sdata and not overwrite:
            raise ValueError(
                f"{names[kind]!r} already exists in the SpatialData object; pass overwrite=True or another key_added."
            )
    name = names.get("map")
    if name is None or name not in sdata:
        return None
    info = sdata.attrs.get(UNS_KEY, {}).get("maps", {}).get(name, {})
    if info.get("model") == fingerprint(model):
        return {"array": level0(sdata.images[name]), **info, "region": tuple(info["region"])}
    if not overwrite:
        raise ValueError(f"{name!r} exists and was made by another model; pass overwrite=True or another key_added.")
    return None
