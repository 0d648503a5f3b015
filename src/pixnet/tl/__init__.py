"""Tools: fit, predict and evaluate PixNet on SpatialData objects."""

from .evaluate import compare, evaluate, metrics
from .fit import fit
from .predict import predict
from .pretrain import pretrain

__all__ = ["compare", "evaluate", "fit", "metrics", "predict", "pretrain"]
