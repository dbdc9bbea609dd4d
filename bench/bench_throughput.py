"""Images per hour and peak memory of whole restorations with the shipped MNIST prior (CPU or GPU).

Each configuration runs in a fresh process: box inpainting of one test digit with N particles and the
default sampler (FK, eta 0.5, the Tweedie potential) or the "scaled" potential; after one warm-up step, a run of
1 step and one of ``--steps`` steps are timed and extrapolated to 100 steps as ``t_1 + 99 (t_S - t_1) / (S - 1)``:
a run's set-up and its last step (one network call fewer with the Tweedie potential) once, every other step alike.
(Until 2026-12-07 it took ``t_S / S * 100``, counting the cheaper last step 1 in S instead of 1 in 100: about 2%
low at S = 10 with the Tweedie potential.) Peak memory: the
process's resident high-water mark (Linux ``VmHWM``, reset after the warm-up) above its level before the run, or on CUDA
``torch.cuda.max_memory_allocated``, against the sampler's own estimate (``memory_estimate``).

    python -m bench.bench_throughput --particles 16 64 256 --steps 10 --out bench/results/throughput-cpu.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from afdps.cli._common import positive_int  # noqa: E402
from bench.runner import device_arg, print_report


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _two_or_more(text: str) -> int:
    v = positive_int(text)
    if v < 2:  # (a step other than the last is timed as the difference of a 1-step and an S-step run)
        raise argparse.ArgumentTypeError(f"must be an integer >= 2, got {text!r}")
    return v


def one(N: int, potential: str, steps: int, device: str) -> dict:
    import torch
    cuda = torch.device(device).type == "cuda"  # (cuda:0 too: it was timed unsynchronised, its peak from the RSS)

    import afdps
    from afdps.engine.evaluate import make_operator
    from afdps.engine.sampler import memory_estimate

    torch.set_num_threads(1)
    prior = afdps.load_prior("mnist", device=device, batch_size="auto")
    x, _ = afdps.load_mnist_test(1)
    op = make_operator("box", (1, 28, 28))
    y = op.measure(x.double(), 0.05, torch.Generator().manual_seed(0)).float().to(device)
    pot = None if potential == "default" else potential
    afdps.sample(prior, op, y, 0.05, num_particles=N, num_steps=1, seed=0, potential=pot, progress=False)  # warm-up

    def timed(n: int):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = afdps.sample(prior, op, y, 0.05, num_particles=N, num_steps=n, seed=0, potential=pot, progress=False)
        if cuda:
            torch.cuda.synchronize()
        return res, time.perf_counter() - t0

    _, wall_1 = timed(1)  # the set-up and a last step (peak memory: the longer run's, below)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    try:  # reset the high-water mark to the current resident size, so the earlier runs' peaks do not count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    base_rss = _rss_kib("VmRSS")
    res, wall = timed(steps)
    peak = (torch.cuda.max_memory_allocated() - base) if cuda else (_rss_kib("VmHWM") - base_rss) * 1024
    est, _ = memory_estimate(prior, y, N)
    step = (wall - wall_1) / (steps - 1)  # a step other than the last
    if step <= 0:  # (the 1-step run's noise exceeded the steps between: a negative time per step)
        raise SystemExit(f"bench_throughput: {steps} steps took {wall:.3f} s and 1 step {wall_1:.3f} s: the timing noise "
                         "exceeds the steps between; time more --steps")
    per_image_100 = wall_1 + 99 * step
    return {"N": N, "potential": res.potential, "steps_timed": steps, "s_per_step": step, "s_one_step_run": wall_1,
            "s_per_image_100_steps": per_image_100, "images_per_hour": 3600 / per_image_100,
            "peak_bytes": int(peak), "estimate_bytes": int(est), "device": device,
            "network_batch": prior.network_batch(N, None)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--particles", type=positive_int, nargs="+", default=[16, 64, 256], help="particles per run")
    p.add_argument("--potentials", nargs="+", default=["default", "scaled"],
                   choices=("default", "scaled", "noisy", "inflated"),
                   help="default: the sampler's (FK's Tweedie potential)")
    p.add_argument("--steps", type=_two_or_more, default=10, help="steps of the longer timed run, >= 2")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu or cuda")
    p.add_argument("--out", default=None, help="markdown file the table is written to")
    p.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true", help="4 particles, 2 steps, the default potential only")
    args = p.parse_args(argv)
    if args.smoke:
        args.particles, args.potentials, args.steps, args.device = [4], ["default"], 2, "cpu"
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1], args.steps, args.device)))
        return 0
    rows = []
    for pot in args.potentials:
        for N in args.particles:
            run = subprocess.run([sys.executable, "-m", "bench.bench_throughput", "--one", str(N), pot, "--steps",
                                  str(args.steps), "--device", args.device], capture_output=True, text=True,
                                 cwd=Path(__file__).resolve().parents[1])
            if run.returncode != 0:  # the child's own error, not a CalledProcessError that hides it
                last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
                print(f"bench_throughput: potential {pot}, N = {N} failed: {last}", file=sys.stderr)
                return 1
            out = run.stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    lines = [f"Box inpainting of one MNIST digit, 100 steps (after a warm-up step, runs of 1 and {args.steps} steps "
             "timed: the set-up and last step once, 99 other steps), device "
             f"{args.device}, one thread.", "",
             "| potential | N | s / step | s / image | images / hour | peak memory | estimate | peak / estimate |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['potential']} | {r['N']} | {r['s_per_step']:.3f} | {r['s_per_image_100_steps']:.0f} | "
                     f"{r['images_per_hour']:.1f} | {r['peak_bytes'] / 2**20:.1f} MiB | {r['estimate_bytes'] / 2**20:.1f} MiB | "
                     f"{r['peak_bytes'] / r['estimate_bytes']:.2f} |")
    print_report("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
