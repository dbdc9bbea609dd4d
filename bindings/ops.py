"""Measurement operators (re-exported from :mod:`afdps.engine.ops`)."""
from afdps.engine.ops import *  # noqa: F401,F403
from afdps.engine.ops import __all__  # noqa: F401
