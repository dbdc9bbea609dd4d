"""Baselines (:mod:`afdps.engine.baselines`) with NumPy/CuPy measurements accepted: :func:`dps`."""
from .api import dps

__all__ = ["dps"]
