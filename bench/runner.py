"""Shared benchmark runner: timing, bandwidth, GitHub-markdown tables and CSV rows.

A benchmark script builds, for each case (shape, dtype, bytes it must move), a dict of variants
``{name: fn}`` and calls :func:`run_case`; the runner times every variant, derives GB/s, the percentage
of the measured device-to-device copy bandwidth and the speedups over ``torch_unfused`` and
``torch_compile``, prints a markdown table (:func:`markdown_table`) and appends the rows to
``bench/results/<name>.csv`` (:func:`append_csv`), each stamped with the device name, the torch and
triton versions and the git revision.

Timing: ``triton.testing.do_bench`` on CUDA (median and 20/80 % quantiles, L2 flushed between runs;
``do_bench_cudagraph`` for variants marked to run as a CUDA graph, which does not flush L2 between replays: data
that fits in L2 stays there, so a graph row against an eager one compares a warm cache with a cold one, and the
rows say so); a plain ``perf_counter`` loop on the CPU (for the smoke runs: those numbers mean nothing).

``AFDPS_BENCH_RESULTS`` overrides the results folder (the smoke test writes to a temporary one).
Other benchmark scripts (bench_sampler.py, bench_adm.py) can use :func:`time_fn`, :func:`environment`,
:func:`markdown_table` and :func:`append_csv` directly.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from afdps.cli._common import nonneg_int, positive_float, positive_int  # noqa: F401  (the scripts' argument types)
from afdps.engine.io import markdown_table as io_table
from afdps.kernels._triton import HAS_TRITON, triton
from afdps.kernels.backend import triton_available

ROOT = Path(__file__).resolve().parents[1]
RESULTS_ENV = "AFDPS_BENCH_RESULTS"

COLUMNS = ("case", "shape", "dtype", "variant", "ms", "ms_q20", "ms_q80", "GB/s", "% copy", "x unfused",
           "x compile", "rel err")
CSV_FIELDS = ("bench", "case", "shape", "dtype", "variant", "bytes", "ms", "ms_q20", "ms_q80", "GB/s", "% copy",
              "x unfused", "x compile", "rel err", "note", "device", "torch", "triton", "git", "time")


# ---- environment ---------------------------------------------------------------------------------
def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or ROOT / "bench" / "results")


def git_revision() -> str:
    """``git rev-parse --short HEAD`` of the checkout, with ``+dirty`` where the code differs from it (tracked
    changes or untracked files outside bench/results: a device runs the working tree, so a bare revision could name
    code that was not what ran), or ``"unknown"``."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        rev = out.stdout.strip()
        if not rev:
            return "unknown"
        status = subprocess.run(["git", "status", "--porcelain", "--", ".", ":(exclude)bench/results"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10)
        return rev + ("+dirty" if status.returncode == 0 and status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()  # the threads torch runs with, not the machine's cores
    return f"cpu ({platform.processor() or platform.machine()}, {threads} thread{'s' if threads != 1 else ''})"


def environment(device) -> dict:
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "triton": getattr(triton, "__version__", "none") if HAS_TRITON else "none",
        "git": git_revision(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# ---- timing --------------------------------------------------------------------------------------
@dataclass
class Timing:
    ms: float
    q20: float
    q80: float


def _quantile(sorted_values, q):
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def time_fn(fn: Callable[[], object], device, *, warmup_ms: float = 25, rep_ms: float = 100,
            cuda_graph: bool = False, min_reps: int = 3, max_reps: int = 10_000) -> Timing:
    """Median and 20/80 % quantiles of ``fn()`` in milliseconds."""
    device = torch.device(device)
    if device.type == "cuda":
        from triton.testing import do_bench, do_bench_cudagraph

        if cuda_graph:
            m, lo, hi = do_bench_cudagraph(fn, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        else:
            m, lo, hi = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return Timing(float(m), float(lo), float(hi))
    fn()  # compile / warm up
    times = []
    deadline = time.perf_counter() + rep_ms / 1e3
    while len(times) < min_reps or (time.perf_counter() < deadline and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return Timing(_quantile(times, 0.5), _quantile(times, 0.2), _quantile(times, 0.8))


GRAPH_NOTE = "graph replays, L2 not flushed"  # (do_bench_cudagraph; do_bench flushes it before every call)


def compile_note(device) -> str:
    """The note of a ``torch_compile`` variant: on the CPU the scripts trace with dynamo's eager backend (the
    Inductor C++ build would take minutes), which compiles nothing."""
    return "dynamo with the eager backend on the CPU: not compiled" if torch.device(device).type == "cpu" else ""


_COPY_GBPS: dict = {}


def copy_bandwidth(device, nbytes: int | None = None) -> float:
    """Measured device-to-device copy bandwidth in GB/s (a clone of a large buffer: reads + writes)."""
    device = torch.device(device)
    key = (str(device), nbytes)
    if key not in _COPY_GBPS:
        if nbytes is None:
            nbytes = (1 << 30) if device.type == "cuda" else (1 << 25)
        buf = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
        out = torch.empty_like(buf)
        t = time_fn(lambda: out.copy_(buf), device)
        _COPY_GBPS[key] = 2 * nbytes / (t.ms * 1e6)
        del buf, out
    return _COPY_GBPS[key]


def rel_err(out, ref) -> float:
    """``max|out - ref| / max|ref|`` in float64; for tuples of outputs (a step's ``x_new`` and ``dlogw``), the largest
    of each output's own."""
    if isinstance(ref, (tuple, list)):
        if len(out) != len(ref):
            raise ValueError(f"{len(out)} outputs against {len(ref)} of the reference")
        return max(rel_err(o, r) for o, r in zip(out, ref))
    ref = ref.to(torch.float64)
    num = (out.to(device=ref.device, dtype=torch.float64) - ref).abs().max().item()
    den = ref.abs().max().item()
    return num / den if den > 0 else num


# ---- cases ---------------------------------------------------------------------------------------
@dataclass
class Variant:
    """One way of computing a case: ``fn`` to time, optionally its own byte count, a CUDA-graph flag and
    a relative error against the float64 reference."""

    fn: Callable[[], object] | None  # None: not run (``note`` says why)
    bytes: int | None = None
    cuda_graph: bool = False
    error: float | None = None
    note: str = ""


def run_case(bench: str, case: str, shape: str, dtype: str, nbytes: int, variants: dict, device, *,
             rep_ms: float = 100, env: dict | None = None, baseline: str = "torch_unfused",
             compiled: str = "torch_compile", relative_to: str | None = None,
             speedup_over: str | None = None, only: Iterable[str] | None = None) -> list[dict]:
    """Time each variant of one case; return one row per variant (see ``CSV_FIELDS``).

    ``relative_to``: a variant whose time divides every other in a ``/ <name>`` column (e.g. the cost
    of copying only the moved rows); ``speedup_over``: a variant whose time is divided by every other
    in an ``x <name>`` column (e.g. the direct convolution); ``only``: time just these variants.
    """
    device = torch.device(device)
    if only:  # (names checked by the script's parser; one a case does not build is left out of it)
        built = variants
        variants = {k: v for k, v in variants.items() if k in set(only)}
        if not variants:  # (an empty table, exit 0, said nothing)
            print(f"bench: {bench} {case}: none of --variants {' '.join(only)} is built here (this case builds "
                  f"{', '.join(built)} on {device})", file=sys.stderr, flush=True)
    env = env or environment(device)
    copy = copy_bandwidth(device)
    rows = []
    for name, v in variants.items():
        if not isinstance(v, Variant):
            v = Variant(v)
        if v.fn is None:
            rows.append({"bench": bench, "case": case, "shape": shape, "dtype": dtype, "variant": name,
                         "note": v.note or "not run", **env})
            continue
        graph = v.cuda_graph and device.type == "cuda"
        try:
            t = time_fn(v.fn, device, rep_ms=rep_ms, cuda_graph=graph)
        except Exception as exc:  # a variant that cannot run (e.g. compile failure) is reported, not fatal
            rows.append({"bench": bench, "case": case, "shape": shape, "dtype": dtype, "variant": name,
                         "note": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}", **env})
            continue
        b = v.bytes if v.bytes is not None else nbytes
        gbps = b / (t.ms * 1e6) if t.ms > 0 else float("nan")
        rows.append({"bench": bench, "case": case, "shape": shape, "dtype": dtype, "variant": name, "bytes": b,
                     "ms": t.ms, "ms_q20": t.q20, "ms_q80": t.q80, "GB/s": gbps, "% copy": 100 * gbps / copy,
                     "rel err": v.error, "note": "; ".join(filter(None, [v.note, graph and GRAPH_NOTE])), **env})
    times = {r["variant"]: r.get("ms") for r in rows}
    for r in rows:
        if r.get("ms") is None:
            continue
        for col, ref in (("x unfused", baseline), ("x compile", compiled)):
            r[col] = times[ref] / r["ms"] if times.get(ref) else None
        if relative_to is not None and times.get(relative_to):
            r[f"/ {relative_to}"] = r["ms"] / times[relative_to]
        if speedup_over is not None and times.get(speedup_over):
            r[f"x {speedup_over}"] = times[speedup_over] / r["ms"]
    return rows


# ---- output --------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v == 0:
            return "0"
        if abs(v) >= 1000 or abs(v) < 0.01:
            return f"{v:.3g}"
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def markdown_table(rows: Iterable[dict], columns: Iterable[str] | None = None) -> str:
    """GitHub-markdown table of ``rows`` (columns default to ``COLUMNS`` plus any ``/ name`` or ``x name``
    ratio and a ``note`` column when some row has one)."""
    rows = list(rows)
    cols = list(columns or COLUMNS)
    if columns is None:
        for r in rows:
            for k in r:
                if (k.startswith("/ ") or k.startswith("x ")) and k not in cols:
                    cols.append(k)
        if any(r.get("note") for r in rows):
            cols.append("note")
    return io_table(cols, [[_fmt(r.get(c)) for c in cols] for r in rows])


def append_csv(name: str, rows: Iterable[dict]) -> Path:
    """Append ``rows`` to ``<results>/<name>.csv`` (header written when the file is new)."""
    rows = list(rows)
    path = results_dir() / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(CSV_FIELDS)
    for r in rows:
        fields += [k for k in r if k not in fields]
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), None)
        if header:
            fields = header + [f for f in fields if f not in header and any(f in r for r in rows)]
            if fields != header:  # a new column: rewrite the header line, keep the old rows (atomically: a kill
                # in a plain write lost the whole file)
                from afdps.engine.io import write_text
                old = path.read_text().splitlines()[1:]
                write_text(path, ",".join(fields) + "\n" + ("\n".join(old) + "\n" if old else ""))
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return path


def emit(name: str, title: str, rows: list[dict], args) -> None:
    """Print the table, append the CSV rows (unless ``--no-csv``) and the table to ``--markdown``."""
    table = markdown_table(rows)
    print(f"\n### {title}\n\n{table}\n", flush=True)
    if writes_csv(args) and rows:
        append_csv(name, rows)
    md = getattr(args, "markdown", None)
    if md:
        append_text(md, f"\n### {title}\n\n{table}\n")


def particle_rows(particles: int):
    """An argparse type for a case's B*N rows: at most ``particles`` (one image) or a multiple of it (B images of
    ``particles`` particles each; 20 failed with a shape error deep in the kernels' references)."""
    def parse(text: str) -> int:
        v = positive_int(text)
        if v > particles and v % particles:
            raise argparse.ArgumentTypeError(f"B*N must be at most {particles} (one image) or a multiple of "
                                             f"{particles} (images of {particles} particles), got {v}")
        return v
    return parse


def append_text(path, text: str) -> None:
    """Append ``text`` to the markdown file ``path``, making its folder first (a missing one failed after the run)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(text)


def print_report(text: str, out=None) -> None:
    """Print a report and, with ``out``, write it there too (the scripts that make one table each), atomically and
    making its folder first."""
    print(text)
    if out:
        from afdps.engine.io import write_text

        try:
            if Path(out).is_dir():
                raise IsADirectoryError(f"{out} is a folder; --out names the file to write")
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            write_text(Path(out), text)
        except OSError as exc:  # (a traceback after the printed report: say what was not written, and why)
            raise SystemExit(f"the report above was not written to {out}: {exc}") from None


def device_arg(text: str) -> str:
    """An argparse type for ``--device``: a torch device's name (``bogus`` gave torch's traceback after the
    parse)."""
    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a torch device (cpu, cuda, cuda:1), got {text!r}") from None
    return text


def markdown_arg(text: str) -> str:
    """An argparse type for ``--markdown``: a file to append to, not a folder and not under a file (either failed
    with a traceback after the measurements)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; --markdown names the file the tables are appended to")
    above = next((q for q in path.parents if q.exists()), None)
    if above is not None and not above.is_dir():
        raise argparse.ArgumentTypeError(f"{above} is a file, so {text} cannot be made")
    return text


def add_common_args(parser: argparse.ArgumentParser, *, variants: tuple = (),
                    compiled: bool = True) -> argparse.ArgumentParser:
    """The options every benchmark shares; ``--rep`` and ``--variants`` (checked against ``variants``, every name
    the script can time, before any work) where it times variants, ``--no-compile`` where one is torch_compile.
    A named variant that a case does not build (a CUDA-graph one on the CPU) is left out of that case."""
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny shapes on the CPU (checks that the script runs; CSV rows only into ${RESULTS_ENV})")
    parser.add_argument("--device", type=device_arg, default=None, help="cuda or cpu (default: cuda when available)")
    if variants:
        parser.add_argument("--rep", type=positive_float, default=100.0,
                            help="milliseconds of timed repetitions per variant")
        parser.add_argument("--variants", nargs="*", default=None, choices=variants, metavar="VARIANT",
                            help=f"time only these variants, of {', '.join(variants)}")
    parser.add_argument("--no-csv", action="store_true",
                        help=f"do not append rows to bench/results/<name>.csv (or ${RESULTS_ENV}/<name>.csv)")
    parser.add_argument("--markdown", type=markdown_arg, default=None,
                        help="also append the tables to this markdown file")
    if compiled:
        parser.add_argument("--no-compile", action="store_true", help="skip the torch_compile variants")
    return parser


def writes_csv(args) -> bool:
    """Whether a run appends its rows to the results CSV: not with ``--no-csv``, and for ``--smoke`` (tiny shapes
    on the CPU, interpreter timings) only into a folder named by ``AFDPS_BENCH_RESULTS`` (the smoke tests'), never
    beside the real measurements in bench/results/."""
    if getattr(args, "no_csv", False):
        return False
    return not getattr(args, "smoke", False) or bool(os.environ.get(RESULTS_ENV))


def run_rows_case(name: str, rows: int, event, dtype: str, nbytes: int, variants: dict, device, args, env) -> list:
    """:func:`run_case` and :func:`emit` for a per-particle case of ``rows`` rows of ``event`` pixels."""
    out = run_case(name, f"B*N={rows}", f"{rows}x{'x'.join(map(str, event))}", dtype, nbytes, variants, device,
                   rep_ms=args.rep, env=env, only=args.variants)
    emit(name, f"{name} B*N={rows} {dtype} ({env['device']})", out, args)
    return out


def prepare(args) -> tuple[torch.device, dict, bool]:
    """``(device, environment stamp, whether the Triton kernels can run there)`` for a benchmark's ``args``."""
    device = resolve_device(args)
    ok, why = triton_available(device)
    if not ok:  # say so: the table would only lack the rows
        print(f"bench: the triton variants are not run on {device}: {why}", file=sys.stderr, flush=True)
    return device, environment(device), ok


def row_shapes(args, rows_full, event_full) -> tuple[tuple, tuple, int]:
    """``(B*N values, event shape, pixels per row)`` of a per-particle benchmark: ``--rows`` or the full
    sizes, and 4 rows of 3x8x8 for ``--smoke``."""
    event = (3, 8, 8) if args.smoke else tuple(event_full)
    return tuple(args.rows or ((4,) if args.smoke else rows_full)), event, event[0] * event[1] * event[2]


def resolve_device(args) -> torch.device:
    if args.smoke:
        if args.device not in (None, "cpu"):  # (it was overridden silently)
            print(f"bench: --smoke runs on the CPU; --device {args.device} is not used", file=sys.stderr)
        return torch.device("cpu")
    dev = torch.device(args.device) if args.device else default_device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} asked for but CUDA is not available")
    return dev


def release(device) -> None:
    """Free cached memory between cases."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
