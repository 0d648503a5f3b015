"""Baselines PixNet is compared with, behind the same verbs: the spot regressor and colour/texture features.

Importing this package registers each baseline's network with :mod:`pixnet.model`, so that
``fit(method="spot")`` trains it and :meth:`pixnet.PixNet.load` reads it back.
"""

from ..model import Method, register_method
from .spot import predict_spots, train_spots
from .spot_net import SpotRegressor

register_method("spot", Method(SpotRegressor, train=train_spots, predict=predict_spots))

__all__ = ["SpotRegressor"]
