"""Measurement operators (re-exported from :mod:`afdps.engine.ops`)."""
from .engine.ops import *  # noqa: F401,F403
from .engine.ops import __all__  # noqa: F401
