"""The one module that imports Triton (guarded, so ``import afdps`` works without it).

Kernel modules import ``triton``, ``tl`` and ``HAS_TRITON`` from here. Without Triton, ``triton.jit``
is a stand-in decorator that leaves the Python function in place (never launched: the dispatchers
ask :func:`afdps.kernels.backend.use_triton` first), so the modules still import and their references still run.

Shared helpers for the launchers live here too: :func:`requires_triton` (the guard of every launcher),
:func:`f64_scalars` (per-step scalars as a float64 device tensor, so a kernel compiles once and a CUDA
graph can replay it with new values), :func:`num_sms` and the Philox tile helpers. The choice between a
kernel and its reference is made in :mod:`afdps.kernels.backend`.
"""
from __future__ import annotations

import functools

import torch

try:  # pragma: no cover - exercised by whichever environment runs the tests
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover
    HAS_TRITON = False

    class _Stub:
        """Enough of ``triton`` / ``triton.language`` for the kernel modules to import."""

        constexpr = object
        float32 = float64 = bfloat16 = int32 = int64 = None

        @staticmethod
        def jit(fn=None, **_kwargs):
            return fn if fn is not None else (lambda f: f)

        @staticmethod
        def next_power_of_2(n: int) -> int:
            return 1 << max(int(n) - 1, 0).bit_length()

        @staticmethod
        def cdiv(a: int, b: int) -> int:
            return -(-int(a) // int(b))

    triton = _Stub()
    tl = _Stub()

__all__ = ["triton", "tl", "HAS_TRITON", "requires_triton", "f64_scalars", "num_sms", "tl_dtype", "tile_offsets",
           "is_channels_last", "philox_uniform4", "philox_normal_tile", "to_storage", "row_tile"]


def requires_triton(fn):
    """Decorate a launcher: calling it without Triton installed raises ``RuntimeError`` naming it."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not HAS_TRITON:
            raise RuntimeError(f"{fn.__name__} needs triton (pip install 'afdps[triton]')")
        return fn(*args, **kwargs)

    return wrapper


def f64_scalars(values, device) -> torch.Tensor:
    """A float64 tensor of ``values`` on ``device`` without a host synchronisation.

    On CUDA the copy is ``non_blocking`` from pageable memory: the driver stages the 8-byte words at
    once and the host does not wait for the stream. Kernels load these instead of taking Python floats,
    which Triton would pass as float32 (and a CUDA graph would freeze). While a CUDA graph is being
    captured the values are written by fill kernels instead (a host copy cannot be captured).
    """
    values = [float(v) for v in values]
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        # A host-to-device copy cannot be captured; fill kernels carry the values as launch arguments
        # (float64, exact), which a graph replays unchanged (the scalars of a captured step are fixed).
        out = torch.empty(len(values), dtype=torch.float64, device=device)
        for i, v in enumerate(values):
            out[i].fill_(v)
        return out
    t = torch.tensor(values, dtype=torch.float64)
    if device.type == "cpu":
        return t
    return t.to(device, non_blocking=True)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_sms(device) -> int:
    """Streaming multiprocessors of a CUDA device (1 under the interpreter)."""
    device = torch.device(device)
    if device.type != "cuda":
        return 1
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-D tensor is stored channels-last and not also contiguous (one channel is both): the ``CL`` flag of
    kernels that tile with :func:`tile_offsets`."""
    return x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous()


@triton.jit
def tile_offsets(p, c, C, HW, CL: tl.constexpr):
    """Offsets within one sample of a ``[pixels, channels]`` tile of an ``(N, C, H, W)`` tensor: ``p C + c`` in
    channels-last (a pixel's channels consecutive), ``c HW + p`` in the contiguous layout."""
    if CL:
        return p[:, None] * C + c[None, :]
    else:
        return c[None, :] * HW + p[:, None]


def tl_dtype(dtype: torch.dtype):
    """The ``tl`` compute dtype for a storage dtype: float64 stays float64, everything else float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


# ---- Philox helpers shared by the kernels (the stream of kernels/philox.py) -------------------------
@triton.jit
def philox_uniform4(key, j, i):
    """Four float32 uniforms in [0, 1): the words of Philox4x32-10 counter ``(j, i, 0, 0)`` under the
    64-bit ``key`` (int64 scalar), through ``uint_to_uniform_float``. ``j``: int32 block; ``i``: int32
    scalar or block broadcastable against ``j``."""
    zero = j * 0
    r0, r1, r2, r3 = tl.philox(key, j, i + zero, zero, zero)
    return (tl.uint_to_uniform_float(r0), tl.uint_to_uniform_float(r1),
            tl.uint_to_uniform_float(r2), tl.uint_to_uniform_float(r3))


@triton.jit
def philox_normal_tile(key, j, i, lane):
    """Standard normals of elements ``4 j + lane`` (a ``(G, 4)`` tile) of row ``i``: two Box-Muller
    pairs per Philox call, element ``4j + 0, 1`` from ``(u0, u1)`` and ``4j + 2, 3`` from ``(u2, u3)``."""
    u0, u1, u2, u3 = philox_uniform4(key, j, i)
    n0, n1 = tl.pair_uniform_to_normal(u0, u1)
    n2, n3 = tl.pair_uniform_to_normal(u2, u3)
    ln = lane[None, :]
    return tl.where(ln == 0, n0[:, None], tl.where(ln == 1, n1[:, None], tl.where(ln == 2, n2[:, None], n3[:, None])))


@triton.jit
def to_storage(x, dtype: tl.constexpr):
    """Round ``x`` to the storage ``dtype``. bfloat16 is rounded to nearest-even by hand (the bits'
    upper half plus a carry), because the interpreter's float32 -> bfloat16 cast truncates while the GPU
    rounds; NaN stays NaN. Other dtypes use the ordinary cast."""
    if dtype == tl.bfloat16:
        b = x.to(tl.float32).to(tl.int32, bitcast=True)
        r = b + 0x7FFF + ((b >> 16) & 1)
        r = tl.where(x != x, b | 0x400000, r)
        return (r >> 16).to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(dtype)


@triton.jit
def row_tile(NB, D, BLOCK: tl.constexpr):
    """The tile of this program in the per-particle layout (kernels/_rows.py): program ``pid`` owns block
    ``blk = pid % NB`` of row ``row = pid // NB``, as a ``(BLOCK // 4, 4)`` tile of pixel indices ``d``
    (Philox group ``j = d // 4``, ``lane = d % 4``). Returns ``(row, blk, lane, j, d, mask, base)`` with
    ``mask = d < D`` and ``base`` the int64 offset of the row."""
    pid = tl.program_id(0)
    row = pid // NB
    blk = pid % NB
    G: tl.constexpr = BLOCK // 4
    lane = tl.arange(0, 4)
    j = blk * G + tl.arange(0, G)
    d = j[:, None] * 4 + lane[None, :]
    return row, blk, lane, j, d, d < D, row.to(tl.int64) * D
