"""``python -m afdps.cli``."""
import sys

from . import main

sys.exit(main())
