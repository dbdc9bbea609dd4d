"""``afdps demo``: restore a bundled photo with the bundled prior (the work: :func:`afdps.engine.demo.run_demo`)."""
from __future__ import annotations

import argparse

import torch

from ..engine.demo import run_demo
from ._common import DEFAULT_THREADS, nonneg_float, positive_int, resolve_device, seed_int, sigma_float, steps_int

HELP = "restore a bundled photo with the bundled prior"
MEMORY_OPTIONS = "in afdps demo: num_particles is --particles"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--particles", type=positive_int, default=64, help="particles (default: 64)")
    p.add_argument("--steps", type=steps_int, default=60, help="time steps (default: 60)")
    p.add_argument("--method", choices=("sde", "ode"), default="sde", help="sampler (default: sde)")
    p.add_argument("--eta", type=nonneg_float, default=None,
                   help="guidance weight of the SDE, >= 0 (default: 1, AFDPS-SDE; the ODE has none)")
    p.add_argument("--tempering", choices=("none", "linear"), default="linear",
                   help="lam schedule: the likelihood's weight grows from 0 to 1 along the run (linear) or is 1 "
                   "throughout (none) (default: linear)")
    p.add_argument("--size", type=positive_int, default=256, help="image side, 64 to 300 (default: 256)")
    p.add_argument("--sigma-y", type=sigma_float, default=0.05, help="measurement noise on [-1, 1] (default: 0.05)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default: 0)")
    p.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS,
                   help="CPU threads for torch (default: half the cores, at most 8; here %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args) -> int:
    torch.set_num_threads(args.threads)
    run_demo(args.out, particles=args.particles, steps=args.steps, method=args.method, eta=args.eta,
             tempering=args.tempering, size=args.size, sigma_y=args.sigma_y, seed=args.seed,
             device=resolve_device(args.device),
             progress=False if args.no_progress else None)
    return 0
