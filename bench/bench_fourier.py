"""Blur normal residual ``A^T (A x - y)``: FFT path with the fused Triton spectrum kernel vs the same FFT
path with PyTorch's pointwise ops vs direct 61x61 convolutions.

Cases: N in {16, 64, 256} particles of 3x256x256 float32 pixels against one measurement (Y broadcast),
a 61x61 Gaussian kernel (circular boundary). Bytes: the minimum for the whole operator, read x, write
the result and read y once: ``(2 N + 1) * D * 4``.

Variants:
- ``triton_fused``: rfft2 -> :func:`blur_residual_triton` -> irfft2;
- ``torch_unfused``: rfft2 -> :func:`blur_residual_ref` (several complex pointwise kernels) -> irfft2;
- ``torch_compile``: the unfused FFT path under ``torch.compile``;
- ``conv2d_direct``: two depthwise ``conv2d`` calls with the 61x61 kernel on circularly padded input
  (A, then A^T with the flipped kernel).
``rel err``: max |out - float64 FFT reference| / max |reference|.

Measured on an NVIDIA H200 (bench/results/gpu_check-20261128-*): the fused FFT path at N = 64 x 3x256x256
with the 61x61 kernel in 0.268 ms, 105x faster than ``conv2d_direct`` (target 20x), 1.22x the unfused path.

    python -m bench.bench_fourier            # full sizes, CUDA
    python -m bench.bench_fourier --smoke    # tiny, CPU
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

if "--smoke" in sys.argv and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from bench import runner  # noqa: E402

NAME = "fourier"
PARTICLES_FULL = (16, 64, 256)
EVENT_FULL = (3, 256, 256)
KERNEL_FULL = 61



def _odd_size(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 3 or k % 2 == 0:
        raise argparse.ArgumentTypeError(f"must be an odd integer >= 3, got {text!r}")
    return k

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    runner.add_common_args(parser, variants=("conv2d_direct", "torch_unfused", "torch_compile", "triton_fused"))
    parser.add_argument("--particles", type=runner.positive_int, nargs="*", default=None)
    parser.add_argument("--kernel-size", type=_odd_size, default=None, help="odd blur kernel size >= 3 (default 61)")
    return parser.parse_args(argv)


def _circular_conv(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Depthwise cross-correlation of ``x (M, C, H, W)`` with ``k (kh, kw)``, circular boundary."""
    kh, kw = k.shape
    C = x.shape[1]
    xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="circular")
    return F.conv2d(xp, k.to(x.dtype).expand(C, 1, kh, kw), groups=C)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    from afdps.engine.ops import Blur, gaussian_kernel
    from afdps.kernels import fourier as fo

    device, env, triton_ok = runner.prepare(args)
    Ns = args.particles or ((2,) if args.smoke else PARTICLES_FULL)
    event = (3, 16, 16) if args.smoke else EVENT_FULL
    ksize = args.kernel_size or (5 if args.smoke else KERNEL_FULL)
    C, Hh, W = event
    if ksize > min(Hh, W):  # (Blur's ValueError, as a traceback)
        raise SystemExit(f"bench_fourier: --kernel-size {ksize} is larger than the {Hh}x{W} image"
                         + (" of --smoke" if args.smoke else "") + f"; at most {min(Hh, W) - (min(Hh, W) + 1) % 2}")
    D = C * Hh * W
    op = Blur(gaussian_kernel(ksize, ksize / 6.0), event)
    k32 = op.kernel.to(device=device, dtype=torch.float32)
    k_flip = torch.flip(k32, dims=(0, 1))

    def fft_path(residual_fn, x, y):
        X = torch.fft.rfft2(x, norm="ortho")
        Y = torch.fft.rfft2(y, norm="ortho")
        R, _ = residual_fn(X, op._buf("transfer", x, True), Y, W, False)
        return torch.fft.irfft2(R, s=(Hh, W), norm="ortho")

    def unfused(x, y):
        return fft_path(fo.blur_residual_ref, x, y)

    compiled = None
    if not args.no_compile and (not args.variants or "torch_compile" in args.variants):
        compiled = torch.compile(unfused, backend="eager" if device.type == "cpu" else "inductor")
    all_rows = []
    for N in Ns:
        gen = torch.Generator(device=device).manual_seed(N)
        x = torch.randn(1, N, C, Hh, W, device=device, generator=gen)
        y = torch.randn(1, 1, C, Hh, W, device=device, generator=gen)
        oracle = fft_path(fo.blur_residual_ref, x.double(), y.double())

        def direct():
            r = _circular_conv(x.view(N, C, Hh, W), k32) - y.view(1, C, Hh, W)
            return _circular_conv(r, k_flip).view(1, N, C, Hh, W)

        variants = {"torch_unfused": runner.Variant(lambda: unfused(x, y), error=runner.rel_err(unfused(x, y), oracle))}
        if compiled is not None:
            try:
                variants["torch_compile"] = runner.Variant(lambda: compiled(x, y),
                                                           error=runner.rel_err(compiled(x, y), oracle),
                                                           note=runner.compile_note(device))
            except Exception as exc:
                variants["torch_compile"] = runner.Variant(None, note=f"failed: {type(exc).__name__}: {exc}"[:160])
        variants["conv2d_direct"] = runner.Variant(direct, error=runner.rel_err(direct(), oracle))
        if triton_ok:
            fused = lambda: fft_path(fo.blur_residual_triton, x, y)  # noqa: E731
            variants["triton_fused"] = runner.Variant(fused, error=runner.rel_err(fused(), oracle))
        del oracle
        rows = runner.run_case(NAME, f"N={N} k={ksize}", f"1x{N}x{C}x{Hh}x{W}", "float32", (2 * N + 1) * D * 4,
                               variants, device, rep_ms=args.rep, env=env, only=args.variants,
                               speedup_over="conv2d_direct")
        runner.emit(NAME, f"blur A^T(Ax - y) N={N}, {ksize}x{ksize} kernel ({env['device']})", rows, args)
        all_rows += rows
        del x, y, variants
        runner.release(device)
    return all_rows


if __name__ == "__main__":
    main()
