"""Packaging for afdps.

The repository keeps the design's three top-level folders; this file maps them onto one package:
``bindings/`` -> ``afdps`` (the thin public API and CLI), ``engine/`` -> ``afdps.engine`` and
``kernels/`` -> ``afdps.kernels``. Metadata and dependencies live in ``pyproject.toml``.
"""
import os

from setuptools import setup

ROOTS = {"afdps": "bindings", "afdps.engine": "engine", "afdps.kernels": "kernels"}


def _packages():
    packages, package_dir = [], {}
    for name, folder in ROOTS.items():
        for here, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            if "__init__.py" not in files:
                continue
            sub = os.path.relpath(here, folder)
            pkg = name if sub == "." else name + "." + sub.replace(os.sep, ".")
            packages.append(pkg)
            package_dir[pkg] = here
    return packages, package_dir


packages, package_dir = _packages()

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"afdps": ["data/*", "data/**/*"]},
    include_package_data=True,
)
