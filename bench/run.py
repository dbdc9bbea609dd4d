"""Run benchmarks: ``python -m bench.run --all [--smoke]`` or ``python -m bench.run particle_step fourier``.

Every ``bench/bench_<name>.py`` is a benchmark; each runs in its own process (``python -m
bench.bench_<name>``), so one that fails or runs out of memory does not stop the others. ``--smoke``
(tiny shapes on the CPU) is passed to all of them; without it and without CUDA, ``--all`` leaves out the benchmarks
whose default is the FFHQ-size network (``GPU_SIZED``: hours on a CPU) and says so (name them to run them);
``--markdown PATH`` (made absolute: the benchmarks run in the repository's root) to those that write markdown,
``--rep`` to the kernel benchmarks. ``--timeout S`` kills a benchmark's whole process group after S seconds.
Exit status: 0 when every benchmark ran, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RUNNER_BASED = ("particle_step", "langevin", "resample", "fourier")  # --rep: their timed variants
GPU_SIZED = ("adm", "restoration")  # default: the 93.6M-parameter FFHQ-configuration ADM at 256x256
MARKDOWN = RUNNER_BASED + ("sampler", "adm", "restoration")  # --markdown: the scripts that take it


def discover() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in BENCH.glob("bench_*.py"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (known: {', '.join(discover())})")
    parser.add_argument("--all", action="store_true", help="run every bench/bench_*.py")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--markdown", default=None, help="append the tables to this markdown file")
    parser.add_argument("--rep", type=float, default=None, help="ms of timed repetitions per variant")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed to each benchmark (> 0)")
    args = parser.parse_args(argv)
    if args.timeout is not None and not args.timeout > 0:
        parser.error(f"--timeout must be a number of seconds > 0, got {args.timeout:g}")
    if args.rep is not None and not args.rep > 0:
        parser.error(f"--rep must be a number of milliseconds > 0, got {args.rep:g}")
    if args.markdown is not None:
        args.markdown = str(Path(args.markdown).resolve())  # (relative to where the user is, not to ROOT)
    known = discover()
    if args.all:
        args.names = known
    if not args.names:
        parser.error("name benchmarks to run or pass --all")
    bad = [n for n in args.names if n not in known]
    if bad:
        parser.error(f"unknown benchmark(s) {', '.join(bad)}; known: {', '.join(known)}")
    return args


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _run(cmd, *, cwd, env, timeout):
    """The exit status of ``cmd``, or ``"timeout"``: its whole process group is killed at ``timeout`` (a benchmark's
    own worker processes too: ``bench_throughput`` runs each case in a child, which a kill of its parent alone left
    running)."""
    posix = os.name == "posix"
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=posix)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    finally:  # a timeout, Ctrl-C (the new session no longer gets the terminal's signal), or workers left behind
        if posix:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):  # (the group had already gone)
                pass
        elif proc.poll() is None:
            proc.kill()
        proc.wait()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.all and not args.smoke and not _cuda():
        left = [n for n in args.names if n in GPU_SIZED]
        args.names = [n for n in args.names if n not in GPU_SIZED]
        print(f"bench.run: no CUDA device: leaving out {', '.join(f'bench_{n}' for n in left)} (their default is the "
              f"FFHQ-size network: hours on a CPU); run them by name (python -m bench.run {' '.join(left)}) or with "
              "--smoke", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    failed = []
    for name in args.names:
        cmd = [sys.executable, "-m", f"bench.bench_{name}"]
        if args.smoke:
            cmd.append("--smoke")
        if name in MARKDOWN and args.markdown:
            cmd += ["--markdown", args.markdown]
        if name in RUNNER_BASED and args.rep is not None:
            cmd += ["--rep", str(args.rep)]
        print(f"$ {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = _run(cmd, cwd=ROOT, env=env, timeout=args.timeout)
        print(f"# bench_{name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {time.perf_counter() - t0:.1f} s",
              flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
