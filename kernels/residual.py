"""Residual add with a convolution's bias and the skip path's resampling: the end of every ADM ResBlock.

With ``a`` the output of the block's last convolution run without its bias, shape ``(N, C, H, W)``::

    y = a + bias_c + R(skip)

where ``R`` is the identity (``skip`` of shape ``(N, C, H, W)``), nearest-neighbour upsampling by 2 (``"up"``,
``skip`` ``(N, C, H/2, W/2)``) or 2x2 mean pooling (``"down"``, ``skip`` ``(N, C, 2H, 2W)``). ``y`` has the dtype and
memory format of ``a``; the arithmetic is float32 (float64 for float64) with one rounding. PyTorch's own sequence
is a broadcast bias add after the convolution (on channels-last bfloat16 a slow, unvectorised kernel: 24 ms of a
117 ms ADM forward at batch 64 on an H200, bench/results/gpu_adm-20261204-141232.md), a resampling kernel and the
add: four passes over the activation and two more of the skip, where this is one.

With ``stats=True`` the same pass also returns ``y``'s GroupNorm statistics (:class:`GNStats`: per-channel sums of
``y - K_c`` and their squares, ``K_c`` the value at pixel 0), which :func:`afdps.kernels.groupnorm.groupnorm_silu`
takes in place of its own statistics launch: in ADM every ResBlock's output is the input of a GroupNorm (the next
block's, an attention block's, the decoder's concatenation or the head's), which then reads it once instead of twice.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ._triton import is_channels_last, requires_triton, tile_offsets, tl, tl_dtype, to_storage, triton
from .backend import interpreting
from .backend import use_triton as use_triton_rule

__all__ = ["residual_add_ref", "residual_add_triton", "residual_add", "RESAMPLES", "resample_ref", "GNStats",
           "channel_sums_ref", "STATS_PROGRAMS", "stats_splits"]

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



class GNStats(NamedTuple):
    """GroupNorm statistics of an ``(N, C, H, W)`` tensor ``x`` in ``S`` pixel splits: ``s1[n, s, c]`` the sum of
    ``x - k[n, c]`` over split ``s``'s pixels of channel ``c``, ``s2`` the sum of ``(x - k[n, c])^2``, ``s1`` and
    ``s2`` ``(N, S, C)``, the shift ``k`` ``(N, C)``, all float32 (float64 for float64 ``x``). Any shift near the data
    will do, so that an offset channel's sums do not cancel (the residual kernel and the GroupNorm take ``x`` at
    pixel 0, the input convolution its bias); the sums are exact for the shift they carry, and any split of the
    pixels gives the same totals. Made by the residual kernel
    (``stats=True``), the input convolution's kernel (:func:`afdps.kernels.conv_in.conv_in`), the GroupNorm's own
    statistics launch, or :func:`channel_sums_ref`; taken by the GroupNorm
    kernels (``stats=``), which trust that they are ``x``'s."""

    s1: torch.Tensor
    s2: torch.Tensor
    k: torch.Tensor


def channel_sums_ref(x) -> GNStats:
    """Reference :class:`GNStats` of ``x`` in one split (``S = 1``), in the compute dtype, shifted by pixel 0."""
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    d = x.to(cdt).flatten(2)
    k = d[:, :, 0].clone()
    d = d - k[:, :, None]
    return GNStats(d.sum(2)[:, None], (d * d).sum(2)[:, None], k)


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


def residual_add_ref(a, skip, bias=None, resample=None, stats=False):
    """Reference: ``a + bias + R(skip)`` in the compute dtype, rounded once to ``a``'s dtype (module docstring);
    with ``stats``, the pair ``(y, channel_sums_ref(y))``.

    Bytes it must move: ``a`` and ``skip`` read, ``y`` written: ``(2 numel(a) + numel(skip)) * itemsize`` (the
    statistics add ``2 N S C`` floats, ``S`` the kernel's pixel splits).
    """
    _check(a, skip, bias, resample)
    cdt = torch.float64 if a.dtype == torch.float64 else torch.float32
    y = a.to(cdt) + resample_ref(skip.to(cdt), resample)
    if bias is not None:
        y = y + bias.to(cdt).reshape(1, -1, 1, 1)
    fmt = torch.channels_last if is_channels_last(a) else torch.contiguous_format
    y = y.to(a.dtype).contiguous(memory_format=fmt)
    return (y, channel_sums_ref(y)) if stats else y


# ==== Triton ==========================================================================================
#
# Grid (sample n * channel block, pixel split s); a split holds PS consecutive output pixels, handled in tiles of
# [BLOCK_P output pixels, CBLK channels] in the layout of a (tile_offsets). Output pixel p is (h, w) =
# (p // W, p % W); its skip value is skip[h, w] (RES 0), skip[h // 2, w // 2] of the (H/2, W/2) skip (RES 1), or the
# mean of skip[2h + i, 2w + j], i, j in {0, 1}, of the (2H, 2W) skip (RES 2). Without statistics a split is one tile
# (PS = BLOCK_P); with them (STATS) about STATS_PROGRAMS programs each sum their split's stored y - K_c and
# (y - K_c)^2 per channel, tile by tile, into s1, s2 (N, S, C), K_c the stored y at pixel 0 (every program computes
# it, the first split's writes it to k (N, C)).


@triton.jit
def _residual_tile(a_ptr, s_ptr, b_ptr, n, p, c, m, C, H, W, RES: tl.constexpr, HAS_BIAS: tl.constexpr,
                   CL: tl.constexpr, CDT: tl.constexpr):
    """``a + bias + R(skip)`` on the [pixels p, channels c] tile of sample n, in CDT, and the tile's offsets."""
    HW = H * W
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
    return acc, off


@triton.jit
def _residual_add_kernel(
    a_ptr,  # (N, C, H, W) the convolution's output without bias, contiguous or channels-last
    s_ptr,  # (N, C, H', W') skip, layout of a: H' = H, H / 2 (RES 1) or 2 H (RES 2)
    b_ptr,  # (C,) bias (unused unless HAS_BIAS)
    y_ptr,  # (N, C, H, W) output, layout and dtype of a
    s1_ptr,  # (N, S, C) per-split sums of y - K_c (CDT; unused unless STATS)
    s2_ptr,  # (N, S, C) per-split sums of (y - K_c)^2
    k_ptr,  # (N, C) the shift K_c
    C, H, W, NCB, PS, S,
    RES: tl.constexpr, HAS_BIAS: tl.constexpr, CL: tl.constexpr, CDT: tl.constexpr, STATS: tl.constexpr,
    BLOCK_P: tl.constexpr, CBLK: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid // NCB
    cb = pid % NCB
    HW = H * W
    c = cb * CBLK + tl.arange(0, CBLK)
    cm = c < C
    ty = y_ptr.dtype.element_ty
    if STATS:
        y0, _ = _residual_tile(a_ptr, s_ptr, b_ptr, n, tl.arange(0, 1), c, cm[None, :], C, H, W, RES, HAS_BIAS, CL,
                               CDT)
        K = to_storage(y0, ty).to(CDT)
        if tl.program_id(1) == 0:
            tl.store(k_ptr + n.to(tl.int64) * C + c[None, :], K, mask=cm[None, :])
        acc1 = tl.zeros([CBLK], dtype=CDT)
        acc2 = tl.zeros([CBLK], dtype=CDT)
        p0 = tl.program_id(1) * PS  # pixel offsets within a sample fit int32 (the sample's own offset is int64)
        for start in range(0, PS, BLOCK_P):
            p = p0 + start + tl.arange(0, BLOCK_P)
            m = ((start + tl.arange(0, BLOCK_P) < PS) & (p < HW))[:, None] & cm[None, :]
            acc, off = _residual_tile(a_ptr, s_ptr, b_ptr, n, p, c, m, C, H, W, RES, HAS_BIAS, CL, CDT)
            y = to_storage(acc, ty)
            tl.store(y_ptr + off, y, mask=m)
            d = tl.where(m, y.to(CDT) - K, 0.0)
            acc1 += tl.sum(d, axis=0)  # per tile: a [CBLK] carry instead of two [BLOCK_P, CBLK] ones (registers)
            acc2 += tl.sum(d * d, axis=0)
        out = (n.to(tl.int64) * S + tl.program_id(1)) * C + c
        tl.store(s1_ptr + out, acc1, mask=cm)
        tl.store(s2_ptr + out, acc2, mask=cm)
    else:  # one tile per program
        p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
        m = (p < HW)[:, None] & cm[None, :]
        acc, off = _residual_tile(a_ptr, s_ptr, b_ptr, n, p, c, m, C, H, W, RES, HAS_BIAS, CL, CDT)
        tl.store(y_ptr + off, to_storage(acc, ty), mask=m)


STATS_PROGRAMS = 1024
"""Programs the launch aims at when it also sums the statistics (channel blocks x pixel splits, each split a loop
over tiles): fixed, so that the sums do not depend on the device. Without statistics each program is one tile."""


def stats_splits(blocks: int, HW: int, BLOCK_P: int, programs: int) -> tuple[int, int]:
    """``(S, PS)``: pixel splits of whole tiles for a launch of ``blocks`` x S programs that sums statistics, about
    ``programs`` of them (at least one split, also for no pixels); shared by the kernels that make a GNStats."""
    S = max(1, min(triton.cdiv(programs, max(blocks, 1)), triton.cdiv(HW, BLOCK_P)))
    PS = max(triton.cdiv(triton.cdiv(HW, S), BLOCK_P), 1) * BLOCK_P
    return max(triton.cdiv(HW, PS), 1), PS


@requires_triton
def residual_add_triton(a, skip, bias=None, resample=None, stats=False):
    """:func:`residual_add_ref` in one launch (same signature and results; the statistics' splits differ, their
    totals agree)."""
    N, C, H, W = _check(a, skip, bias, resample)
    cl = is_channels_last(a)
    fmt = torch.channels_last if cl else torch.contiguous_format
    a = a.contiguous(memory_format=fmt)
    skip = skip.contiguous(memory_format=fmt)
    y = torch.empty_like(a)
    HW = H * W
    CBLK = min(triton.next_power_of_2(C), 64)
    tile = 1 << 16 if interpreting() else 4096
    BLOCK_P = max(1, min(triton.next_power_of_2(HW), tile // CBLK))
    NCB = triton.cdiv(C, CBLK)
    S, PS = stats_splits(N * NCB, HW, BLOCK_P, STATS_PROGRAMS) if stats else (max(triton.cdiv(HW, BLOCK_P), 1),
                                                                               BLOCK_P)
    s1 = s2 = k = y  # unread without statistics
    if stats:
        sdt = torch.float64 if a.dtype == torch.float64 else torch.float32
        s1 = torch.empty(N, S, C, dtype=sdt, device=a.device)  # every element written
        s2 = torch.empty_like(s1)
        k = torch.empty(N, C, dtype=sdt, device=a.device)
    if y.numel():
        _residual_add_kernel[(N * NCB, S)](a, skip, bias if bias is not None else a, y, s1, s2, k, C, H, W, NCB, PS,
                                           S,
                                           RES=RESAMPLES.index(resample), HAS_BIAS=bias is not None, CL=cl,
                                           CDT=tl_dtype(a.dtype), STATS=bool(stats), BLOCK_P=BLOCK_P, CBLK=CBLK,
                                           num_warps=8 if BLOCK_P * CBLK >= 4096 else 4)
    if stats and not y.numel():  # nothing to sum (no launch): zero sums, zero shift
        s1, s2, k = s1.zero_(), s2.zero_(), k.zero_()
    return (y, GNStats(s1, s2, k)) if stats else y


def residual_add(a, skip, bias=None, resample=None, use_triton=None, stats=False):
    """Dispatch between :func:`residual_add_triton` and :func:`residual_add_ref` by the rule of
    :func:`afdps.kernels.backend.use_triton`. ``stats``: return ``(y, GNStats)`` from the kernel, ``(y, None)``
    from the reference (the statistics are a by-product of the kernel's pass; the reference's would be a pass of
    their own, which the GroupNorm reference does not use)."""
    if use_triton_rule(use_triton, a.device, "residual_add", a):
        return residual_add_triton(a, skip, bias, resample, stats)
    y = residual_add_ref(a, skip, bias, resample)
    return (y, None) if stats else y
