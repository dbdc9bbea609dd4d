"""Residual add with a convolution's bias and the skip path's resampling: the end of every ADM ResBlock.

With ``a`` the output of the block's last convolution run without its bias, shape ``(N, C, H, W)``::

    y = a + bias_c + R(skip)

where ``R`` is the identity (``skip`` of shape ``(N, C, H, W)``), nearest-neighbour upsampling by 2 (``"up"``,
``skip`` ``(N, C, H/2, W/2)``) or 2x2 mean pooling (``"down"``, ``skip`` ``(N, C, 2H, 2W)``). ``y`` has the dtype and
memory format of ``a``; the arithmetic is float32 (float64 for float64) with one rounding. PyTorch's own sequence
is a broadcast bias add after the convolution (on channels-last bfloat16 a slow, unvectorised kernel: 24 ms of a
117 ms ADM forward at batch 64 on an H200, bench/results/gpu_adm-20261204-141232.md), a resampling kernel and the
add: four passes over the activation and two more of the skip, where this is one.
"""
from __future__ import annotations

import torch

from ._triton import is_channels_last, requires_triton, tile_offsets, tl, tl_dtype, to_storage, triton
from .backend import interpreting
from .backend import use_triton as use_triton_rule

__all__ = ["residual_add_ref", "residual_add_triton", "residual_add", "RESAMPLES", "resample_ref"]

RESAMPLES = (None, "up", "down")
"""The resamplings ``R`` of this module and of :mod:`afdps.kernels.groupnorm`'s write (a kernel's ``RES`` is the
index): the identity, nearest x2, 2x2 mean."""


def resample_ref(t, resample):
    """``R(t)`` with PyTorch's ops: ``t`` itself, nearest-neighbour x2 (``"up"``) or 2x2 mean pooling (``"down"``)."""
    if resample == "up":
        return torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest")
    if resample == "down":
        return torch.nn.functional.avg_pool2d(t, kernel_size=2, stride=2)
    return t



def _check(a, skip, bias, resample):
    if resample not in RESAMPLES:
        raise ValueError(f"resample must be None, 'up' or 'down', got {resample!r}")
    if a.dim() != 4 or skip.dim() != 4:
        raise ValueError(f"a and skip must be (N, C, H, W), got shapes {tuple(a.shape)} and {tuple(skip.shape)}")
    N, C, H, W = a.shape
    want = {None: (N, C, H, W), "up": (N, C, H // 2, W // 2), "down": (N, C, 2 * H, 2 * W)}[resample]
    if resample == "up" and (H % 2 or W % 2):
        raise ValueError(f"resample='up' needs an even height and width of a, got {(H, W)}")
    if tuple(skip.shape) != want:
        raise ValueError(f"skip must have shape {want} for resample={resample!r} and a of shape {tuple(a.shape)}, "
                         f"got {tuple(skip.shape)}")
    if bias is not None and tuple(bias.shape) != (C,):
        raise ValueError(f"bias must be ({C},), got {tuple(bias.shape)}")
    return N, C, H, W


def residual_add_ref(a, skip, bias=None, resample=None):
    """Reference: ``a + bias + R(skip)`` in the compute dtype, rounded once to ``a``'s dtype (module docstring).

    Bytes it must move: ``a`` and ``skip`` read, ``y`` written: ``(2 numel(a) + numel(skip)) * itemsize``.
    """
    _check(a, skip, bias, resample)
    cdt = torch.float64 if a.dtype == torch.float64 else torch.float32
    y = a.to(cdt) + resample_ref(skip.to(cdt), resample)
    if bias is not None:
        y = y + bias.to(cdt).reshape(1, -1, 1, 1)
    fmt = torch.channels_last if is_channels_last(a) else torch.contiguous_format
    return y.to(a.dtype).contiguous(memory_format=fmt)


# ==== Triton ==========================================================================================
#
# Grid (sample n * channel block, pixel block); a tile is [BLOCK_P output pixels, CBLK channels] in the layout of a
# (tile_offsets). Output pixel p is (h, w) = (p // W, p % W); its skip value is skip[h, w] (RES 0),
# skip[h // 2, w // 2] of the (H/2, W/2) skip (RES 1), or the mean of skip[2h + i, 2w + j], i, j in {0, 1}, of the
# (2H, 2W) skip (RES 2).


@triton.jit
def _residual_add_kernel(
    a_ptr,  # (N, C, H, W) the convolution's output without bias, contiguous or channels-last
    s_ptr,  # (N, C, H', W') skip, layout of a: H' = H, H / 2 (RES 1) or 2 H (RES 2)
    b_ptr,  # (C,) bias (unused unless HAS_BIAS)
    y_ptr,  # (N, C, H, W) output, layout and dtype of a
    C, H, W, NCB,
    RES: tl.constexpr, HAS_BIAS: tl.constexpr, CL: tl.constexpr, CDT: tl.constexpr, BLOCK_P: tl.constexpr,
    CBLK: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid // NCB
    cb = pid % NCB
    HW = H * W
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = cb * CBLK + tl.arange(0, CBLK)
    m = (p < HW)[:, None] & (c < C)[None, :]
    off = n.to(tl.int64) * C * HW + tile_offsets(p, c, C, HW, CL)
    acc = tl.load(a_ptr + off, mask=m, other=0.0).to(CDT)
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c < C, other=0.0).to(CDT)[None, :]
    h = p // W
    w = p % W
    if RES == 0:
        acc += tl.load(s_ptr + off, mask=m, other=0.0).to(CDT)
    elif RES == 1:
        sbase = n.to(tl.int64) * C * (HW // 4)
        q = (h // 2) * (W // 2) + w // 2
        acc += tl.load(s_ptr + sbase + tile_offsets(q, c, C, HW // 4, CL), mask=m, other=0.0).to(CDT)
    else:
        sbase = n.to(tl.int64) * C * (4 * HW)
        q = (2 * h) * (2 * W) + 2 * w
        r = tl.load(s_ptr + sbase + tile_offsets(q, c, C, 4 * HW, CL), mask=m, other=0.0).to(CDT)
        r += tl.load(s_ptr + sbase + tile_offsets(q + 1, c, C, 4 * HW, CL), mask=m, other=0.0).to(CDT)
        r += tl.load(s_ptr + sbase + tile_offsets(q + 2 * W, c, C, 4 * HW, CL), mask=m, other=0.0).to(CDT)
        r += tl.load(s_ptr + sbase + tile_offsets(q + 2 * W + 1, c, C, 4 * HW, CL), mask=m, other=0.0).to(CDT)
        acc += 0.25 * r
    tl.store(y_ptr + off, to_storage(acc, y_ptr.dtype.element_ty), mask=m)


@requires_triton
def residual_add_triton(a, skip, bias=None, resample=None):
    """:func:`residual_add_ref` in one launch (same signature and results)."""
    N, C, H, W = _check(a, skip, bias, resample)
    cl = is_channels_last(a)
    fmt = torch.channels_last if cl else torch.contiguous_format
    a = a.contiguous(memory_format=fmt)
    skip = skip.contiguous(memory_format=fmt)
    y = torch.empty_like(a)
    if y.numel() == 0:
        return y
    CBLK = min(triton.next_power_of_2(C), 64)
    tile = 1 << 16 if interpreting() else 4096
    BLOCK_P = max(1, min(triton.next_power_of_2(H * W), tile // CBLK))
    NCB = triton.cdiv(C, CBLK)
    grid = (N * NCB, triton.cdiv(H * W, BLOCK_P))
    _residual_add_kernel[grid](a, skip, bias if bias is not None else a, y, C, H, W, NCB,
                               RES=RESAMPLES.index(resample), HAS_BIAS=bias is not None, CL=cl,
                               CDT=tl_dtype(a.dtype), BLOCK_P=BLOCK_P, CBLK=CBLK,
                               num_warps=8 if BLOCK_P * CBLK >= 4096 else 4)
    return y


def residual_add(a, skip, bias=None, resample=None, use_triton=None):
    """Dispatch between :func:`residual_add_triton` and :func:`residual_add_ref` by the rule of
    :func:`afdps.kernels.backend.use_triton`."""
    fn = residual_add_triton if use_triton_rule(use_triton, a.device, "residual_add", a) else residual_add_ref
    return fn(a, skip, bias, resample)
