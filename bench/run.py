"""Run benchmarks: ``python -m bench.run --all [--smoke]`` or ``python -m bench.run particle_step fourier``.

Every ``bench/bench_<name>.py`` is a benchmark; each runs in its own process (``python -m
bench.bench_<name>``), so one that fails or runs out of memory does not stop the others. ``--smoke``
(tiny shapes on the CPU) is passed to all of them; ``--markdown PATH`` (made absolute: the benchmarks run in
the repository's root) to those that write markdown, ``--rep`` to the kernel benchmarks. Exit status: 0 when every benchmark ran,
1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RUNNER_BASED = ("particle_step", "langevin", "resample", "fourier")  # --rep: their timed variants
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


def main(argv=None) -> int:
    args = parse_args(argv)
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
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        print(f"# bench_{name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {time.perf_counter() - t0:.1f} s",
              flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
