"""The first convolution of a UNet in one pass: 3x3, few input channels, bias, and its output's GroupNorm statistics.

ADM's first layer maps the 3-channel image to 128 (FFHQ) or 256 (ImageNet) channels at full resolution. With
``x`` of shape ``(N, Ci, H, W)``, ``weight`` ``(Co, Ci, 3, 3)`` and zero padding of one pixel::

    y[n, o, h, w] = bias_o + sum_{i, dy, dx} weight[o, i, dy, dx] x[n, i, h + dy - 1, w + dx - 1]

computed from ``x`` rounded to ``dtype`` (the torso's dtype: what ``x.to(dtype)`` then the convolution sees), the
products and their sum in float32, the bias added, rounded once to ``dtype`` and written in ``memory_format``.
With ``stats=True`` the same pass returns ``y``'s :class:`GNStats`, which the next GroupNorm (the first ResBlock's)
takes in place of its statistics launch. PyTorch's sequence on channels-last bfloat16 is the cast of ``x``, cuDNN's
convolution and a separate broadcast bias add over the whole output (1.6 ms of a 67 ms forward at batch 64 on an
H200, bench/results/gpu_adm-20261204-154530.md), then the GroupNorm's statistics read it again; this writes the
output once and reads nothing back.

The patch of a pixel (``Ci * 9 <= 64`` values) is gathered in registers and multiplied by the weight matrix with
``tl.dot``: float32 operands holding bfloat16 or float16 values are exact in TF32, so the tensor cores give the
float32 products of the rounded operands; float32 data takes IEEE float32 products.
"""
from __future__ import annotations

import torch

from ._triton import is_channels_last, requires_triton, tile_offsets, tl, to_storage, triton
from .backend import interpreting
from .backend import use_triton as use_triton_rule
from .residual import GNStats, channel_sums_ref, stats_splits

__all__ = ["conv_in_ref", "conv_in_triton", "conv_in", "conv_in_applies", "MAX_PATCH", "DTYPES", "STATS_PROGRAMS"]

MAX_PATCH = 64
"""The largest patch (``Ci * 9`` values) the kernel gathers: up to 7 input channels."""
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
"""Output (torso) dtypes of the kernel; the reference takes float64 too."""
STATS_PROGRAMS = 1024
"""Programs a launch aims at (channel blocks x pixel splits, each split a loop over tiles); fixed, so that the
statistics' sums do not depend on the device."""


def _check(x, weight, bias, dtype, memory_format):
    if x.dim() != 4:
        raise ValueError(f"x must be (N, Ci, H, W), got shape {tuple(x.shape)}")
    Ci = x.shape[1]
    if weight.dim() != 4 or tuple(weight.shape[1:]) != (Ci, 3, 3):
        raise ValueError(f"weight must be (Co, {Ci}, 3, 3) for x's {Ci} channels, got {tuple(weight.shape)}")
    Co = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (Co,):
        raise ValueError(f"bias must be ({Co},), got {tuple(bias.shape)}")
    if memory_format not in (torch.channels_last, torch.contiguous_format):
        raise ValueError(f"memory_format must be torch.channels_last or torch.contiguous_format, got {memory_format!r}")
    if dtype not in DTYPES + (torch.float64,):
        raise ValueError(f"dtype must be one of {DTYPES + (torch.float64,)}, got {dtype!r}")
    return Ci, Co


def conv_in_ref(x, weight, bias=None, *, dtype=None, memory_format=torch.contiguous_format, stats=False):
    """Reference: ``conv2d(x.to(dtype), weight, bias, padding=1)`` in float32 (float64 for float64) from the
    operands rounded to ``dtype`` (default ``weight``'s), rounded once to ``dtype`` in ``memory_format``; with
    ``stats``, the pair ``(y, channel_sums_ref(y))``. Bytes it must move: ``x`` read, ``y`` written."""
    dtype = dtype or weight.dtype
    _check(x, weight, bias, dtype, memory_format)
    cdt = torch.float64 if dtype == torch.float64 else torch.float32
    rounded = lambda t: t.to(dtype).to(cdt)  # noqa: E731
    y = torch.nn.functional.conv2d(rounded(x), rounded(weight), rounded(bias) if bias is not None else None,
                                   padding=1)
    y = y.to(dtype).contiguous(memory_format=memory_format)
    return (y, channel_sums_ref(y)) if stats else y


# ==== Triton ==========================================================================================
#
# Grid (sample n * output-channel block, pixel split s); a split holds PS consecutive output pixels in tiles of
# BLOCK_P. Patch column k = i * 9 + 3 (dy + 1) + (dx + 1) of pixel p = (h, w) is x[n, i, h + dy, w + dx] (zero
# outside), rounded to the output dtype; the weight as a [KP, CBLK] matrix W[k, o] = weight[o, k] (K = Ci * 9 <= KP).
# The statistics' shift K_o is the (rounded) bias, the output where the patch is zero, near the data for images
# about zero (the first split writes it to k); each program sums its split's stored y - K_o and (y - K_o)^2 per
# channel, tile by tile, into s1, s2 (N, S, Co).


@triton.jit
def _conv_tile(x_ptr, wt, bias, n, p, Ci, H, W, XCL: tl.constexpr, KP: tl.constexpr, IEEE: tl.constexpr, ty):
    """The [pixels p, channels] tile of sample n, bias added, rounded to ty."""
    HW = H * W
    k = tl.arange(0, KP)
    i = k // 9
    r = k % 9
    hh = (p // W)[:, None] + (r // 3 - 1)[None, :]
    ww = (p % W)[:, None] + (r % 3 - 1)[None, :]
    ok = (p < HW)[:, None] & (k < Ci * 9)[None, :] & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    if XCL:
        xo = (hh * W + ww) * Ci + i[None, :]
    else:
        xo = i[None, :] * HW + hh * W + ww
    patch = to_storage(tl.load(x_ptr + n.to(tl.int64) * Ci * HW + xo, mask=ok, other=0.0), ty).to(tl.float32)
    if IEEE:
        acc = tl.dot(patch, wt, input_precision="ieee")
    else:
        acc = tl.dot(patch, wt, input_precision="tf32")  # exact products of bfloat16 / float16 values
    return to_storage(acc + bias[None, :], ty)


@triton.jit
def _conv_in_kernel(
    x_ptr,  # (N, Ci, H, W) input, contiguous or channels-last (XCL), any float dtype
    w_ptr,  # (Co, Ci, 3, 3) weight, contiguous, in the output dtype
    b_ptr,  # (Co,) bias (unused unless HAS_BIAS)
    y_ptr,  # (N, Co, H, W) output, channels-last (CL) or contiguous
    s1_ptr,  # (N, S, Co) per-split sums of y - K_o (unused unless STATS)
    s2_ptr,  # (N, S, Co) per-split sums of (y - K_o)^2
    k_ptr,  # (N, Co) the shift K_o
    Ci, Co, H, W, NCB, PS, S,
    XCL: tl.constexpr, CL: tl.constexpr, HAS_BIAS: tl.constexpr, STATS: tl.constexpr, IEEE: tl.constexpr,
    KP: tl.constexpr, BLOCK_P: tl.constexpr, CBLK: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid // NCB
    o = (pid % NCB) * CBLK + tl.arange(0, CBLK)
    k = tl.arange(0, KP)
    HW = H * W
    ty = y_ptr.dtype.element_ty
    wt = tl.load(w_ptr + o[None, :] * (Ci * 9) + k[:, None], mask=(k < Ci * 9)[:, None] & (o < Co)[None, :],
                 other=0.0).to(tl.float32)
    bias = tl.zeros([CBLK], dtype=tl.float32)
    if HAS_BIAS:  # rounded to the output dtype, as the reference (and a torso stored in it) has it
        bias = to_storage(tl.load(b_ptr + o, mask=o < Co, other=0.0), ty).to(tl.float32)
    ybase = y_ptr + n.to(tl.int64) * Co * HW
    if STATS:
        K = bias  # the shift: the bias, the channel's value where the patch is zero (the sums are exact for it)
        if tl.program_id(1) == 0:
            tl.store(k_ptr + n.to(tl.int64) * Co + o, K, mask=o < Co)
        acc1 = tl.zeros([CBLK], dtype=tl.float32)
        acc2 = tl.zeros([CBLK], dtype=tl.float32)
    p0 = tl.program_id(1) * PS  # pixel offsets within a sample fit int32 (the sample's own offset is int64)
    for start in range(0, PS, BLOCK_P):
        p = p0 + start + tl.arange(0, BLOCK_P)
        y = _conv_tile(x_ptr, wt, bias, n, p, Ci, H, W, XCL, KP, IEEE, ty)
        m = ((start + tl.arange(0, BLOCK_P) < PS) & (p < HW))[:, None] & (o < Co)[None, :]
        tl.store(ybase + tile_offsets(p, o, Co, HW, CL), y, mask=m)
        if STATS:
            d = tl.where(m, y.to(tl.float32) - K[None, :], 0.0)
            acc1 += tl.sum(d, axis=0)  # per tile: a [CBLK] carry (registers: the tile's accumulator is the dot's)
            acc2 += tl.sum(d * d, axis=0)
    if STATS:
        out = (n.to(tl.int64) * S + tl.program_id(1)) * Co + o
        tl.store(s1_ptr + out, acc1, mask=o < Co)
        tl.store(s2_ptr + out, acc2, mask=o < Co)


@requires_triton
def conv_in_triton(x, weight, bias=None, *, dtype=None, memory_format=torch.contiguous_format, stats=False):
    """:func:`conv_in_ref` in one launch (same signature and results up to the float32 sums' order; the
    statistics' splits differ, their totals agree). ``dtype``: one of :data:`DTYPES`; ``Ci * 9 <= MAX_PATCH``."""
    dtype = dtype or weight.dtype
    Ci, Co = _check(x, weight, bias, dtype, memory_format)
    if dtype not in DTYPES:
        raise ValueError(f"conv_in_triton writes {', '.join(map(str, DTYPES))}, got {dtype}: use conv_in_ref")
    if Ci * 9 > MAX_PATCH:
        raise ValueError(f"conv_in_triton gathers patches of up to {MAX_PATCH} values (7 input channels); x has {Ci}")
    N, _, H, W = x.shape
    HW = H * W
    y = torch.empty(N, Co, H, W, dtype=dtype, device=x.device, memory_format=memory_format)
    KP = max(16, triton.next_power_of_2(Ci * 9))
    CBLK = max(16, min(triton.next_power_of_2(Co), 64))
    BLOCK_P = 1024 if interpreting() else 64  # and at most 64 channels a block, 8 warps: no register spills on
    # sm_90 (171 registers with the statistics, 127 without; 128 channels: 243 and 181)
    NCB = triton.cdiv(Co, CBLK)
    S, PS = stats_splits(N * NCB, HW, BLOCK_P, STATS_PROGRAMS)
    s1 = s2 = k = y  # unread without statistics
    if stats:
        s1 = torch.empty(N, S, Co, dtype=torch.float32, device=x.device)  # every element written
        s2 = torch.empty_like(s1)
        k = torch.empty(N, Co, dtype=torch.float32, device=x.device)
    if y.numel():
        x = x if is_channels_last(x) else x.contiguous()
        w = weight.to(dtype).contiguous()
        _conv_in_kernel[(N * NCB, S)](x, w, bias if bias is not None else w, y, s1, s2, k, Ci, Co, H, W, NCB, PS, S,
                                      XCL=is_channels_last(x), CL=memory_format == torch.channels_last,
                                      HAS_BIAS=bias is not None, STATS=bool(stats), IEEE=dtype == torch.float32,
                                      KP=KP, BLOCK_P=BLOCK_P, CBLK=CBLK, num_warps=8)
    return (y, GNStats(s1, s2, k)) if stats else y


def conv_in_applies(x, weight, dtype) -> bool:
    """Whether :func:`conv_in_triton` takes this convolution (dtype and patch size)."""
    return dtype in DTYPES and x.dim() == 4 and x.shape[1] * 9 <= MAX_PATCH


def conv_in(x, weight, bias=None, *, dtype=None, memory_format=torch.contiguous_format, stats=False,
            use_triton=None):
    """Dispatch between :func:`conv_in_triton` and :func:`conv_in_ref` by the rule of
    :func:`afdps.kernels.backend.use_triton` (and :func:`conv_in_applies`). ``stats``: ``(y, GNStats)`` from the
    kernel, ``(y, None)`` from the reference (whose statistics would be a pass of their own)."""
    dtype = dtype or weight.dtype
    if conv_in_applies(x, weight, dtype) and use_triton_rule(use_triton, x.device, "conv_in", x):
        return conv_in_triton(x, weight, bias, dtype=dtype, memory_format=memory_format, stats=stats)
    y = conv_in_ref(x, weight, bias, dtype=dtype, memory_format=memory_format)
    return (y, None) if stats else y
