"""Plots in scanpy's style (``ax=``, ``show=``, ``save=``; they return the axes)."""

from .expression import compare, expression
from .maps import map
from .scores import scores, training

__all__ = ["compare", "expression", "map", "scores", "training"]
