"""Row layout shared by the per-particle kernels (:mod:`.particle_step`, :mod:`.langevin`).

Rows are particles, ``R = B * N`` of them (image-major), each a flat vector of ``D`` pixels, contiguous.
One program owns ``BLOCK`` pixels of one row; pixels are handled as a ``(BLOCK // 4, 4)`` tile so that
one Philox call serves four pixels (the stream of :mod:`.philox`).
"""
from __future__ import annotations

import math
import numbers

import torch

from ._triton import triton
from .backend import interpreting
from .philox import randn_rows

__all__ = ["GPU_BLOCK", "GPU_WARPS", "INTERP_MAX_BLOCK", "row_block", "check_rows", "check_scalars", "rows_noise"]

# Launch configuration. On a GPU: 2048 pixels per program (8 per thread with 8 warps: two 16-byte
# loads per array in flight). Measured with it on an NVIDIA H200 (bench/results/gpu_check-20261128-*):
# the fused particle step at 256 x 3x256x256 float32 moves its bytes at 78-87% of the device's copy
# bandwidth; not tuned further. Under the interpreter every program costs milliseconds of Python, so
# a row is covered by as few programs as possible.
GPU_BLOCK, GPU_WARPS = 2048, 8
INTERP_MAX_BLOCK = 1 << 15


def row_block(D: int, block: int | None) -> int:
    """Pixels per program for rows of ``D`` pixels (``block``: an explicit power of two >= 4)."""
    if block is not None:
        if block < 4 or block & (block - 1):
            raise ValueError(f"block must be a power of two >= 4, got {block}")
        return block
    if interpreting():
        return max(4, min(triton.next_power_of_2(D), INTERP_MAX_BLOCK))
    return max(128, min(triton.next_power_of_2(D), GPU_BLOCK))


def check_rows(x, score, grad_mu, keys, num_particles: int):
    """Validate ``(R, D)`` rows of ``B = R / num_particles`` images and their ``(B,)`` keys; ``(R, D, N)``."""
    if x.dim() != 2:
        raise ValueError(f"x must be (R, D), got shape {tuple(x.shape)}")
    R, D = x.shape
    for name, t in (("score", score), ("grad_mu", grad_mu)):
        if tuple(t.shape) != (R, D):
            raise ValueError(f"{name} must have the shape of x {(R, D)}, got {tuple(t.shape)}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, x on {x.device}")
    if isinstance(num_particles, bool) or not float(num_particles).is_integer():  # (2.5 was taken as 2)
        raise ValueError(f"num_particles must be an integer, got {num_particles!r}")
    N = int(num_particles)
    if N < 1 or R % N:
        raise ValueError(f"num_particles={num_particles!r} must divide the number of rows {R}")
    if keys.shape != (R // N,) or keys.dtype != torch.int64:
        raise ValueError(f"keys must be ({R // N},) int64, got {tuple(keys.shape)} {keys.dtype}")
    if x.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise ValueError(f"x must be a floating tensor, got {x.dtype}")
    return R, D, N


def check_scalars(nonnegative=(), **values) -> None:
    """Refuse a step scalar that is not a finite real number (a NaN moved every row to NaN without a word), or a
    negative one among the names in ``nonnegative``. Tensors pass unchecked (per-image values, read on the device)."""
    for name, v in values.items():
        if isinstance(v, torch.Tensor):
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise ValueError(f"{name} must be a finite real number, got {v!r}")
        if name in nonnegative and v < 0:
            raise ValueError(f"{name} must be >= 0, got {v!r}")


def rows_noise(keys: torch.Tensor, num_particles: int, D: int, like: torch.Tensor, row0: int = 0) -> torch.Tensor:
    """Standard normals ``(R, D)`` of the Philox stream under ``keys`` (``num_particles`` rows per key, the
    first of them global particle ``row0``)."""
    return randn_rows(keys.to(like.device), num_particles, D, row0=row0).reshape(-1, D)
