"""Files and progress: the one atomic writer and the one progress helper of the package.

Every file afdps writes (checkpoints, tables, images, JSON) goes through :func:`atomic_write`: the bytes
go to a temporary file in the same folder, are flushed and ``fsync``-ed, and the file is renamed onto
its name, so a reader (or a run killed half-way) sees the old file or the new one, never a part.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

__all__ = ["atomic_write", "write_text", "write_json", "save_torch", "save_png", "progress_bar", "NullBar", "LineBar",
           "markdown_table", "content_digest", "checkpoint_changed", "output_folder"]


def atomic_write(path, write) -> None:
    """Call ``write(file)`` on a binary temporary file next to ``path``, ``fsync`` it, rename it onto ``path``.

    The folder is created if needed; on any failure the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text(path, text: str) -> None:
    """``text`` (UTF-8) to ``path``, atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path, obj) -> None:
    """``obj`` as indented JSON to ``path``, atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def save_torch(obj, path) -> None:
    """``torch.save(obj)`` to ``path``, atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def scheduler_config(folder) -> Path:
    """Where a diffusers pipeline keeps the scheduler config of the ``unet/`` model ``folder``:
    ``../scheduler/scheduler_config.json`` (which may not exist)."""
    return Path(folder).resolve().parent / "scheduler" / "scheduler_config.json"


def content_digest(path, digits: int = 16) -> str:
    """The first ``digits`` hex digits of the sha256 of a file's bytes, or of a model folder's ``config.json`` and
    weight files (``.safetensors``, ``.bin``, ``.pt``, ``.pth``, ``.ckpt`` at its top level; each one's name, then
    its bytes, in sorted order; notes and caches beside them do not count), and, for a diffusers pipeline's ``unet/``
    folder, the ``../scheduler/scheduler_config.json`` beside it that sets the network's noise schedule (the loader
    reads it): what a resumed run compares to notice a checkpoint, or its schedule, replaced in place. Reads 1 MiB at
    a time (1.9 s for a 2 GiB file, cached, on this project's 2-core CPU)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        f for f in path.iterdir() if f.is_file() and (f.name == "config.json" or f.suffix in WEIGHT_SUFFIXES))
    scheduler = scheduler_config(path)
    if not path.is_file() and scheduler.is_file():
        files.append(scheduler)
    h = hashlib.sha256()
    for f in files:
        if f is scheduler:
            h.update(b"../scheduler/scheduler_config.json\0")
        elif f is not path:
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:digits]


def output_folder(path, what: str = "the output folder", rank: int = 0) -> Path:
    """``path`` as a folder that exists and can be written (made if missing), or a one-sentence ``ValueError``
    before any work: a file there, or a place that cannot be written (probed with a file of ``rank``'s own, so
    ranks of one run may probe at once)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a file; choose a folder")
    probe = path / f".afdps-write-test.{rank}.{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"{what} {str(path)!r} is not writable ({exc.strerror or type(exc).__name__})") from None
    return path


def checkpoint_changed(name, what: str, then: str, now: str) -> ValueError:
    """The error of a resumed run whose checkpoint ``name`` has other bytes (:func:`content_digest` ``then`` and
    ``now``) than when ``what`` (the earlier run, or one of its images) used it."""
    return ValueError(f"--resume: the checkpoint {name!r} changed since {what} used it (sha256 {then}... then, "
                      f"{now}... now: retrained or replaced in place, or its config edited; for a diffusers unet/ "
                      "folder the pipeline's scheduler config counts, since 2026-12-07); choose another --out")


def save_png(image, path) -> None:
    """A uint8 array ``(H, W)`` or ``(H, W, 3)`` (or a PIL image) as a PNG, atomically."""
    from PIL import Image

    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    atomic_write(path, lambda f: im.save(f, format="PNG"))


class NullBar:
    """What :func:`progress_bar` returns when no bar is shown: every call does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def skip(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_postfix_str(self, s: str = "") -> None:
        pass

    def close(self) -> None:
        pass


class LineBar(NullBar):
    """Progress as plain lines on stderr for logs (no terminal): ``desc: done/total (pct), elapsed, left``,
    at most one line per ``every`` seconds, and one at the end."""

    def __init__(self, total: int, desc: str, every: float = 60.0, initial: int = 0):
        self.total, self.desc, self.every = int(total), desc, float(every)
        self.n = self.n0 = int(initial)  # (a resumed job's done units: the time left is estimated from the rest)
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.postfix = ""

    def set_postfix_str(self, s: str = "") -> None:
        self.postfix = s  # (the next line carries it, e.g. a training loss)

    def skip(self, n: int = 1) -> None:
        self.n += int(n)
        self.n0 += int(n)  # done before (a resume's kept work): counted, not in the rate

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.perf_counter()
        if now - self.last >= self.every or self.n >= self.total:
            self.last = now
            spent = now - self.t0
            done = self.n - self.n0
            left = (f", about {_minutes(spent * (self.total - self.n) / done)} left"
                    if 0 < done and self.n < self.total else "")
            print(f"{self.desc}: {self.n}/{self.total} ({100.0 * self.n / max(self.total, 1):.0f}%), "
                  f"{_minutes(spent)} elapsed{left}{', ' + self.postfix if self.postfix else ''}", file=sys.stderr,
                  flush=True)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def skip(bar, n: int) -> None:
    """Count ``n`` units of ``bar`` that were done before this run (a resumed job's kept work, met on the way rather
    than known at the start, else pass ``initial=``) without letting them into its rate and time left."""
    if isinstance(bar, NullBar):
        bar.skip(n)
        return
    bar.n += int(n)  # a tqdm bar: its rate comes from the units between two prints, or since `initial`
    bar.last_print_n = bar.n
    bar.initial += int(n)
    bar.refresh()


def progress_bar(total: int, desc: str, enabled=None, lines: bool = False, initial: int = 0):
    """A tqdm bar over ``total`` units on stderr, or a :class:`NullBar`.

    ``enabled``: ``True``/``False``, or ``None`` for "when stderr is a terminal"; with ``lines``, ``None``
    gives a :class:`LineBar` when stderr is not a terminal (a log file), for long jobs. ``initial``: units done
    before (a resumed job), not counted in the rate.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
        if not enabled and lines:
            return LineBar(total, desc, initial=initial)
    if not enabled:
        return NullBar()
    from tqdm.auto import tqdm  # a dependency; deferred because it is only needed for a visible bar

    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False, initial=initial)


def markdown_table(head, rows) -> str:
    """A GitHub-markdown table: ``head`` a list of column names, ``rows`` lists of cell strings."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)
