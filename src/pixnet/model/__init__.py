"""PixNet in pure PyTorch: encoder, decoder, head, aggregation into spots, losses (no SpatialData here)."""

from .aggregate import Spots, aggregate, spot_weights
from .config import ModelConfig
from .encoder import build_encoder, load_checkpoint
from .losses import log_normalize, mse_pcc, pcc_loss, pearson_per_gene, poisson
from .network import DFFN, DecoderStage, PixNetModule
from .pixnet import PixNet

__all__ = [
    "DFFN",
    "DecoderStage",
    "ModelConfig",
    "PixNet",
    "PixNetLightning",
    "PixNetModule",
    "SpotLightning",
    "Spots",
    "aggregate",
    "build_encoder",
    "load_checkpoint",
    "log_normalize",
    "mse_pcc",
    "pcc_loss",
    "pearson_per_gene",
    "poisson",
    "spot_weights",
]


def __getattr__(name: str):
    # the training modules import lightning (~90 MB): only when training asks for them
    if name in ("PixNetLightning", "SpotLightning"):
        from . import lightning

        return getattr(lightning, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
