"""Networks (re-exported from :mod:`afdps.engine.models`): the ADM UNet and the digit classifier."""
from .engine.models import *  # noqa: F401,F403
from .engine.models import __all__  # noqa: F401
