"""PixNet in pure PyTorch: encoder, decoder, head, aggregation into spots, losses (no SpatialData, no Lightning).

``model`` imports nothing else of pixnet: spots and their area weights come from
:mod:`pixnet.geometry` as arrays; training (Lightning) lives in :mod:`pixnet.train`.
"""

from .aggregate import aggregate
from .config import ModelConfig
from .decoder import DFFN, Decoder, DecoderStage
from .encoder import build_encoder, load_checkpoint
from .ensemble import ensemble
from .head import GeneHead
from .losses import log_normalize, mse_pcc, pcc_loss, pearson_per_gene, poisson
from .network import PixNetModule, forward_cropped
from .pixnet import Method, PixNet, method_of, register_method

__all__ = [
    "forward_cropped",
    "DFFN",
    "Decoder",
    "DecoderStage",
    "GeneHead",
    "Method",
    "ModelConfig",
    "PixNet",
    "PixNetModule",
    "aggregate",
    "build_encoder",
    "ensemble",
    "load_checkpoint",
    "log_normalize",
    "mse_pcc",
    "pcc_loss",
    "pearson_per_gene",
    "poisson",
    "method_of",
    "register_method",
]
