"""Baselines (re-exported from :mod:`afdps.engine.baselines`)."""
from afdps.engine.baselines import *  # noqa: F401,F403
from afdps.engine.baselines import __all__  # noqa: F401
