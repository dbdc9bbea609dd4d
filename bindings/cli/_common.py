"""Helpers shared by the commands."""
from __future__ import annotations

import shlex
import sys

__all__ = ["command_line"]


def command_line() -> str:
    """The command line of this process, as ``afdps ...`` (recorded in checkpoints' metadata)."""
    return "afdps " + " ".join(shlex.quote(a) for a in sys.argv[1:])
