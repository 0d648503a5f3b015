"""Models fitted on a SpatialData object, so that predict finds them without being told."""

from __future__ import annotations

import weakref

from spatialdata import SpatialData

from .._keys import UNS_KEY
from ..model import PixNet

# Models fitted on a SpatialData object, so that predict finds them without being told. A weak
# mapping: the model lives as long as the object; sdata.attrs records its config (and path, if saved).
_MODELS: weakref.WeakKeyDictionary[SpatialData, dict[str, PixNet]] = weakref.WeakKeyDictionary()


def record_model(sdata: SpatialData, model: PixNet, key: str, path: str | None = None) -> None:
    """Remember ``model`` as fitted on ``sdata`` under ``key``."""
    _MODELS.setdefault(sdata, {})[key] = model
    models = dict(sdata.attrs.get(UNS_KEY, {}).get("models", {}))
    models[key] = {"config": model.config.to_dict(), "path": path}
    sdata.attrs[UNS_KEY] = {**sdata.attrs.get(UNS_KEY, {}), "models": models, "last_model": key}


def find_model(sdata: SpatialData, key: str | None = None) -> PixNet:
    """The model recorded by the last :func:`pixnet.tl.fit` on ``sdata`` (or under ``key``)."""
    attrs = sdata.attrs.get(UNS_KEY, {})
    key = key or attrs.get("last_model")
    if key is None:
        raise ValueError(
            "No model was fitted on this SpatialData object: call pixnet.tl.fit(sdata) first, or pass model=..."
        )
    model = _MODELS.get(sdata, {}).get(key)
    if model is not None:
        return model
    path = attrs.get("models", {}).get(key, {}).get("path")
    if path:
        return PixNet.load(path)
    raise ValueError(
        f"The model {key!r} fitted on this SpatialData is not in memory and was not saved: pass model=... "
        "(fit with model_dir=... to keep it)."
    )
