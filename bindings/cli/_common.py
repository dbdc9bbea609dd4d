"""Helpers shared by the commands."""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys

__all__ = ["command_line", "positive_int", "nonneg_int", "seed_int", "positive_float", "nonneg_float", "snr_schedule", "format_snr",
           "unit_float", "fraction_float", "power_float", "DEFAULT_THREADS", "HelpFormatter"]

# Default torch CPU threads of the commands: half the cores, at most 8. Measured on this project's 2-core
# CPU with one other busy process: a tiny `afdps eval` took 189 s with torch's default (all cores, OpenMP
# threads spinning against the other process) and 15.5 s with one thread.
DEFAULT_THREADS = max(1, min(8, (os.cpu_count() or 2) // 2))


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option's help that does not state its default already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _number(kind, test, allowed):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value

    parse.__name__ = allowed  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
nonneg_int = _number(int, lambda v: v >= 0, "an integer >= 0")
seed_int = _number(int, lambda v: -2**63 <= v < 2**63, "an integer seed")
positive_float = _number(float, lambda v: v > 0, "a positive number")
nonneg_float = _number(float, lambda v: v >= 0, "a number >= 0")
unit_float = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
fraction_float = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
power_float = _number(float, lambda v: v >= 1, "a number >= 1")


def snr_schedule(text: str):
    """``--corrector-snr``: ``r`` (a float) or ``r_early,r_late`` (a pair: the first half of the steps, the rest)."""
    allowed = "a positive number r or a pair r_early,r_late of positive numbers"
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(parts) > 2 or not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
    return values[0] if len(values) == 1 else values


def format_snr(value) -> str:
    """``r`` or ``r_early,r_late``, as ``--corrector-snr`` takes it."""
    return ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"


def command_line() -> str:
    """The command line of this process, as ``afdps ...`` (recorded in checkpoints' metadata)."""
    return "afdps " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def add_fast_network(p) -> None:
    """``--fast-network``: the ADM network on its inference path (``load_prior(..., inference=True)``)."""
    p.add_argument("--fast-network", action="store_true",
                   help="run an ADM network on its inference path (ADMUNet.to_inference: bfloat16, channels-last, "
                   "fused kernels; on an H200 a forward is 3.3x a bfloat16-autocast one, error 1.1e-3 against "
                   "float64; the Tweedie potential's vector-Jacobian products run its unfused bfloat16 modules; "
                   "changes the last digits of the results)")
