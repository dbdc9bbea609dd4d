"""Langevin corrector of AFDPS-ODE: Triton kernel vs the eager PyTorch reference.

Cases: B*N in {16, 64, 256} rows of 3x256x256 pixels, float32. Bytes moved: read x, score, grad_mu and
write x_new, ``4 * R * D * itemsize``; the kernel reads score and grad_mu twice (a norms pass, then the
update: ``6 * R * D * itemsize`` in all) and regenerates the noise instead of storing it. Variants:
``torch_unfused`` (:func:`langevin_step_ref`, eager), ``triton_fused`` (:func:`langevin_step_triton`,
three launches) and, on CUDA, ``triton_graph`` (the launches replayed as a CUDA graph). ``rel err``:
max |out - float64 reference| / max |reference| of ``x_new`` and of the step sizes, the larger (rows before
2026-12-07: ``x_new``'s only).

    python -m bench.bench_langevin            # full sizes, CUDA
    python -m bench.bench_langevin --smoke    # tiny, CPU (Triton under the interpreter)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import runner  # noqa: E402  (bench/__init__.py sets TRITON_INTERPRET for --smoke runs)

import torch  # noqa: E402

NAME = "langevin"
ROWS_FULL = (16, 64, 256)
EVENT_FULL = (3, 256, 256)
PARTICLES = 16
STEP = dict(lam=0.8, snr=0.1)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    runner.add_common_args(parser, compiled=False, variants=("torch_unfused", "triton_fused", "triton_graph"))
    parser.add_argument("--rows", type=runner.particle_rows(PARTICLES), nargs="*", default=None, help="B*N values (default: 16 64 256)")
    return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    from afdps.kernels import langevin as lv

    device, env, triton_ok = runner.prepare(args)
    rows_list, event, D = runner.row_shapes(args, ROWS_FULL, EVENT_FULL)
    all_rows = []
    for R in rows_list:
        N = min(PARTICLES, R)
        B = R // N
        gen = torch.Generator(device=device).manual_seed(R)
        x, s, g = (torch.randn(R, D, device=device, generator=gen) for _ in range(3))
        keys = torch.arange(B, dtype=torch.int64, device=device) * 7919 + 1
        kw = dict(num_particles=N, **STEP)
        oracle = lv.langevin_step_ref(x.double(), s.double(), g.double(), keys, **kw)
        err = runner.rel_err(lv.langevin_step_ref(x, s, g, keys, **kw), oracle)
        variants = {"torch_unfused": runner.Variant(lambda: lv.langevin_step_ref(x, s, g, keys, **kw), error=err)}
        if triton_ok:
            err = runner.rel_err(lv.langevin_step_triton(x, s, g, keys, **kw), oracle)
            variants["triton_fused"] = runner.Variant(lambda: lv.langevin_step_triton(x, s, g, keys, **kw), error=err)
            if device.type == "cuda":
                params = lv.langevin_step_params(**STEP, device=device)
                variants["triton_graph"] = runner.Variant(
                    lambda: lv.langevin_step_launch(x, s, g, keys, params, num_particles=N), cuda_graph=True,
                    error=err)
        del oracle
        all_rows += runner.run_rows_case(NAME, R, event, "float32", 4 * R * D * x.element_size(), variants, device,
                                         args, env)
        del x, s, g, variants
        runner.release(device)
    return all_rows


if __name__ == "__main__":
    main()
