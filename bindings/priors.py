"""Diffusion priors (re-exported from :mod:`afdps.engine.priors`)."""
from afdps.engine.priors import *  # noqa: F401,F403
from afdps.engine.priors import __all__  # noqa: F401
