"""Fused particle step: Triton kernel vs the eager PyTorch reference vs torch.compile of it.

Cases: B*N in {16, 64, 256, 1024} rows of 3x256x256 pixels, float32 and bfloat16 storage. Bytes moved:
read x, score, grad_mu and write x_new, ``4 * R * D * itemsize`` (the noise is generated in-kernel).
Variants: ``torch_unfused`` (:func:`particle_step_ref`, eager; it draws the kernel's Philox noise with int64 tensor
operations, most of its time), ``torch_randn`` (the same reference with ``torch.randn`` noise: other random numbers,
the eager step without that emulation, the fairer eager baseline), ``torch_compile`` (the same function
under ``torch.compile(dynamic=True)``), ``triton_fused`` (:func:`particle_step_triton`, including the
upload of the step scalars) and, on CUDA, ``triton_graph`` (:func:`particle_step_launch` replayed as a
CUDA graph: the kernel time without Python launch overhead). ``rel err``: max |out - float64
reference| / max |reference| of ``x_new`` and of ``dlogw``, the larger (rows before 2026-12-07: ``x_new``'s only).

Measured on an NVIDIA H200 (bench/results/gpu_check-20261128-*): ``triton_fused`` at B*N = 256 float32
in 0.219-0.244 ms, 78-87 % of copy bandwidth, 61-68x faster than ``torch_unfused`` (mostly its Philox emulation;
``torch_randn`` was added after that run) and 5.1x faster than ``torch_compile``.

    python -m bench.bench_particle_step            # full sizes, CUDA
    python -m bench.bench_particle_step --smoke    # tiny, CPU (Triton under the interpreter)
"""
from __future__ import annotations

import argparse
import sys
from unittest import mock
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import runner  # noqa: E402  (bench/__init__.py sets TRITON_INTERPRET for --smoke runs)

import torch  # noqa: E402

NAME = "particle_step"
ROWS_FULL = (16, 64, 256, 1024)
EVENT_FULL = (3, 256, 256)
PARTICLES = 16
STEP = dict(f=-5.0, g2=10.0, v2=10.0, eta=1.0, h=0.005, lam=1.0, lap_mu=1.0e6, euler=False)


def _randn_rows(keys, num_particles, D, x, row0=0):
    """``rows_noise``'s shape and device from ``torch.randn`` (the timing baseline without the Philox emulation)."""
    return torch.randn(x.shape[0], D, device=x.device)


def _power_of_two(text: str) -> int:
    v = runner.positive_int(text)
    if v < 4 or v & (v - 1):  # (the kernel refused it with a traceback)
        raise argparse.ArgumentTypeError(f"must be a power of two >= 4, got {text!r}")
    return v


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    runner.add_common_args(parser, variants=("torch_unfused", "torch_randn", "torch_compile", "triton_fused",
                                                    "triton_graph"))
    parser.add_argument("--rows", type=runner.particle_rows(PARTICLES), nargs="*", default=None, help="B*N values (default: 16 64 256 1024)")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"], choices=("float32", "bfloat16"),
                        help="storage dtypes (default: both)")
    parser.add_argument("--block", type=_power_of_two, default=None,
                        help="pixels per program of the fused kernel, a power of two >= 4 (tuning)")
    parser.add_argument("--warps", type=runner.positive_int, default=None, help="num_warps of the fused kernel (tuning)")
    return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    from afdps.kernels import particle_step as ps

    device, env, triton_ok = runner.prepare(args)
    rows_list, event, D = runner.row_shapes(args, ROWS_FULL, EVENT_FULL)
    compiled = None
    if not args.no_compile and (not args.variants or "torch_compile" in args.variants):
        if device.type == "cpu":
            # CPU smoke run: the reference draws its noise through NumPy there, which dynamo should not
            # trace, and the Inductor C++ build would take minutes: trace with the eager backend.
            from torch import _dynamo

            _dynamo.config.trace_numpy = False
        compiled = torch.compile(ps.particle_step_ref, dynamic=True,
                                 backend="eager" if device.type == "cpu" else "inductor")
    all_rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for R in rows_list:
            N = min(PARTICLES, R)
            B = R // N
            gen = torch.Generator(device=device).manual_seed(R)
            x = torch.randn(R, D, device=device, generator=gen).to(dtype)
            s = torch.randn(R, D, device=device, generator=gen).to(dtype)
            g = torch.randn(R, D, device=device, generator=gen).to(dtype)
            keys = torch.arange(B, dtype=torch.int64, device=device) * 7919 + 1
            kw = dict(num_particles=N, **STEP)
            oracle = ps.particle_step_ref(x.double(), s.double(), g.double(), keys, **kw)
            variants = {}
            err = runner.rel_err(ps.particle_step_ref(x, s, g, keys, **kw), oracle)
            variants["torch_unfused"] = runner.Variant(lambda: ps.particle_step_ref(x, s, g, keys, **kw), error=err)

            def with_randn():  # the reference's arithmetic, its noise from torch.randn
                with mock.patch.object(ps, "rows_noise", _randn_rows):
                    return ps.particle_step_ref(x, s, g, keys, **kw)
            variants["torch_randn"] = runner.Variant(with_randn, note="torch.randn noise: other random numbers")
            if compiled is not None:
                try:
                    err = runner.rel_err(compiled(x, s, g, keys, **kw), oracle)
                    variants["torch_compile"] = runner.Variant(lambda: compiled(x, s, g, keys, **kw), error=err,
                                                               note=runner.compile_note(device))
                except Exception as exc:  # reported in the table, the other variants still run
                    variants["torch_compile"] = runner.Variant(None, note=f"failed: {type(exc).__name__}: {exc}"[:160])
            if triton_ok:
                params = ps.particle_step_params(**{k: STEP[k] for k in ps.PARAM_NAMES}, device=device)
                if args.block or args.warps:  # tuning: the launcher with an explicit configuration
                    def fused():
                        return ps.particle_step_launch(x, s, g, keys, params, num_particles=N, euler=False,
                                                       noise=True, block=args.block, num_warps=args.warps)
                else:
                    def fused():
                        return ps.particle_step_triton(x, s, g, keys, **kw)
                err = runner.rel_err(fused(), oracle)
                tuned = (f"block {args.block or 'default'}, {args.warps or 'default'} warps" if args.block or args.warps
                         else "")  # (a tuning sweep's rows told apart)
                variants["triton_fused"] = runner.Variant(fused, error=err, note=tuned)
                if device.type == "cuda":
                    variants["triton_graph"] = runner.Variant(
                        lambda: ps.particle_step_launch(x, s, g, keys, params, num_particles=N, euler=False, noise=True,
                                                        block=args.block, num_warps=args.warps),
                        cuda_graph=True, error=err, note=tuned)
            del oracle
            all_rows += runner.run_rows_case(NAME, R, event, dtype_name, 4 * R * D * x.element_size(), variants,
                                             device, args, env)
            del x, s, g, variants
            runner.release(device)
    return all_rows


if __name__ == "__main__":
    main()
