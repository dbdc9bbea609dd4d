"""Data shipped with afdps (``afdps/data/``): the MNIST prior, its classifier and 1000 test digits.

The one place that knows where package data lives; the engine takes paths.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["data_path", "SHIPPED_PRIORS", "SHIPPED_CLASSIFIERS", "MNIST_TEST_DIGITS", "shipped_file"]

SHIPPED_PRIORS = {"mnist": "mnist_prior.pt"}
SHIPPED_CLASSIFIERS = {"mnist": "mnist_classifier.pt"}
MNIST_TEST_DIGITS = "mnist_test_1000.npz"


def data_path(name: str) -> Path:
    """The path of ``name`` in the package's data folder (whether or not it exists)."""
    return Path(str(importlib.resources.files(__package__))) / "data" / name


def shipped_file(name_or_path, table: dict, what: str) -> Path | None:
    """The shipped file behind ``name_or_path`` when it is a name of ``table``, else ``None``. A checkpoint of that
    name in the working folder (a file, or a model folder with a ``config.json``) is the user's and wins; any other
    folder of that name (a data folder ``mnist/``) does not hide the shipped file. Raises ``FileNotFoundError`` if
    the installation lacks the shipped file."""
    if not (isinstance(name_or_path, str) and name_or_path in table):
        return None
    local = Path(name_or_path)
    if local.is_file() or (local / "config.json").is_file():
        return None
    path = data_path(table[name_or_path])
    if not path.is_file():
        raise FileNotFoundError(f"the shipped {what} {name_or_path!r} is missing from this installation ({path})")
    return path
