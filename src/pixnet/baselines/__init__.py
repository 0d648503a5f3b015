"""Baselines PixNet is compared with, behind the same verbs: the spot regressor and colour/texture features.

Importing this package registers each baseline's network with :mod:`pixnet.model`, so that
``fit(method="spot")`` trains it and :meth:`pixnet.PixNet.load` reads it back.
"""

from ..model import register_network
from .spot_net import SpotRegressor

register_network("spot", SpotRegressor)

__all__ = ["SpotRegressor"]
