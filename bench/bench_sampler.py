"""One whole AFDPS step: time per step split into score, operator, update, resampling and Stage I's share (its one
run divided by the steps).

Stationary Gaussian prior (its score is one FFT pair, like a cheap network) and the paper's Gaussian
blur (61x61, std 3; here 3x64x64 images use a 31x31 kernel of std 3 so the kernel fits), sigma_y 0.05,
AFDPS-SDE eta = 1 with systematic resampling. ``--backend`` chooses the reference (``torch``) or the
kernels (``triton``); times come from ``afdps.sample(..., profile=True)``, which synchronises around
each part, averaged over ``--steps`` steps after one warm-up run.

    python -m bench.bench_sampler                 # N in 16, 64, 256 x 3x64x64 on this machine
    python -m bench.bench_sampler --size 256 --particles 64 256 1024 --device cuda --backend triton
    python -m bench.bench_sampler --size 256 --particles 64 256 --device cuda --backend triton --cuda-graph
"""
from __future__ import annotations

import argparse
import os
import time

import torch

import afdps
from afdps import ops
from afdps.priors import SpectralGaussian
from afdps.kernels import backend as _backend

from bench import runner


def _wall_per_step(fn, steps: int, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1e3 * (time.perf_counter() - t0) / steps


def one(N: int, size: int, steps: int, device, backend: str, cuda_graph: bool = False) -> dict:
    C = 3
    g = torch.Generator().manual_seed(0)
    power = (1.0 / (1.0 + torch.arange(size // 2 + 1, dtype=torch.float64))) ** 2
    power = power[None, None, :] * torch.ones(C, size, 1, dtype=torch.float64) + 1e-4
    prior = SpectralGaussian(torch.zeros(C), power, size)
    k = min(61, size // 2 - 1 if (size // 2) % 2 == 0 else size // 2)
    op = ops.Blur(ops.gaussian_kernel(k, 3.0), (C, size, size))
    x = torch.rand(1, C, size, size, generator=g, dtype=torch.float64) * 2 - 1
    y = op.measure(x.float(), 0.05, g).to(device)
    # the configuration the README's per-step table describes: AFDPS-SDE (eta 1), the paper's potential, no
    # tempering, a uniform grid (pinned: the defaults of afdps.sample are tuned for learned priors)
    kw = dict(num_particles=N, num_steps=steps, seed=0, backend=backend, progress=False, method="sde", eta=1.0,
              potential="noisy", tempering="none", time_power=1.0)
    afdps.sample(prior, op, y, 0.05, **{**kw, "num_steps": 2})  # warm-up (kernel compilation, caches)
    t0 = time.perf_counter()
    r = afdps.sample(prior, op, y, 0.05, profile=True, **kw)
    wall = time.perf_counter() - t0
    ms = {k: 1e3 * v / steps for k, v in r.timings.items()}
    total = sum(ms.values())
    graph = {}
    if cuda_graph:  # whole run without profiling: eager vs CUDA-graph replay (first graph call captures)
        eager_ms = _wall_per_step(lambda: afdps.sample(prior, op, y, 0.05, **kw), steps, device)
        afdps.sample(prior, op, y, 0.05, cuda_graph=True, **kw)
        graph_ms = _wall_per_step(lambda: afdps.sample(prior, op, y, 0.05, cuda_graph=True, **kw), steps, device)
        afdps.clear_graph_cache()
        graph = {"eager_ms_per_step": eager_ms, "graph_ms_per_step": graph_ms, "graph_speedup": eager_ms / graph_ms}
    return {
        "bench": "sampler", "case": f"N={N}", "shape": f"{N}x{C}x{size}x{size}",
        "backend": backend if backend != "auto" else f"auto: {'triton' if _backend.use_triton(None, device, 'bench') else 'torch'}",
        "kernel": f"{k}x{k}", "steps": steps, "stage1_ms": ms.get("stage1", 0.0), "score_ms": ms.get("score", 0.0), "operator_ms": ms.get("operator", 0.0),
        "update_ms": ms.get("update", 0.0), "resample_ms": ms.get("resample", 0.0), "step_ms": total,
        "outside_score_ms": total - ms.get("score", 0.0), "wall_ms_per_step": 1e3 * wall / steps,
        "resampled_steps": int(r.resampled.sum()), "threads": torch.get_num_threads(), **graph,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    runner.add_common_args(p, compiled=False)
    p.add_argument("--particles", type=runner.positive_int, nargs="*", default=None,
                   help="particle counts (default: 16 64 256; --smoke: 2)")
    p.add_argument("--size", type=runner.positive_int, default=None, help="image side, >= 16 (default: 64; --smoke: 16)")
    p.add_argument("--steps", type=runner.positive_int, default=None, help="time steps (default: 10; --smoke: 2)")
    p.add_argument("--backend", default="torch", choices=("torch", "triton", "auto"))
    p.add_argument("--cuda-graph", action="store_true",
                   help="also time whole runs eagerly and as CUDA-graph replays (CUDA and the triton backend)")
    p.add_argument("--threads", type=runner.positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = runner.resolve_device(args)
    small = args.smoke  # --smoke's sizes for what was not given (given ones were overridden, silently)
    args.particles = args.particles or ([2] if small else [16, 64, 256])
    args.size = args.size or (16 if small else 64)
    args.steps = args.steps or (2 if small else 10)
    if args.size < 16:
        p.error(f"--size must be at least 16 (its blur kernel is about half the side, at most 61), got {args.size}")
    if args.backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        p.error(f"--backend triton runs on CUDA devices (or under TRITON_INTERPRET=1); got device {device}: use "
                "--backend torch or auto")
    if args.cuda_graph and (device.type != "cuda" or args.backend == "torch"):
        p.error(f"--cuda-graph needs --device cuda and --backend triton or auto (CUDA graphs replay the Triton "
                f"kernels); got device {device} and backend {args.backend}")
    env = runner.environment(device)
    rows = []
    for N in args.particles:
        row = one(N, args.size, args.steps, device, args.backend, args.cuda_graph)
        rows.append({**env, **row})
        runner.release(device)
    cols = ["shape", "backend", "threads", "kernel", "stage1_ms", "score_ms", "operator_ms", "update_ms", "resample_ms", "step_ms",
            "outside_score_ms", "resampled_steps"] + (["eager_ms_per_step", "graph_ms_per_step", "graph_speedup"]
                                                      if args.cuda_graph else [])
    title = f"AFDPS step, ms per step, {env['device']}, torch {env['torch']}"
    table = runner.markdown_table(rows, cols)
    print(f"\n### {title}\n\n{table}", flush=True)
    if runner.writes_csv(args):
        runner.append_csv("sampler", rows)
    if args.markdown:
        runner.append_text(args.markdown, f"\n### {title}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
