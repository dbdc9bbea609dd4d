"""Diffusion priors (re-exported from :mod:`afdps.engine.priors`)."""
from .engine.priors import *  # noqa: F401,F403
from .engine.priors import __all__  # noqa: F401
