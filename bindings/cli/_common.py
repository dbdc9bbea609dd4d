"""Helpers shared by the commands."""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from pathlib import Path

import torch

from ..engine.io import content_digest
from ..engine.sampler import CORRECTORS, MAX_SNR, RESAMPLINGS
from ..engine.validation import MAX_STEPS, MIN_SIGMA_Y
from ..shipped import SHIPPED_PRIORS, data_path, shipped_file

__all__ = ["command_line", "resolve_device", "threads_text", "add_sampler_extras", "positive_int", "nonneg_int",
           "seed_int", "positive_float", "nonneg_float", "snr_schedule", "steps_int", "sigma_float", "format_snr", "unit_float", "fraction_float", "open_fraction_float",
           "power_float", "DEFAULT_THREADS", "HelpFormatter", "prior_digest", "is_shipped_prior"]

# Default torch CPU threads of the commands: half the cores, at most 8. Measured on this project's 2-core
# CPU with one other busy process: a tiny `afdps eval` took 189 s with torch's default (all cores, OpenMP
# threads spinning against the other process) and 15.5 s with one thread.
DEFAULT_THREADS = max(1, min(8, (os.cpu_count() or 2) // 2))


def prior_digest(prior: str) -> str:
    """:func:`~afdps.engine.io.content_digest` of the checkpoint behind ``--prior`` (a shipped name or a path,
    loaded already): what a resumed run compares to notice a checkpoint replaced in place."""
    return content_digest(shipped_file(prior, SHIPPED_PRIORS, "prior") or Path(prior))


def is_shipped_prior(digest: str, name: str) -> bool:
    """Whether the checkpoint of ``digest`` (:func:`prior_digest`) is the shipped prior ``name``, under either
    its name or a path to the file (or a copy); ``False`` when the installation lacks that file."""
    path = data_path(SHIPPED_PRIORS[name])  # the package's file, whatever the working folder holds
    return path.is_file() and digest == content_digest(path)


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option's help that does not state its default already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings:
            return text
        if isinstance(action.default, tuple):  # as the option takes it: 0.1,0.2
            return f"{text} (default: {','.join(map(str, action.default))})"
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
seed_int = _number(int, lambda v: 0 <= v < 2**63, "an integer seed in [0, 2**63)")
positive_float = _number(float, lambda v: v > 0, "a positive number")
nonneg_float = _number(float, lambda v: v >= 0, "a number >= 0")
unit_float = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
fraction_float = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
open_fraction_float = _number(float, lambda v: 0 < v < 1, "a number in (0, 1)")
power_float = _number(float, lambda v: v >= 1, "a number >= 1")
# the sampler's own bounds, in the CLI's words (it named num_steps and corrector_snr, after loading the prior)
steps_int = _number(int, lambda v: 1 <= v <= MAX_STEPS, f"an integer in [1, {MAX_STEPS}]")
sigma_float = _number(float, lambda v: v >= MIN_SIGMA_Y, f"a number >= {MIN_SIGMA_Y:g} (below, 1 / sigma_y^2 nears "
                      "float32's largest number)")


def snr_schedule(text: str):
    """``--corrector-snr``: ``r`` (a float) or ``r_early,r_late`` (a pair: the first half of the steps, the rest)."""
    allowed = f"a positive number r or a pair r_early,r_late of positive numbers, each at most {MAX_SNR:g}"
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(parts) > 2 or not values or not all(math.isfinite(v) and 0 < v <= MAX_SNR for v in values):
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
    return values[0] if len(values) == 1 else values


def format_snr(value) -> str:
    """``r`` or ``r_early,r_late``, as ``--corrector-snr`` takes it."""
    return ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"


def resolve_device(text: str | None, local_rank: int | None = None):
    """``--device``: ``None`` is CUDA where torch sees a GPU, else the CPU; ``None`` and ``cuda`` mean
    ``cuda:<local_rank>`` under torchrun (each rank its own GPU: a bare ``cuda`` put every rank on GPU 0), and an
    explicit ``cuda:k`` is taken as given. A name torch does not know, or CUDA where torch sees none or not the
    device asked for, is bad input (``ValueError``)."""
    if text is None and not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        device = torch.device("cuda" if text is None else text)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"--device {text!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {text!r}: torch sees no CUDA device here (torch {torch.__version__}"
                             f"{', a CPU build' if torch.version.cuda is None else ''}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            asked = "the default device" if text is None else f"--device {text!r}"
            raise ValueError(f"{asked} ({device} for this process): torch sees "
                             f"{torch.cuda.device_count()} CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1} "
                             "(under torchrun: at most one rank per GPU, or name one with --device cuda:k)")
    elif device.type != "cpu":
        raise ValueError(f"--device {text!r}: afdps runs on cpu or cuda devices")
    return device


def threads_text(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def add_sampler_extras(p, resample: bool = True) -> None:
    """``--ess-threshold``, ``--corrector`` (and ``--resample``): the sampler's options that ``eval`` and
    ``restore`` share (``afdps.sample``'s defaults)."""
    p.add_argument("--ess-threshold", type=fraction_float, default=0.5,
                   help="the particle methods resample an image when its normalised ESS falls below this, in [0, 1] "
                   "(0: never; default: 0.5, as afdps.sample)")
    p.add_argument("--corrector", choices=CORRECTORS, default="split",
                   help="Langevin step rule of the ODE's corrector: split (likelihood exact) or song")
    if resample:
        p.add_argument("--resample", choices=RESAMPLINGS, default="systematic", help="resampling scheme")


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
