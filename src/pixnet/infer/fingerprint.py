"""Model fingerprints: a stored map is reused only when the very same model made it (config and weights)."""

from __future__ import annotations

import hashlib
import json

from ..model import PixNet


def fingerprint(model: PixNet) -> str:
    """Hash of a model's config and weights: a stored map is reused only for the very same model."""
    h = hashlib.sha1(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for k, v in sorted(model.module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
