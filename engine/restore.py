"""Restoring the user's own measurements (the work of ``afdps restore``).

Each job is one measured image with its operator: a task (``gaussian-blur``, ``motion-blur``, ``sr4``,
``box``, ``random70``, ``denoise``, or ``blur`` with the user's kernel), optional kernel and mask files,
the noise level (a number or estimated from the image) and a seed derived from the image's name (never
from its position in a list, so a resumed or sharded run restores every image exactly as an uninterrupted
one). Outputs per image go to ``OUT/<name>/``, each file written atomically; a journal
``OUT/journal.jsonl`` records finished images (one JSON line each, flushed and fsynced after the image's
files), which ``resume=True`` skips; ``OUT/index.html`` shows every finished image.

Conventions:

- Images on disk (PNG, JPEG, TIFF, BMP) are 8- or 16-bit and are mapped to [-1, 1]; ``.npy`` files hold
  float arrays already on [-1, 1], ``(H, W)``, ``(C, H, W)`` or ``(H, W, C)`` with C in {1, 3}.
- A blur kernel file (``.npy`` or a grayscale image) is normalised to sum 1 and used as ``Blur`` uses it:
  a cross-correlation, as ``torch.nn.functional.conv2d`` computes. deepinv's ``BlurFFT`` (and
  ``scipy.signal.fftconvolve``) apply a true convolution: a kernel of theirs is ``kernel[::-1, ::-1]`` here
  (``kernel_flip=True``).
- A mask file (an image or ``.npy``) is observed where it is at least half its largest value: white on black, and
  0/1 or 0/255 alike (:func:`read_mask`).
- Size policy: the restored image has the prior's size (``sr4``: the measurement is a quarter of it). A
  smaller measurement for denoising or inpainting is centred in the prior's frame with the border
  unobserved (the mask excludes it; the outputs are cropped back). Blur has a real boundary by default
  (``boundary="valid"``): the measurement is the part of a larger scene that the kernel saw whole, so it is
  at most ``(H - kh + 1) x (W - kw + 1)`` for a prior of ``H x W``; it is centred in the prior's frame, and
  the outputs are the whole scene (the border beyond the measurement is restored too). With
  ``boundary="circular"`` (wrap-around blur) it must have the prior's size. A measurement larger than one
  frame can explain is restored in overlapping tiles (:func:`restore_tiled`); nothing is resized.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import html
import inspect
import functools
import json
import math
import os
import re
import signal
import threading
import time
import urllib.parse
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from . import ops
from .data import (IMAGE_SUFFIXES, INPUT_SUFFIXES, NPY_RANGE, WIDE_MODES, is_image_file, load_npy,  # noqa: F401
                   opaque, open_image, read_image)  # (read_image: this module's API too)
from .distributed import PROBE_PREFIX, check_agree, check_shared_folder, shard
from .evaluate import make_operator
from .io import (atomic_write, checkpoint_changed, content_digest, output_folder, progress_bar, save_png, write_json,
                 write_text)
from .loading import same_arch
from .lpips import MIN_SIZE
from .metrics import psnr, ssim
from .plots import ess_plot
from .sampler import EnsembleDied, UnusedOptionsWarning, default_potential, prepare, sample
from .validation import MIN_SIGMA_Y

__all__ = ["RESTORE_TASKS", "BOUNDARIES", "Job", "read_image", "read_kernel", "read_mask", "jobs_from_inputs", "jobs_from_manifest",
           "estimate_sigma", "build_operator", "restore", "Interrupted", "seed_of"]

RESTORE_TASKS = ("gaussian-blur", "motion-blur", "sr4", "box", "random70", "denoise", "blur")
JOURNAL = "journal.jsonl"


@dataclass
class Job:
    """One image to restore: its measurement file, task and operator files, noise level and seed."""

    path: str
    task: str
    name: str = ""
    kernel: str | None = None
    mask: str | None = None
    factor: int | None = None  # sr4's downsampling factor (None: 4)
    sigma_y: float | str = 0.05
    seed: int | None = None
    options: dict = field(default_factory=dict)

    @property
    def sr_factor(self) -> int:
        return 4 if self.factor is None else int(self.factor)


class Interrupted(Exception):
    """SIGTERM arrived; raised between images, after the current image's files are complete."""


def seed_of(name: str, base: int = 0) -> int:
    """A 63-bit seed from an image's name (and a base seed), stable across runs, shards and orders."""
    digest = hashlib.sha256(f"{base}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# ---- reading -----------------------------------------------------------------------------------------

def read_kernel(path, flip: bool = False) -> torch.Tensor:
    """A blur kernel ``(kh, kw)`` float64 from ``.npy`` or a grayscale image, normalised to sum 1. (A job
    asks for its kernel several times, for its size, its operator and its tiles: the file is read once
    while it is unchanged, by path, size and modification time.)"""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no kernel file at {str(path)!r}")
    st = path.stat()
    return _read_kernel(str(path.resolve()), bool(flip), st.st_size, st.st_mtime_ns).clone()


@functools.lru_cache(maxsize=16)
def _read_kernel(path: str, flip: bool, size: int, mtime_ns: int) -> torch.Tensor:
    path = Path(path)
    if path.suffix.lower() == ".npy":
        k = load_npy(path, "kernel")
        if k.dtype.kind not in "biuf":
            raise ValueError(f"kernel {str(path)!r} holds {k.dtype} data; expected real numbers")
        k = k.astype(np.float64)
    else:
        k = np.asarray(opaque(open_image(path, "kernel"), path, "kernel").convert("F"), dtype=np.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValueError(f"kernel {str(path)!r} must be a 2-D array of odd sizes, got shape {k.shape}")
    if not np.isfinite(k).all() or (k < 0).any() or k.sum() <= 0:
        raise ValueError(f"kernel {str(path)!r} must be non-negative and finite with a positive sum")
    k = k[::-1, ::-1] if flip else k
    return torch.from_numpy(np.ascontiguousarray(k / k.sum()))


def read_mask(path, shape) -> torch.Tensor:
    """A 0/1 mask ``(H, W)`` of ``shape`` from an image or ``.npy``: observed where the value is at least half the
    mask's largest (white on black, and 0/1 or 0/255 arrays alike; a JPEG's noise or anti-aliased edges near black
    stay unobserved). Colour images are read as gray (an opaque alpha dropped, a transparent pixel refused); negative
    or non-finite values are refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no mask file at {str(path)!r}")
    if path.suffix.lower() == ".npy":
        m = load_npy(path, "mask")
        if m.dtype.kind not in "biuf":
            raise ValueError(f"mask {str(path)!r} holds {m.dtype} data; expected 0/1 or 0..255 values")
        white = 1.0  # (0/1 or 0..255)
    else:
        im = opaque(open_image(path, "mask"), path, "mask")
        m = np.asarray(im if im.mode in WIDE_MODES else im.convert("L"))
        # (as read_image reads them: integers of more than 8 bits, mode "I" too, on 16; floats on [0, 1])
        white = 1.0 if im.mode == "F" else 65535.0 if im.mode in WIDE_MODES else 255.0
    m = np.asarray(m, dtype=np.float64)
    if m.shape != tuple(shape):
        raise ValueError(f"mask {str(path)!r} has shape {m.shape}; the measurement is {tuple(shape)}")
    if not np.isfinite(m).all() or (m < 0).any():
        raise ValueError(f"mask {str(path)!r} has negative or non-finite values; a mask is 0 where unobserved and "
                         "1 (or 255, white) where observed")
    top = float(m.max()) if m.size else 0.0
    if top == 0.0:
        raise ValueError(f"mask {str(path)!r} observes no pixel (all zero): there is nothing to restore from; a mask "
                         "is 1 (or 255, white) where observed")
    if top < white / 2 and len(np.unique(m)) > 2:  # (a black mask with a JPEG's noise in it: "half the largest"
        # observed the noise at random; a 0/1 image has two values, and stays a 0/1 mask)
        raise ValueError(f"mask {str(path)!r} has no white pixel (its brightest is {top:g} of {white:g}, and it holds "
                         "more than two values): a black mask with noise in it; a mask is white (1, or 255) where "
                         "observed")
    return torch.from_numpy((m >= top / 2).astype(np.float64))


def _expand(inputs) -> list[Path]:
    """The measurement files of ``inputs``: files as named (whatever their names hold, ``[`` included), the
    measurements of folders and glob patterns (:func:`~afdps.engine.data.is_image_file`), each file once."""
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if is_image_file(f))
        elif p.is_file():
            files.append(p)
        elif any(ch in str(item) for ch in "*?["):
            matched = sorted(Path().glob(str(item))) if not p.is_absolute() else sorted(
                Path(p.anchor).glob(str(p.relative_to(p.anchor))))
            matched = [f for f in matched if is_image_file(f)]
            if not matched:
                raise FileNotFoundError(f"the pattern {str(item)!r} matches no measurement file (images "
                                        f"{', '.join(INPUT_SUFFIXES)}; hidden files are skipped)")
            files += matched
        else:
            raise FileNotFoundError(f"no measurement file or folder at {str(item)!r}")
    if not files:
        raise FileNotFoundError(f"no measurement images in {', '.join(map(str, inputs))}")
    seen = set()
    for f in files:
        where = os.path.abspath(f)  # (a symbolic link is a file of its own: its name names its outputs)
        if where in seen:
            raise ValueError(f"the measurement {str(f)!r} is given twice (as a file and in a folder or pattern, or "
                             "twice by name): list each image once")
        seen.add(where)
    return files


def _check_name(name: str, where: str) -> str:
    """An image's name names its output folder in ``--out``: a plain file name (a file ``...png`` has the stem
    ``..``, which wrote its outputs beside ``--out``), and not one of the run's own files there."""
    if any(sep in name for sep in ("/", "\\")) or name in (".", "..") or not name.strip():
        raise ValueError(f"{where}: the name {name!r} must be a plain file name (it names the image's folder in "
                         "--out): rename the file, or give the image a name in a --manifest")
    folded = name.lower()  # (INDEX.html is index.html on macOS and Windows)
    if folded == "index.html" or (folded.startswith("journal") and folded.endswith(".jsonl")):
        raise ValueError(f"{where}: the name {name!r} is taken by the run's own files in --out (index.html, "
                         "journal*.jsonl): rename the file, or give the image a name in a --manifest")
    return name


def _clashes(names) -> list[str]:
    """The names that share their output folder with another: equal up to case, as folders are on the
    case-insensitive file systems of macOS and Windows (``A`` and ``a`` would overwrite each other's outputs
    there)."""
    count = Counter(n.lower() for n in names)
    return sorted({n for n in names if count[n.lower()] > 1})


def _unique_names(paths) -> list[str]:
    """Each image's name: its file stem, or ``<folder>_<stem>`` where two inputs share a stem (up to case:
    :func:`_clashes`); an error if that still collides. Names never depend on the order of the inputs."""
    paths = [Path(p) for p in paths]
    shared = {s.lower() for s in _clashes([p.stem for p in paths])}
    names = [f"{p.parent.name}_{p.stem}" if p.stem.lower() in shared else p.stem for p in paths]
    dup = _clashes(names)
    if dup:
        first = {n.lower() for n in dup[:3]}
        files = [str(p) for n, p in zip(names, paths) if n.lower() in first]
        raise ValueError(f"several inputs would be named {dup[:3]} ({', '.join(files)}; names that differ only in case "
                         "count as one: their output folders are one on macOS and Windows): rename them or list them "
                         "in a --manifest with a name column")
    return [_check_name(n, str(p)) for n, p in zip(names, paths)]


MASK_TASKS = ("box", "random70", "denoise")


def check_job(job: Job, where: str = "") -> Job:
    """Refuse a job whose files or factor its task would not use (they would be ignored, or change the task
    silently): a kernel file is task ``blur``'s, a mask file the inpainting tasks' (``denoise`` with a mask is
    inpainting), a factor ``sr4``'s. ``where`` prefixes the message (a manifest row)."""
    at = where or job.name
    if job.task not in RESTORE_TASKS:
        raise ValueError(f"{at}: unknown task {job.task!r}; available: {', '.join(RESTORE_TASKS)}")
    if job.kernel is not None and job.task != "blur":
        raise ValueError(f"{at}: a kernel file is used by task 'blur' only; task {job.task!r} has its own operator "
                         f"(for your kernel, the task is blur)")
    if job.mask is not None and job.task not in MASK_TASKS:
        raise ValueError(f"{at}: a mask file is used by the tasks {', '.join(MASK_TASKS)} only, not {job.task!r}")
    if job.factor is not None and job.task != "sr4":
        raise ValueError(f"{at}: a downsampling factor is used by task 'sr4' only, not {job.task!r}")
    return job


def jobs_from_inputs(inputs, *, task: str, kernel=None, mask=None, factor: int | None = None, sigma_y=0.05,
                     seed: int = 0) -> list[Job]:
    """One job per image in ``inputs`` (files, folders, glob patterns), all with the same operator. Each
    image's seed comes from its file stem, so it is restored the same whatever else is in the run (its name
    becomes ``<folder>_<stem>`` where two inputs share a stem; its seed does not change)."""
    paths = _expand(inputs)
    return [check_job(Job(str(p), task, name, kernel, mask, factor, sigma_y, seed_of(p.stem, seed)))
            for p, name in zip(paths, _unique_names(paths))]


_MANIFEST_KEYS = {"path", "task", "kernel", "mask", "factor", "sigma_y", "seed", "name"}


def _manifest_int(value, what: str, where: str) -> int:
    """An integer cell of a manifest: a JSON integer or an integer written as text (not 1.5, not true)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{where}: {what} must be an integer, got {value!r}")


def _manifest_sigma(value, where: str):
    """``sigma_y``: ``"auto"`` or a positive finite number."""
    if value == "auto":
        return value
    try:
        v = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v >= MIN_SIGMA_Y):  # (the sampler's floor: a smaller one was refused mid-run)
        raise ValueError(f"{where}: sigma_y must be a number >= {MIN_SIGMA_Y:g} or 'auto', got {value!r}")
    return v


def jobs_from_manifest(path, *, defaults: dict, seed: int = 0) -> list[Job]:
    """Jobs from a JSON-lines or CSV file with columns ``path, task, kernel, mask, factor, sigma_y, seed``
    (and optionally ``name``); empty cells take ``defaults``; a row's relative paths are relative to the file (a
    default's, from the command line, to the working folder). A default kernel, mask or factor applies to the rows
    whose task uses it (:func:`check_job`), and is refused if no row does."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest file at {str(path)!r}")
    text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's "CSV UTF-8" starts with a byte-order mark
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        rows = list(reader)
        for n, row in enumerate(rows, 1):
            if None in row:  # DictReader keeps a row's cells beyond the header under the key None
                raise ValueError(f"manifest {str(path)!r} row {n} has more cells than the header's "
                                 f"{len(reader.fieldnames)} columns ({', '.join(reader.fieldnames)})")
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"manifest {str(path)!r} line {n} is not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"manifest {str(path)!r} line {n} must be a JSON object")
                rows.append(row)
    if not rows:
        raise ValueError(f"manifest {str(path)!r} lists no images")
    jobs, used = [], set()
    for n, row in enumerate(rows, 1):
        where = f"manifest {str(path)!r} row {n}"
        extra = set(row) - _MANIFEST_KEYS
        if extra:
            raise ValueError(f"{where} has unknown columns {sorted(extra)}; allowed: "
                             f"{', '.join(sorted(_MANIFEST_KEYS))}")
        row = {k: v for k, v in row.items() if v not in (None, "")}
        if "path" not in row:
            raise ValueError(f"{where} has no path")
        for key in ("path", "kernel", "mask", "name", "task"):
            if key in row and not isinstance(row[key], str):
                raise ValueError(f"{where}: {key} must be text ({'a file path' if key in ('path', 'kernel', 'mask') else 'a string'}), "
                                 f"got {row[key]!r}")

        def rel(v):  # a row's file: relative to the manifest's folder
            return None if v is None else str(Path(v) if Path(v).is_absolute() else path.parent / v)

        p = rel(row["path"])
        name = _check_name(str(row.get("name") or Path(p).stem), where)
        task = row.get("task", defaults.get("task"))
        spec = {}
        for key, tasks in (("kernel", ("blur",)), ("mask", MASK_TASKS), ("factor", ("sr4",))):
            if key in row:
                spec[key] = row[key] if key == "factor" else rel(row[key])
            elif defaults.get(key) is not None and task in tasks:
                spec[key] = defaults[key]  # the command line's: relative to the working folder, as given
                used.add(key)
        factor = None if "factor" not in spec else _manifest_int(spec["factor"], "factor", where)
        job_seed = _manifest_int(row["seed"], "seed", where) if "seed" in row else seed_of(name, seed)
        if not 0 <= job_seed < 2**63:  # the command line's range; afdps.sample refuses negative seeds
            raise ValueError(f"{where}: seed must be an integer in [0, 2**63), got {job_seed}")
        sig = _manifest_sigma(row.get("sigma_y", defaults.get("sigma_y", 0.05)), where)
        if task is not None:
            check_job(Job(p, task, name, spec.get("kernel"), spec.get("mask"), factor, sig, job_seed), where)
        jobs.append(Job(p, task, name, spec.get("kernel"), spec.get("mask"), factor, sig, job_seed))
    for key in ("kernel", "mask", "factor"):  # (rows without a task: the caller reports them first)
        if defaults.get(key) is not None and key not in used and all(j.task is not None for j in jobs):
            raise ValueError(f"--{key} was given, but no row of manifest {str(path)!r} without its own {key} has a "
                             f"task that uses one")
    dup = _clashes([j.name for j in jobs])
    if dup:
        raise ValueError(f"manifest {str(path)!r} names images more than once: {dup[:5]} (names that differ only in "
                         "case count as one: their output folders are one on macOS and Windows; add a name column)")
    return jobs


# ---- the operator ------------------------------------------------------------------------------------

SIGMA_MIN_SIZE = 8  # 16 finest-band coefficients per channel at least: a median of fewer is mostly noise


def estimate_sigma(y: torch.Tensor) -> float:
    """The noise standard deviation of ``y (C, H, W)`` (on [-1, 1]) by Donoho's robust wavelet estimator:
    ``median(|HH|) / 0.6745`` of the finest diagonal Haar detail coefficients, averaged over channels (the
    estimator of scikit-image's ``estimate_sigma``, which needs PyWavelets; Haar here, so no new
    dependency). Image structure inflates it slightly; pass a number where the noise is known."""
    if min(y.shape[-2:]) < SIGMA_MIN_SIZE:
        raise ValueError(f"estimating the noise needs at least {SIGMA_MIN_SIZE}x{SIGMA_MIN_SIZE} pixels, the "
                         f"measurement is {y.shape[-2]}x{y.shape[-1]}: give sigma_y as a number (--sigma-y)")
    a = y.double()
    H, W = a.shape[-2] // 2 * 2, a.shape[-1] // 2 * 2
    a = a[:, :H, :W]
    hh = (a[:, 0::2, 0::2] - a[:, 0::2, 1::2] - a[:, 1::2, 0::2] + a[:, 1::2, 1::2]) / 2.0
    return float((hh.flatten(1).abs().median(dim=1).values / 0.6745).mean())


BOUNDARIES = ("valid", "circular")


BLUR_TASKS = ("blur", "gaussian-blur", "motion-blur")


def job_kernel(job: Job, event_shape, kernel_flip: bool = False) -> torch.Tensor:
    """The blur kernel of a blur job: its kernel file (task ``blur``) or the task's kernel for the frame."""
    if job.task == "blur":
        if job.kernel is None:
            raise ValueError(f"{job.name}: task 'blur' needs a kernel file (--kernel or the manifest's kernel column)")
        return read_kernel(job.kernel, kernel_flip)
    return make_operator(job.task, event_shape, seed=0).kernel


def _check_factor(job: Job, H: int, W: int) -> int:
    """A super-resolution job's factor, which must divide the prior's frame (the measurement's size is the frame's
    divided by it, or a tiled multiple)."""
    f = job.sr_factor
    if f < 1 or H % f or W % f:
        allowed = [d for d in range(1, math.gcd(H, W) + 1) if H % d == 0 and W % d == 0]
        raise ValueError(f"{job.name}: factor {f} does not divide the prior's size {H}x{W} (allowed: "
                         f"{', '.join(map(str, allowed))})")
    return f


def build_operator(job: Job, measured_shape, event_shape, *, kernel_flip: bool = False, boundary: str = "valid"):
    """``(op, window)`` for a job: the operator on the prior's ``event_shape`` and the ``(top, left, h, w)``
    window of the outputs in it (the size policy of the module docstring: the measurement's window, or the
    whole frame for a valid blur, whose restoration is the whole scene)."""
    C, H, W = event_shape
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    if job.task not in RESTORE_TASKS:
        raise ValueError(f"unknown task {job.task!r} for {job.name}; available: {', '.join(RESTORE_TASKS)}")
    h, w = measured_shape[-2:]
    if job.task == "sr4":
        f = _check_factor(job, H, W)
        if (h, w) != (H // f, W // f):
            raise ValueError(f"{job.name}: a x{f} measurement for this prior must be {H // f}x{W // f}, got {h}x{w} "
                             "(no silent resizing)")
        return ops.BlockDownsample(f, event_shape), (0, 0, H, W)
    if h > H or w > W:
        raise ValueError(f"{job.name}: the measurement is {h}x{w}, larger than the prior's {H}x{W}: restore it in tiles "
                         "(afdps restore does) or use a prior of that size (no silent resizing)")
    window = ((H - h) // 2, (W - w) // 2, h, w)
    smaller = (h, w) != (H, W)
    if job.task in BLUR_TASKS:
        kernel = job_kernel(job, event_shape, kernel_flip)
        kh, kw = kernel.shape
        if boundary == "valid":
            most = ops.valid_size(kernel.shape, (H, W))
            if h > most[0] or w > most[1]:
                raise ValueError(
                    f"{job.name}: with a real (valid) boundary a {kh}x{kw} blur measures at most {most[0]}x{most[1]} "
                    f"pixels of a {H}x{W} scene (the prior's size), got {h}x{w}: restore it in tiles (afdps restore "
                    "does), or pass --boundary circular if it was blurred with wrap-around")
            return ops.Blur(kernel, event_shape, boundary="valid", output_size=(h, w)), (0, 0, H, W)
        if smaller:
            raise ValueError(f"{job.name}: a circularly blurred measurement must have the prior's size {H}x{W}, got "
                             f"{h}x{w} (padding would invent measured pixels; no silent resizing); a measurement that "
                             "is the valid part of a larger scene's blur takes --boundary valid")
        return ops.Blur(kernel, event_shape), window
    # denoising and inpainting: the padding around a smaller measurement is unobserved
    observed = torch.zeros(H, W, dtype=torch.float64)
    top, left = window[:2]
    if job.mask is not None:
        observed[top:top + h, left:left + w] = read_mask(job.mask, (h, w))
    elif job.task == "denoise":
        observed[top:top + h, left:left + w] = 1.0
    else:
        observed = make_operator(job.task, event_shape, seed=0).mask[0].clone()
        if smaller:
            keep = torch.zeros_like(observed)
            keep[top:top + h, left:left + w] = 1.0
            observed = observed * keep
    if job.task == "denoise" and not smaller and job.mask is None:
        return ops.Identity(event_shape), window
    return ops.Inpaint(observed, event_shape), window


# ---- tiling ----------------------------------------------------------------------------------------
#
# A measurement larger than the prior's frame is restored in overlapping tiles. Each tile is a measurement
# of the frame's operator (denoise: the frame; inpainting: the frame with the mask file's tile; a valid
# blur: the frame's valid part; sr4: the frame's low-resolution image), restored on its own with a seed of
# its own, and the scene tiles are blended with weights that ramp linearly over the overlap (a valid blur's
# unmeasured tile border gets almost no weight where a neighbour measured it). The mean is blended pixel by
# pixel; the std is the square root of the blended per-tile variances (each tile's own uncertainty, not that
# of a combination); "best" is each tile's best particle, blended, so it is a patchwork, not one sample;
# particles are not saved for tiled images.

class TiledResult:
    """What :func:`restore` keeps of a tiled image: blended ``best``, ``mean``, ``std`` ``(1, C, H, W)``, the
    tiles' mean ESS trace, ``nfe`` summed over the tiles (score evaluations per particle of every tile), and
    per-tile numbers."""

    def __init__(self, best, mean, std, ess, resampled, nfe, dead, tiles, potential=None):
        self.best, self.mean, self.std, self.ess, self.resampled = best, mean, std, ess, resampled
        self.nfe, self.dead, self.tiles, self.potential = nfe, dead, tiles, potential
        self.particles = None
        jumps = [t["guidance_jump"] for t in tiles if t.get("guidance_jump") is not None]
        self.guidance_jump = max(jumps) if jumps else None  # the Tweedie guidance's largest move over the tiles


def tile_geometry(job: Job, measured_shape, event_shape, *, boundary: str = "valid", kernel_flip: bool = False):
    """``(m, scale, pad, make_op)`` of a tiled job: measurement tiles of ``m = (mh, mw)`` pixels map to scene
    tiles of the prior's size at ``scale`` times their offset (the scene is ``scale * measurement + 2 pad``);
    ``make_op(top, left)`` is the operator of the tile at that measurement offset. A measurement smaller than one
    tile along an axis is refused."""
    m, scale, pad, make_op = _tile_parts(job, measured_shape, event_shape, boundary, kernel_flip)
    h, w = measured_shape[-2:]
    if h < m[0] or w < m[1]:
        raise ValueError(f"{job.name}: {h}x{w} is larger than the prior's frame along one axis and smaller than one "
                         f"{m[0]}x{m[1]} tile along the other; crop it to fit the frame or use a prior of its size")
    return m, scale, pad, make_op


def _tile_parts(job: Job, measured_shape, event_shape, boundary: str, kernel_flip: bool):
    C, H, W = event_shape
    task = job.task
    if task in BLUR_TASKS:
        if boundary != "valid":
            raise ValueError(f"{job.name}: a circular (wrap-around) blur of a whole image cannot be split into tiles; "
                             f"measurements larger than the prior's {H}x{W} need --boundary valid")
        kernel = job_kernel(job, event_shape, kernel_flip)
        kh, kw = kernel.shape
        op = ops.Blur(kernel, event_shape, boundary="valid")
        return op.output_shape[1:], 1, (kh // 2, kw // 2), lambda top, left: op
    if task == "sr4":
        f = _check_factor(job, H, W)
        op = ops.BlockDownsample(f, event_shape)
        return (H // f, W // f), f, (0, 0), lambda top, left: op
    if task == "denoise" and job.mask is None:
        op = ops.Identity(event_shape)
        return (H, W), 1, (0, 0), lambda top, left: op
    if job.mask is None:
        raise ValueError(f"{job.name}: inpainting a measurement larger than the prior's {H}x{W} in tiles needs the "
                         f"mask of the whole measurement (--mask or the manifest's mask column); the built-in "
                         f"{task} mask is defined for one {H}x{W} frame")
    mask = read_mask(job.mask, tuple(measured_shape[-2:]))
    return (H, W), 1, (0, 0), lambda top, left: ops.Inpaint(mask[top:top + H, left:left + W], event_shape)


def tile_offsets(size: int, tile: int, overlap: int) -> list[int]:
    """Offsets of tiles of ``tile`` pixels covering ``size`` with at least ``overlap`` pixels shared by
    neighbours (the last tile ends at the edge)."""
    if size <= tile:
        return [0]
    stride = max(1, tile - overlap)
    n = -(-(size - tile) // stride) + 1
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def _ramp(n: int, width: int, pad: int = 0) -> torch.Tensor:
    """Blending weights along one axis of a scene tile of ``n`` pixels: linear over ``width`` pixels at both ends
    of its measured part, and 1e-6 in the ``pad`` pixels beyond it at each end (a valid blur's border, seen only
    through its neighbours' blur: a neighbour's measured interior wins there, and at the image's own border,
    where no neighbour is, the tile's value stands). Positive everywhere."""
    inner = n - 2 * pad
    i = torch.arange(inner, dtype=torch.float64)
    w = torch.ones(inner, dtype=torch.float64) if width <= 0 else torch.minimum(
        torch.ones(inner, dtype=torch.float64), torch.minimum(i + 1, inner - i) / (width + 1))
    edge = torch.full((pad,), 1e-6, dtype=torch.float64)
    return torch.cat([edge, w, edge])


def _sample_one(said: dict, who: str, *args, **kwargs):
    """``sample(*args, **kwargs)`` for one image or tile ``who`` (its name, as a death names it), keeping what it
    warned in ``said`` (one text, numbers aside -> each time it was said) for :func:`_say`, also when it fails."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return sample(*args, **kwargs)
        except EnsembleDied as exc:  # (it said "image 0": the index in this call's batch of one)
            text = str(exc).replace(f"image {exc.image}", f"image {who}", 1)
            raise EnsembleDied(text.replace("{", "{{").replace("}", "}}"), 0) from None
        finally:
            for w in caught:
                key = (w.category, re.sub(r"\d+(\.\d+)?", "#", str(w.message)))
                said.setdefault(key, []).append(str(w.message))


def _say(said: dict, name: str, parts: int = 1, notes: set | None = None) -> None:
    """Say an image's warnings once each: a note on the options as it is, once per run (``notes``: the notes said
    so far), anything else under the image's name, with how many of its ``parts`` tiles said it."""
    for (category, _), texts in said.items():
        if issubclass(category, UnusedOptionsWarning):
            if notes is None or texts[0] not in notes:
                warnings.warn(texts[0], category, stacklevel=3)
            if notes is not None:
                notes.add(texts[0])
        else:
            count = f", {len(texts)} of its {parts} tiles (the first said)" if parts > 1 else ""
            warnings.warn(f"{name}{count}: {texts[0]}", category, stacklevel=3)


def restore_tiled(prior, job: Job, y: torch.Tensor, sigma_y: float, *, overlap: float, sample_options: dict,
                  device, boundary: str = "valid", kernel_flip: bool = False, particle_group=None,
                  notes: set | None = None) -> TiledResult:
    """Restore ``y (C, h, w)``, larger than the prior's frame, in overlapping tiles (the policy above).
    ``overlap``: the fraction of a measurement tile shared with each neighbour (0 <= overlap < 1)."""
    event = tuple(prior.event_shape)
    C, H, W = event
    (mh, mw), scale, (ph, pw), make_op = tile_geometry(job, y.shape, event, boundary=boundary, kernel_flip=kernel_flip)
    h, w = y.shape[-2:]
    rows = tile_offsets(h, mh, int(round(overlap * mh)))
    cols = tile_offsets(w, mw, int(round(overlap * mw)))
    scene = (C, h * scale + 2 * ph, w * scale + 2 * pw)
    acc = {k: torch.zeros(scene, dtype=torch.float64) for k in ("best", "mean", "var")}
    wsum = torch.zeros(scene[1:], dtype=torch.float64)
    wy = (_ramp(H, int(round(overlap * mh)) * scale, ph)[:, None]
          * _ramp(W, int(round(overlap * mw)) * scale, pw)[None, :])
    ess, resampled, tiles, nfe, dead = [], [], [], 0, 0
    said = {}  # the tiles' warnings: one text (its numbers aside) -> what each tile said
    extra = {} if particle_group is None else {"particle_group": particle_group}
    try:
        for ti, (top, left) in enumerate((r, c) for r in rows for c in cols):
            op = make_op(top, left)
            yt = y[:, top:top + mh, left:left + mw]
            if isinstance(op, ops.Inpaint):
                yt = op.A(yt.double()).float()  # unobserved pixels carry nothing (as for one frame)
            seed = (int(job.seed or 0) + 1_000_003 * (ti + 1)) % 2**63
            res = _sample_one(said, f"{job.name!r} (tile {ti + 1} of {len(rows) * len(cols)})", prior, op,
                              yt[None].to(device), sigma_y, seed=seed, **sample_options, **extra)
            st, sl = top * scale, left * scale
            sl_ = (slice(None), slice(st, st + H), slice(sl, sl + W))
            acc["best"][sl_] += wy * res.best[0].cpu().double()
            acc["mean"][sl_] += wy * res.mean[0].cpu().double()
            acc["var"][sl_] += wy * res.std[0].cpu().double().square()
            wsum[sl_[1:]] += wy
            ess.append(res.ess[:, 0])
            resampled.append(res.resampled[:, 0])
            nfe, dead = nfe + res.nfe, dead + int(res.dead[0])
            tiles.append({"top": top, "left": left, "seed": seed, "final_ess": float(res.ess[-1, 0])})
            if getattr(res, "guidance_jump", None) is not None:
                tiles[-1]["guidance_jump"] = res.guidance_jump
    finally:  # (also when a tile fails: the tiles' warnings may say why)
        _say(said, job.name, len(rows) * len(cols), notes)
    out = {k: (v / wsum)[None] for k, v in acc.items()}
    return TiledResult(out["best"].float(), out["mean"].float(), out["var"].sqrt().float(),
                       torch.stack(ess).mean(0)[:, None], torch.stack(resampled).any(0)[:, None], nfe, [dead], tiles,
                       getattr(res, "potential", None))


def _kernel_size(job: Job, event_shape, boundary: str, kernel_flip: bool):
    """The blur kernel's size where a valid blur's frame is smaller than the prior's (else ``None``)."""
    if job.task not in BLUR_TASKS or boundary != "valid":
        return None
    return tuple(job_kernel(job, event_shape, kernel_flip).shape)


def needs_tiles(job: Job, measured_shape, event_shape, kernel_size=None) -> bool:
    """Whether a measurement is larger than one frame of the prior can explain (then it is tiled)."""
    C, H, W = event_shape
    h, w = measured_shape[-2:]
    if job.task == "sr4":
        f = job.sr_factor
        return h * f > H or w * f > W
    if job.task in BLUR_TASKS and kernel_size is not None:
        most = ops.valid_size(kernel_size, (H, W))
        return h > most[0] or w > most[1]
    return h > H or w > W


def _embed(y: torch.Tensor, window, shape) -> torch.Tensor:
    """``y (C, h, w)`` placed at ``window`` in a zero ``(C, H, W)`` frame."""
    top, left, h, w = window
    if (h, w) == tuple(shape[-2:]):
        return y
    out = torch.zeros(y.shape[0], *shape[-2:], dtype=y.dtype)
    out[:, top:top + h, left:left + w] = y
    return out


def _crop(x: torch.Tensor, window) -> torch.Tensor:
    top, left, h, w = window
    return x[..., top:top + h, left:left + w]


# ---- outputs -----------------------------------------------------------------------------------------

def _to_uint8(x: torch.Tensor) -> np.ndarray:
    a = ((x.detach().double().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def _colormap(std: torch.Tensor) -> np.ndarray:
    """Per-pixel std (mean over channels) as an RGB picture: black -> blue -> yellow -> white, scaled to
    the image's maximum."""
    s = std.double().mean(0).cpu().numpy()
    u = s / max(float(s.max()), 1e-12)
    stops = np.array([[0, 0, 0], [40, 60, 200], [240, 220, 40], [255, 255, 255]], dtype=np.float64)
    pos = u * (len(stops) - 1)
    i = np.clip(pos.astype(int), 0, len(stops) - 2)
    f = (pos - i)[..., None]
    return ((1 - f) * stops[i] + f * stops[i + 1]).round().astype(np.uint8)


def _write_outputs(folder: Path, y, res, window, sample_shape, save_particles: bool) -> dict:
    best, mean, std = (_crop(t[0].cpu(), window) for t in (res.best, res.mean, res.std))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # a killed run's unfinished atomic write (one writer per image folder)
        stale.unlink(missing_ok=True)
    save_png(_to_uint8(y), folder / "measurement.png")
    save_png(_to_uint8(best), folder / "best.png")
    save_png(_to_uint8(mean), folder / "mean.png")
    save_png(_colormap(std), folder / "std.png")
    atomic_write(folder / "std.npy", lambda f: np.save(f, std.float().numpy()))
    atomic_write(folder / "mean.npy", lambda f: np.save(f, mean.float().numpy()))
    ess_plot(res.ess[:, 0].numpy(), res.resampled[:, 0].numpy(), folder / "ess.png")
    if save_particles:
        parts = _crop(res.particles[0].cpu(), window).to(torch.float16).numpy()
        lw = res.log_weights[0].cpu().numpy()
        atomic_write(folder / "particles.npz", lambda f: np.savez_compressed(f, particles=parts, log_weights=lw))
    return {"best": best, "mean": mean}


def _index_html(out: Path, records: list[dict]) -> None:
    rows = []
    for r in records:
        name, url = html.escape(r["name"]), html.escape(urllib.parse.quote(r["name"]))  # '#', '?', '%' in a name
        cells = "".join(f'<td><img src="{url}/{f}.png" alt="{f}"></td>' for f in ("measurement", "best", "mean", "std"))
        size = (f"{r['measured_size']} -> {r['restored_size']}" if r.get("measured_size", r.get("restored_size"))
                != r.get("restored_size") else r.get("restored_size"))
        extra = [f"size {size}"] if size else []
        extra += [f"boundary {r['boundary']}"] if "boundary" in r else []
        extra += [f"{len(r['tiles'])} tiles"] if "tiles" in r else []
        nums = [f"task {html.escape(r['task'])}", *extra, f"sigma_y {r['sigma_y']:.4g}", f"NFE {r['nfe']}",
                f"final ESS/N {r['final_ess']:.2f}" + (f" (tiles' mean; lowest tile {r['final_ess_min_tile']:.2f})"
                                                        if "final_ess_min_tile" in r else ""), f"{r['wall_s']:.1f} s"]
        for k in ("psnr_best", "psnr_mean", "ssim_best", "ssim_mean", "lpips_best", "lpips_mean"):
            if k in r:
                nums.append(f"{k.replace('_', ' ')} {r[k]:.{2 if 'psnr' in k else 3}f}")
        rows.append(f"<tr><th>{name}<br><small>{'<br>'.join(nums)}</small></th>{cells}</tr>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>afdps restore</title><style>"
            "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{padding:4px;"
            "border:1px solid #ccc;vertical-align:top;text-align:left}img{width:160px;image-rendering:pixelated}"
            "</style></head><body>"
            f"<h1>afdps restore: {len(records)} image(s)</h1><table><tr><th>image</th><th>measurement</th>"
            "<th>best particle</th><th>weighted mean</th><th>per-pixel std</th></tr>" + "".join(rows) +
            "</table></body></html>\n")
    write_text(out / "index.html", page)


def _journal_path(out: Path, rank: int, world: int) -> Path:
    """``journal.jsonl``, or ``journal.rank<r>.jsonl`` per rank of a sharded run (no two writers share a file)."""
    return out / (JOURNAL if world == 1 else f"journal.rank{rank}.jsonl")


def _read_journal(out: Path) -> dict:
    """Every journal in ``out`` (one process's, or each rank's of a sharded run, whatever the world size
    that wrote them): name -> record."""
    done = {}
    for path in sorted(out.glob("journal*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write: that image is redone
                done[rec["name"]] = rec
    return done


def _append_journal(path: Path, record: dict) -> None:
    cut = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as f:
        f.write(("\n" if cut else "") + json.dumps(record) + "\n")  # a line cut by a crash stays apart
        f.flush()
        os.fsync(f.fileno())


# ---- the run -----------------------------------------------------------------------------------------

def _job_sigma(job: Job, y: torch.Tensor) -> float:
    """The job's noise level: its number, or estimated from its measurement ``y`` for ``"auto"``."""
    sigma_y = estimate_sigma(y) if job.sigma_y == "auto" else float(job.sigma_y)
    if not (sigma_y >= MIN_SIGMA_Y and math.isfinite(sigma_y)):  # (the sampler's floor, checked before any image)
        raise ValueError(f"{job.name}: sigma_y must be at least {MIN_SIGMA_Y:g}, got {sigma_y!r}"
                         + (" (estimated: pass a number with --sigma-y)" if job.sigma_y == "auto" else ""))
    return sigma_y


def check_inputs(jobs: list[Job], event_shape, *, boundary: str = "valid", kernel_flip: bool = False,
                 reference=None, lpips: bool = False, out=None, quiet: bool = False, prior=None,
                 sample_options: dict | None = None, tile_overlap: float = 0.25, particle_group=None,
                 device=None) -> int:
    """Refuse, before any restoration, the jobs whose inputs would stop a run when their turn came: a measurement,
    kernel, mask or reference file that cannot be read, a size the policy refuses, a mask of another size, a noise
    level that cannot be estimated, a reference of neither the restoration's nor the measurement's size. Every job
    is read and its operator (or its tiles' geometry) built, and every bad one is counted in one error that names
    the first five. With ``out``, an image whose output folder there is a file is refused too. ``quiet`` drops the
    reading warnings (a 16-bit file read at 8 bits, ...), for callers that read every input on every rank (a file
    warns once per process); :func:`restore` itself gives each of torchrun's ranks its share to read.

    With ``prior`` and ``sample_options`` the sampler's options are also checked against each kind of operator
    the jobs have (one run's worth of :func:`~afdps.engine.sampler.prepare` per kind, its memory check included),
    as they would be at each image's turn: ``potential="inflated"`` with a valid blur, say, stopped a run after the
    images before it. Returns the number of tiles of the tiled images (``tile_overlap`` of a tile shared)."""
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore", UserWarning)
        found = _check_inputs(jobs, tuple(event_shape), boundary=boundary, kernel_flip=kernel_flip,
                              reference=reference, lpips=lpips, out=out, prior=prior, options=sample_options,
                              overlap=tile_overlap, group=particle_group, device=torch.device(device or "cpu"))
    return _refuse(*found, total=len(jobs))


def _refuse(bad: list, tiles: int, refused: dict, of_kind: dict, general: str | None, *, total: int) -> int:
    """Raise the refusals :func:`_check_inputs` found (``bad``: the files'; ``refused``: the sampler's, per kind of
    operator, for the jobs ``of_kind`` names; ``general``: the sampler's for the options themselves, refused with
    plain denoising too) in one error; else return ``tiles``."""
    if general is None:
        bad = bad + [f"{name}: the sampler's options do not fit its operator ({kind[0]}): {refused[kind]}"
                     for name, kind in of_kind.items() if refused.get(kind) is not None]
    head = f"{len(bad)} of {total} image(s) cannot be restored"
    listing = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
    if general is not None:
        raise ValueError(f"the sampler refuses these options, so no image was run: {general}"
                         + (f"; and {head}: {listing}" if bad else ""))
    if bad:
        raise ValueError(f"{head}, so none was run: {listing}")
    return tiles


PREPARE_OPTIONS = frozenset(inspect.signature(prepare).parameters) - {"prior", "op", "y", "sigma_y", "seed"}


class _Raised(NamedTuple):
    """What a rank's check raised, as the other ranks receive it (``all_gather_object`` pickles it)."""
    kind: str  # the exception's type
    text: str
    refusal: bool  # a ValueError: the input's or the options' fault, not the rank's


def _everywhere(fn, together: bool, world: int, device, group) -> tuple[list, Exception | None]:
    """Every rank's ``fn()`` (``together``: gathered; else this rank's alone), a rank whose ``fn`` raised giving a
    :class:`_Raised`, and this rank's own exception, for the caller to raise after the gather: no rank waits in it for
    a rank that has left."""
    try:
        answer, error = fn(), None
    except Exception as exc:  # noqa: BLE001  (handed back, to be raised after every rank has been told)
        # (never an empty text: a refusal without one would read as a pass)
        answer, error = _Raised(type(exc).__name__, str(exc) or type(exc).__name__, isinstance(exc, ValueError)), exc
    return (_gather(answer, world, device, group) if together else [answer]), error


def _alike(check, together: bool, world: int, device, group) -> str | None:
    """Run ``check()`` on every rank and return the first refusal (``ValueError``'s text) any rank met, the same on
    every rank (``together``: gathered). Another exception is raised on its own rank after the gather."""
    answers, error = _everywhere(check, together, world, device, group)
    if error is not None and not isinstance(error, ValueError):
        raise error
    return next((a.text if a.refusal else f"a rank failed: {a.kind}: {a.text}"
                 for a in answers if isinstance(a, _Raised)), None)


def _gather(obj, world: int, device, group) -> list:
    """Every rank's ``obj`` (``torch.distributed.all_gather_object`` over ``group``), on ``device``: NCCL gathers
    objects on the current CUDA device, which a Python caller may not have set to its rank's."""
    answers = [None] * world
    dev = torch.device(device or "cpu")
    with torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext():
        torch.distributed.all_gather_object(answers, obj, group=group)
    return answers


def check_share(jobs: list[Job], done: dict, rank: int, world: int, sharded: bool) -> list[Job]:
    """The unfinished jobs that rank ``rank`` of ``world`` reads and checks before the first image: a sharded rank the
    images it will restore (each file read, and its warnings said, by one rank), a particle-parallel rank every
    ``world``-th (every rank restores every image); one process all of them. Every rank read every input before."""
    if world == 1:
        return [j for j in jobs if j.name not in done]
    if sharded:
        return [j for j in shard(jobs, rank, world) if j.name not in done]
    return shard([j for j in jobs if j.name not in done], rank, world)


def _options_refusal(prior, op, y, sigma_y: float, options: dict, group, device) -> str | None:
    """Why the sampler would refuse ``options`` for ``op`` and a measurement ``y`` of it (``None``: it would not);
    the seed and the progress display do not matter to that, and notes on unused options wait for the run."""
    kwargs = {k: v for k, v in options.items() if k in PREPARE_OPTIONS}
    if kwargs.get("potential") is None and options.get("cuda_graph"):  # (sample's default differs under a graph)
        kwargs["potential"] = default_potential(options.get("method", "sde"), options.get("eta", 0.5), True,
                                                options.get("tempering", "linear"))
    if group is not None:  # this rank's share of the particles (its memory)
        kwargs["num_particles"] = group.split(options.get("num_particles", 16))[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            prepare(prior, op, y[None].to(device), sigma_y, **kwargs, seed=0)
    except (ValueError, MemoryError) as exc:  # (MemoryError: check_memory, before any allocation)
        return str(exc)
    return None


def _check_inputs(jobs, event, *, boundary, kernel_flip, reference, lpips, out, prior=None, options=None,
                  overlap=0.25, group=None, device=torch.device("cpu")) -> tuple[list, int, dict, dict, str | None]:
    bad = []
    kinds = {}  # one job per kind of operator: its name, operator and measurement
    of_kind = {}  # job name -> the kind of its operator
    tiles = 0
    for job in jobs:
        try:
            if out is not None and (Path(out) / job.name).exists() and not (Path(out) / job.name).is_dir():
                raise ValueError(f"{job.name}: its output folder {str(Path(out) / job.name)!r} is a file")
            y = read_image(job.path, event[0])
            sigma_y = _job_sigma(job, y)
            if needs_tiles(job, y.shape, event, _kernel_size(job, event, boundary, kernel_flip)):
                (mh, mw), scale, (ph, pw), make_op = tile_geometry(job, y.shape, event, boundary=boundary,
                                                                   kernel_flip=kernel_flip)
                restored = (event[0], y.shape[-2] * scale + 2 * ph, y.shape[-1] * scale + 2 * pw)
                window_ok = job.task != "sr4"
                op, yk = make_op(0, 0), y[:, :mh, :mw]
                tiles += (len(tile_offsets(y.shape[-2], mh, int(round(overlap * mh))))
                          * len(tile_offsets(y.shape[-1], mw, int(round(overlap * mw)))))
            else:
                op, window = build_operator(job, y.shape, event, kernel_flip=kernel_flip, boundary=boundary)
                restored, window_ok = (event[0], *window[2:]), isinstance(op, ops.ValidBlur)
                yk = y if tuple(op.output_shape) == tuple(y.shape) else _embed(y, window, event)
            ref = None if reference is None else _reference(reference, job, event[0])
            if ref is not None and tuple(ref.shape) != restored and not (window_ok and ref.shape == y.shape):
                raise ValueError(f"{job.name}: its reference is {tuple(ref.shape)}, the restoration will be "
                                 f"{restored}" + (f" (and the measured window {tuple(y.shape)})" if window_ok else ""))
            if lpips and ref is not None and min(ref.shape[-2:]) < MIN_SIZE:
                raise ValueError(f"{job.name}: LPIPS (AlexNet) needs at least {MIN_SIZE}x{MIN_SIZE} pixels; its "
                                 f"reference is {ref.shape[-2]}x{ref.shape[-1]} (leave out --lpips)")
            kind = (type(op).__name__, bool(getattr(op, "supports_exact", False)))  # (its files passed: one
            of_kind[job.name] = kind  # refusal per image)
            if kind not in kinds:
                kinds[kind] = (op, op.A(yk.double()).float() if isinstance(op, ops.Inpaint) else yk, sigma_y)
        except (ValueError, OSError) as exc:
            text = str(exc)
            bad.append(text if text.startswith(f"{job.name}:") else f"{job.name}: {text}")
    if prior is None or options is None or not jobs:  # (nothing left to run: a finished run's resume, say)
        return bad, tiles, {}, of_kind, None
    refused = {kind: _options_refusal(prior, *case, options, group, device) for kind, case in kinds.items()}
    general = _options_refusal(prior, ops.Identity(event), torch.zeros(event), 0.05, options, group, device)
    return bad, tiles, refused, of_kind, general  # (general: refused with plain denoising too: not the operators')


def restore(prior, jobs: list[Job], out, *, sample_options: dict, reference=None, resume: bool = False,
            save_particles: bool = False, kernel_flip: bool = False, boundary: str = "valid", device=None,
            progress=None, log=print,
            handle_sigterm: bool = True, rank: int = 0, world: int = 1, particle_group=None,
            lpips=None, tile_overlap: float = 0.25, prior_name: str | None = None,
            prior_digest: str | None = None) -> list[dict]:
    """Restore every job into folder ``out``; returns the journal records of all finished images.

    ``sample_options`` go to :func:`afdps.engine.sampler.sample` (``seed`` comes from each job).
    A measurement larger than the prior's frame is restored in tiles that share ``tile_overlap`` of their
    size with each neighbour (:func:`restore_tiled`).
    ``reference``: a folder of clean images with the same stems, for PSNR/SSIM, and LPIPS with ``lpips``
    (an :class:`afdps.engine.lpips.LPIPS` network, :func:`~afdps.engine.lpips.load_lpips`). Raises
    :class:`Interrupted` after the current image when SIGTERM arrives (the caller exits 143).
    ``prior_name`` (e.g. ``"mnist"`` or a checkpoint's path) and ``prior_digest`` (its bytes,
    :func:`~afdps.engine.io.content_digest`) are journaled, and ``resume`` refuses others (a checkpoint replaced in
    place included; the same bytes under another path or name with the same ``--arch`` are the same prior).

    Many processes (``torch.distributed``, every rank calls this with the same jobs): by default rank
    ``rank`` of ``world`` restores its share of the images (:func:`~afdps.engine.distributed.shard` of
    the whole image list, less those journaled already, so no rank's share depends on the journals) and journals them in its own file; with ``particle_group`` every rank takes
    part in every image (its share of the particles) and rank 0 writes the files. Seeds come from image
    names, so a sharded run's outputs do not depend on the world size (a particle-parallel run's only to the last
    bits of the network's batched arithmetic, each rank calling it on its own particles).
    """
    if lpips is not None:
        if reference is None:
            raise ValueError("LPIPS compares with clean images: give --reference DIR with --lpips")
        if min(prior.event_shape[-2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS (AlexNet) needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels; this prior's are "
                             f"{prior.event_shape[-2]}x{prior.event_shape[-1]}")
    sharded = particle_group is None and world > 1
    writer = particle_group is None or rank == 0
    if particle_group is not None:
        rank, world = particle_group.rank, particle_group.world
    if reference is not None and not Path(reference).is_dir():
        raise FileNotFoundError(f"no reference folder at {str(reference)!r}")
    made = not Path(out).exists()  # (a folder this call makes and then refuses to fill is removed again)
    out = output_folder(out, rank=rank)
    if rank == 0:  # the index's writer: an unfinished write of a killed run's index (image folders: _write_outputs)
        for stale in [*out.glob(".index.html.*.tmp"), *out.glob(PROBE_PREFIX + "*")]:  # (and a killed run's probe)
            stale.unlink(missing_ok=True)
    done = _read_journal(out)
    settings = {k: _plain(v) for k, v in sample_options.items()}
    if settings.get("backend") == "auto":
        settings["backend"] = None  # the same request: journals keep None for it
    torso = getattr(getattr(prior, "net", None), "torso_dtype", None)  # bfloat16 with load_prior(..., inference=True)
    run_opts = {"boundary": boundary, "kernel_flip": bool(kernel_flip), "tile_overlap": tile_overlap,
                "prior": prior_name, "prior_sha256": prior_digest, "network_dtype": None if torso is None else str(torso).replace("torch.", "")}
    if world > 1:  # before anything a rank might refuse alone: ranks on other image lists would shard them apart
        # (images restored twice or never); other journals mean an --out that the ranks do not share
        check_agree({"images": [(j.name, j.task, j.seed, j.sigma_y, j.factor) for j in jobs],
                     "settings": sorted((k, v) for k, v in settings.items() if k not in UNCOMPARED),
                     "options": {k: v for k, v in run_opts.items() if k != "prior"},  # (a path: mounts may differ)
                     "journaled images (is --out one folder that every rank shares?)": sorted(done),
                     "--resume": bool(resume)},
                    "afdps restore", device, None if particle_group is None else particle_group.group)
        if sharded:  # each rank writes its images and journal there, and rank 0 indexes them all
            check_shared_folder(out, "afdps restore --out", device)
    if done and not resume:
        raise ValueError(f"{str(out)!r} holds {len(done)} restored image(s) of an earlier run; pass --resume to "
                         "continue it, or choose another --out")
    journaled = {n.lower(): n for n in done}
    clash = [(j.name, journaled[j.name.lower()]) for j in jobs if journaled.get(j.name.lower(), j.name) != j.name]
    if clash:  # its folder is the journaled image's on macOS and Windows: its outputs would replace that image's
        raise ValueError(f"--resume: {clash[0][0]!r} differs only in case from {clash[0][1]!r}, which the run in "
                         f"{str(out)!r} restored (one output folder on macOS and Windows); rename it, or choose "
                         "another --out")
    together = world > 1 and torch.distributed.is_initialized()  # each rank reads its share (each read them all)
    group = None if particle_group is None else particle_group.group
    finished = [j for j in jobs if j.name in done]
    why = _alike(lambda: _check_resumed(out, shard(finished, rank, world) if together else finished, done, settings,
                                        run_opts), together, world, device, group)  # (each rank its share of the files)
    if why:  # before the signal handler and the barrier: nothing to undo
        raise ValueError(why)
    unread = [j for j in jobs if j.name not in done]
    if len(unread) >= 100 and rank == 0:
        log(f"afdps restore: reading and checking {len(unread)} inputs before the first image"
            + (f", each of {world} ranks its share" if together else ""))
    try:
        answers, error = _everywhere(
            lambda: _check_inputs(check_share(jobs, done, rank, world if together else 1, sharded),
                                  tuple(prior.event_shape), boundary=boundary, kernel_flip=kernel_flip,
                                  reference=reference, lpips=lpips is not None, out=out, prior=prior,
                                  options=sample_options, overlap=tile_overlap, group=particle_group,
                                  device=torch.device(device or "cpu")), together, world, device, group)
        if error is not None:
            raise error
        failed = [(r, a) for r, a in enumerate(answers) if isinstance(a, _Raised)]
        if failed:  # every rank refuses alike, or none does
            raise ValueError(f"rank {failed[0][0]} failed while checking its inputs ({failed[0][1].kind}: "
                             f"{failed[0][1].text})")
        found = answers[0]
        if together:
            refused = {}
            for a in answers:  # a refusal wins over a pass (free memory differs between the ranks' devices)
                for k, why in a[2].items():
                    refused[k] = refused.get(k) or why
            found = ([b for a in answers for b in a[0]], sum(a[1] for a in answers), refused,
                     {n: k for a in answers for n, k in a[3].items()}, next((a[4] for a in answers if a[4]), None))
        tiles = _refuse(*found, total=len(unread))
    except ValueError:
        if made and rank == 0:
            try:
                out.rmdir()  # nothing ran: no empty folder left behind to look like a run (only an empty one goes)
            except OSError:
                pass  # (something is there after all: it stays, and the refusal is what the user reads)
        raise
    if tiles and rank == 0:
        log(f"afdps restore: {tiles} tiles in all, each a restoration of one {prior.event_shape[-2]}x"
            f"{prior.event_shape[-1]} frame of the prior, for the images one frame cannot hold (--tile-overlap "
            f"{tile_overlap:g})")
    if save_particles and rank == 0:
        bare = [j.name for j in jobs if j.name in done and "tiles" not in done[j.name]
                and not (out / j.name / "particles.npz").is_file()]
        if bare:
            log(f"afdps restore: --save-particles: {len(bare)} image(s) restored earlier without it keep no "
                f"particles.npz ({', '.join(bare[:5])}{' ...' if len(bare) > 5 else ''}); restore them into another "
                "--out to have their particles")
    others = sorted(set(done) - {j.name for j in jobs})
    if others and rank == 0:
        log(f"afdps restore: {len(others)} image(s) journaled in {out} are not in this run and stay out of the index: "
            f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''}")
    device = torch.device(device or "cpu")
    event = tuple(prior.event_shape)
    stop = {"flag": False}
    notes = set()  # the notes on the options said so far (once per run, not per image)
    previous = None
    handle_sigterm = handle_sigterm and threading.current_thread() is threading.main_thread()
    if world > 1:
        torch.distributed.barrier()  # every rank has read the journals before any rank adds to them
    todo = [j for j in jobs if j.name not in done]
    if len(todo) < len(jobs) and rank == 0:
        log(f"afdps restore: {len(jobs) - len(todo)} image(s) already restored in {out}, {len(todo)} to go")
    if sharded:  # the shards of the whole job list, so no rank's share depends on what is journaled
        todo = [j for j in shard(jobs, rank, world) if j.name not in done]
    journal = _journal_path(out, rank, world if sharded else 1)
    records = [done[j.name] for j in jobs if j.name in done]
    if records and rank == 0:
        _index_html(out, records)  # a kill between the journal line and the index leaves it stale otherwise
    bar = progress_bar(len(todo), "images", progress if rank == 0 else False)
    tty = bar.__class__.__name__ != "NullBar"
    t_start = time.perf_counter()

    def on_term(signum, frame):
        stop["flag"] = True

    try:
        if handle_sigterm:  # installed inside the try whose finally restores it (before it, SIGTERM kills as usual:
            previous = signal.signal(signal.SIGTERM, on_term)  # nothing is half-written, every file being atomic)
        for n, job in enumerate(todo, 1):
            if particle_group is not None:  # the ranks of one image stop together
                flag = torch.tensor([[stop["flag"]]], device=device)  # NCCL gathers only device tensors
                stop["flag"] = bool(particle_group.all_gather(flag, dim=1).any())
            if stop["flag"]:
                raise Interrupted(f"stopped by SIGTERM after {n - 1} of {len(todo)} image(s); rerun with --resume")
            t0 = time.perf_counter()
            y = read_image(job.path, event[0])
            sigma_y = _job_sigma(job, y)
            ref = None if reference is None else _reference(reference, job, event[0])
            if reference is not None and ref is None and rank == 0:
                log(f"afdps restore: {job.name}: no image named {Path(job.path).stem}.* in the reference folder "
                    f"{reference}: not scored")
            if lpips is not None and ref is not None and min(ref.shape[-2:]) < MIN_SIZE:
                raise ValueError(f"{job.name}: LPIPS (AlexNet) needs at least {MIN_SIZE}x{MIN_SIZE} pixels; its reference "
                                 f"is {ref.shape[-2]}x{ref.shape[-1]} (leave out --lpips)")
            extra = {} if particle_group is None else {"particle_group": particle_group}
            ksize = _kernel_size(job, event, boundary, kernel_flip)
            tiled = needs_tiles(job, y.shape, event, ksize)
            if tiled:
                res = restore_tiled(prior, job, y, sigma_y, overlap=tile_overlap, sample_options=sample_options,
                                    device=device, boundary=boundary, kernel_flip=kernel_flip,
                                    particle_group=particle_group, notes=notes)
                window = (0, 0, *res.mean.shape[-2:])
                scene_h, scene_w = res.mean.shape[-2:]
                measured_at = ((scene_h - y.shape[-2]) // 2, (scene_w - y.shape[-1]) // 2) if job.task != "sr4" else None
            else:
                op, window = build_operator(job, y.shape, event, kernel_flip=kernel_flip, boundary=boundary)
                yk = y if tuple(op.output_shape) == tuple(y.shape) else _embed(y, window, event)
                if isinstance(op, ops.Inpaint):
                    yk = op.A(yk.double()).float()  # unobserved pixels carry nothing
                said = {}
                try:
                    res = _sample_one(said, repr(job.name), prior, op, yk[None].to(device), sigma_y, seed=job.seed,
                                      **sample_options, **extra)
                finally:
                    _say(said, job.name, notes=notes)
                measured_at = (op.top, op.left) if isinstance(op, ops.ValidBlur) else None
            if not writer:
                bar.update(1)
                continue
            if tiled:
                sh, sw = res.mean.shape[-2:]
                log(f"afdps restore: {job.name}: the {sh}x{sw} restoration of its {y.shape[-2]}x{y.shape[-1]} "
                    + (f"measurement (x{job.sr_factor})" if job.task == "sr4" else "measurement" if ksize is None else
                       f"valid blur (its {ksize[0]}x{ksize[1]} kernel sees past the edges)")
                    + f" is larger than the prior's {event[-2]}x{event[-1]}: restored in {len(res.tiles)} overlapping "
                    + "tiles" + ("; its particles are not saved" if save_particles else ""))
            outs = _write_outputs(out / job.name, y, res, window, event, save_particles and not tiled)
            record = {"name": job.name, "path": job.path, **_job_spec(job, run_opts, tiled),
                      "sigma_y": sigma_y, "sigma_y_estimated": job.sigma_y == "auto", "nfe": res.nfe,
                      "potential": getattr(res, "potential", None),
                      "final_ess": float(res.ess[-1, 0]), "resampling_events": int(res.resampled.sum()),
                      "dead_particles": int(res.dead[0]), "wall_s": time.perf_counter() - t0,
                      "settings": settings}
            if getattr(res, "guidance_jump", None) is not None:  # the Tweedie guidance cap (engine/sampler.py)
                record["guidance_jump"] = res.guidance_jump
            if hasattr(prior, "network_batch"):  # the network's last bits can depend on its batch
                record["network_batch"] = prior.auto_batch if prior.batch_size == "auto" else prior.batch_size
            record["measured_size"] = "x".join(map(str, y.shape[-2:]))
            record["restored_size"] = "x".join(map(str, outs["mean"].shape[-2:]))
            if tiled:
                record["tiles"] = res.tiles
                record["final_ess_min_tile"] = min(t["final_ess"] for t in res.tiles)  # (final_ess: their mean)
            if reference is not None:
                if ref is not None:
                    if tuple(ref.shape) != tuple(outs["best"].shape) and tuple(ref.shape) == tuple(y.shape) \
                            and measured_at is not None:  # a reference of the measured window only
                        t, lft = measured_at
                        outs = {k: v[..., t:t + y.shape[-2], lft:lft + y.shape[-1]] for k, v in outs.items()}
                        record["reference_region"] = "measured window"
                    if tuple(ref.shape) != tuple(outs["best"].shape):
                        raise ValueError(f"{job.name}: the reference is {tuple(ref.shape)}, the restoration "
                                         f"{tuple(outs['best'].shape)}")
                    for k in ("best", "mean"):
                        record[f"psnr_{k}"] = psnr(outs[k], ref)
                        record[f"ssim_{k}"] = ssim(outs[k], ref)
                        if lpips is not None:
                            record[f"lpips_{k}"] = float(lpips(outs[k][None].float(), ref[None].float())[0])
            write_json(out / job.name / "metrics.json", record)
            _append_journal(journal, record)
            records.append(record)
            if sharded and rank == 0:  # the index shows what every rank has journaled so far
                _index_html(out, _ordered(jobs, _read_journal(out)))
            elif not sharded:
                _index_html(out, records)
            bar.update(1)
            if not tty and (n == len(todo) or n % max(1, len(todo) // 10) == 0):
                eta = (time.perf_counter() - t_start) / n * (len(todo) - n)
                who = f" rank {rank}/{world}:" if sharded else ""
                log(f"afdps restore:{who} {n}/{len(todo)} images ({100 * n // len(todo)}%), {job.task}, "
                    f"ETA {eta:.0f} s")
        if stop["flag"]:
            raise Interrupted(f"stopped by SIGTERM after the last image; all {len(todo)} done")
        if sharded:
            torch.distributed.barrier()  # every rank's journal is complete: one index and one record list
            records = _ordered(jobs, _read_journal(out))
            if rank == 0:
                _index_html(out, records)
    finally:
        bar.close()
        if handle_sigterm and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return records


def _plain(value):
    """A setting as the journal keeps it: numbers, text, booleans and None as they are, tuples as lists,
    anything else as text."""
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return str(value)


def _absolute(path):
    return None if path is None else str(Path(path).resolve())


@functools.lru_cache(maxsize=4096)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    return content_digest(path)


def _digest(path) -> str | None:
    """:func:`~afdps.engine.io.content_digest` of an input file, read once per size and modification time (``None``
    where there is no such file)."""
    try:
        st = os.stat(path)
        return _digest_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    except OSError:  # (gone, or unreadable now: a finished image's file is not needed to resume)
        return None


FILES = (("input", "input_sha256"), ("kernel", "kernel_sha256"), ("mask", "mask_sha256"))
"""A job's files and the journal keys of their bytes' digests."""


def _job_spec(job: Job, run_opts: dict, tiled: bool) -> dict:
    """What fixes a job's restoration besides the sampler's options, as its journal record keeps it."""
    spec = {"input": _absolute(job.path), "task": job.task, "seed": job.seed, "kernel": _absolute(job.kernel),
            "mask": _absolute(job.mask)}
    for key, digest_key in FILES:  # (a file edited in place was taken as the one restored, its old outputs kept)
        path = job.path if key == "input" else getattr(job, key)
        digest = None if path is None else _digest(path)
        if digest is not None:  # (a journaled image's file deleted since: a resume does not need it)
            spec[digest_key] = digest
    for key in ("prior", "prior_sha256", "network_dtype"):  # the network's torso dtype: float32, or bfloat16 (--fast-network)
        if run_opts.get(key) is not None:
            spec[key] = run_opts[key]
    if job.task == "sr4":
        spec["factor"] = job.sr_factor
    if job.task in BLUR_TASKS:
        spec["boundary"] = run_opts["boundary"]
    if job.task == "blur":
        spec["kernel_flip"] = run_opts["kernel_flip"]
    if tiled:
        spec["tile_overlap"] = run_opts["tile_overlap"]
    return spec


def _same(had, want) -> bool:
    """Whether a journaled setting equals this run's; journals before 2026-12-06 kept a tuple as its text."""
    if isinstance(had, str) and isinstance(want, list):
        return had == str(tuple(want))
    return had == want


def _arch_of(prior) -> str:
    """The ``--arch`` part of a journaled prior (``"<path> --arch <arch>"``, the arch as
    :func:`~afdps.engine.loading.arch_record` writes it): the same weights under another architecture's config
    (attention heads, say) compute otherwise."""
    return str(prior).partition(" --arch ")[2]


def _path_of(prior) -> str:
    """The checkpoint part of a journaled prior (a shipped name or an absolute path)."""
    return str(prior).partition(" --arch ")[0]


UNCOMPARED = ("progress",)  # sampler options that change only what is shown


def _check_resumed(out: Path, jobs: list[Job], done: dict, settings: dict, run_opts: dict) -> None:
    """Refuse to resume a run whose journaled images were restored otherwise than this run would restore them
    (the finished and the new images would not be one run's). Keys an older journal lacks are not compared."""
    for job in jobs:
        rec = done.get(job.name)
        if rec is None:
            continue
        want = _job_spec(job, run_opts, "tiles" in rec)
        want["sigma_y"] = "auto" if job.sigma_y == "auto" else float(job.sigma_y)
        had = {k: rec[k] for k in want if k in rec}
        if "sigma_y_estimated" in rec:
            had["sigma_y"] = "auto" if rec["sigma_y_estimated"] else rec["sigma_y"]
        old = rec.get("settings", {})
        want.update({k: v for k, v in settings.items() if k not in UNCOMPARED and k in old})
        had.update({k: v for k, v in old.items() if k not in UNCOMPARED and k in settings})
        differ = [k for k in want if k in had and not _same(had[k], want[k])]
        if "prior" in differ and same_arch(_arch_of(had["prior"]), _arch_of(want["prior"])) and (
                _path_of(had["prior"]) == _path_of(want["prior"])  # the arch recorded otherwise (its digest, since
                # 2026-12-07), or:
                or "prior_sha256" in had and "prior_sha256" not in differ):
            differ.remove("prior")  # the same bytes under another path or name (moved, or the shipped file's path)
        for path_key, digest_key in FILES:
            if path_key in differ and digest_key in had and digest_key not in differ:
                differ.remove(path_key)  # the same bytes under another path (a moved or copied folder)
            elif digest_key in differ and path_key not in differ:
                raise ValueError(f"--resume: {job.name}'s {path_key} file {want[path_key]!r} changed since the run in "
                                 f"{str(out)!r} restored it (sha256 {had[digest_key]} then, {want[digest_key]} now); "
                                 "resume with the file it was restored from, or restore into another --out")
        if "seed" in differ:  # (a number derived from the name and --seed: its value tells the user nothing)
            raise ValueError(f"--resume: {job.name} in {str(out)!r} was restored with another seed (--seed, or its "
                             "manifest row's seed, differs from that run's, or that run's afdps derived seeds from "
                             "names otherwise); resume with that run's --seed, or choose another --out")
        if differ == ["prior_sha256"]:
            raise checkpoint_changed(want.get("prior", ""), f"{job.name} in {str(out)!r}", had["prior_sha256"],
                                     want["prior_sha256"])
        if differ:
            shown = lambda k, v: "'auto'" if v is None and k in ("potential", "backend") else repr(v)  # noqa: E731
            what = ", ".join(f"{k} {shown(k, had[k])} then, {shown(k, want[k])} now" for k in differ[:3])
            raise ValueError(f"--resume: {job.name} in {str(out)!r} was restored with other settings ({what}"
                             f"{', ...' if len(differ) > 3 else ''}); resume with that run's settings, or choose "
                             "another --out")


def _ordered(jobs: list[Job], done: dict) -> list[dict]:
    """The journaled records of ``jobs``, in the jobs' order."""
    return [done[j.name] for j in jobs if j.name in done]


def _reference(folder, job: Job, channels: int):
    """The clean image of ``job`` in the reference folder: the file with its input's stem and an image or ``.npy``
    suffix (exactly: ``a.bak.png`` is not ``a``'s), ``None`` if there is none; several are ambiguous."""
    stem = Path(job.path).stem
    found = sorted(f for f in Path(folder).iterdir() if f.stem == stem and is_image_file(f))
    if len(found) > 1:
        raise ValueError(f"{job.name}: the reference folder {str(folder)!r} holds several images named {stem!r} "
                         f"({', '.join(f.name for f in found)}); keep one")
    return read_image(found[0], channels, "reference") if found else None


