"""GroupNorm + scale-shift + SiLU in two passes: the normalisation of every ADM ResBlock.

With ``x`` of shape ``(N, C, H, W)`` in ``G`` groups of ``Cg = C / G`` channels, per sample ``n`` and
group ``g`` (statistics over the group's ``Cg * H * W`` values, in float32, float64 for float64 input)::

    x    = x + pre_bias_nc                                               # optional: a convolution's bias
    xhat = (x - mean_ng) / sqrt(var_ng + eps)
    a    = (xhat * weight_c + bias_c) * (1 + scale_nc) + shift_nc      # scale-shift optional
    y    = silu(a) = a * sigmoid(a)                                      # optional

``y`` has the memory format (contiguous or channels-last) of ``x`` and its dtype, or ``out_dtype`` (ADM's output
head normalises bfloat16 activations into float32). The reference composes PyTorch ops in the compute dtype; the
Triton kernels (:func:`groupnorm_silu_triton`) read ``x`` twice (statistics, then the normalised write), write
``y`` once and never materialise the float32 intermediate.
"""
from __future__ import annotations

import torch

from ._triton import is_channels_last, requires_triton, tile_offsets, tl, tl_dtype, to_storage, triton
from .backend import interpreting
from .backend import use_triton as use_triton_rule

__all__ = ["groupnorm_silu_ref", "groupnorm_silu_triton", "groupnorm_silu"]


def _check(x, weight, bias, groups, scale, shift, pre_bias=None):
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    N, C = x.shape[:2]
    if groups < 1 or C % groups:
        raise ValueError(f"groups={groups} must divide the {C} channels")
    for name, t in (("weight", weight), ("bias", bias)):
        if tuple(t.shape) != (C,):
            raise ValueError(f"{name} must be ({C},), got {tuple(t.shape)}")
    if (scale is None) != (shift is None):
        raise ValueError("give both scale and shift, or neither")
    if pre_bias is not None and pre_bias.numel() not in (C, N * C):
        raise ValueError(f"pre_bias must hold (C,) = ({C},) or (N, C) = ({N}, {C}) values, got shape "
                         f"{tuple(pre_bias.shape)}")
    if scale is not None:
        for name, t in (("scale", scale), ("shift", shift)):
            if t.numel() != N * C:
                raise ValueError(f"{name} must hold (N, C) = ({N}, {C}) values, got shape {tuple(t.shape)}")
    return N, C


def groupnorm_silu_ref(x, weight, bias, *, groups: int, eps: float = 1e-5, scale=None, shift=None,
                       silu: bool = True, out_dtype=None, pre_bias=None):
    """Reference: ``silu((GN(x) * weight + bias) * (1 + scale) + shift)`` in the compute dtype (module docstring).

    ``scale``/``shift``: ``(N, C)`` (or ``(N, C, 1, 1)``) or ``None``; ``pre_bias``: ``(C,)`` or ``(N, C)``, added to
    ``x`` in the compute dtype before the statistics (the bias of the convolution that made ``x``, run without
    it, and ADM's time embedding without scale-shift); ``out_dtype``: the output's dtype (default
    ``x``'s). Bytes it must move: ``x`` read and ``y`` written, ``numel * (x.itemsize + y.itemsize)`` (the Triton
    kernels read ``x`` twice; PyTorch's composition moves several float32 intermediates more).
    """
    N, C = _check(x, weight, bias, groups, scale, shift, pre_bias)
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xc = x.to(cdt)
    if pre_bias is not None:
        xc = xc + pre_bias.reshape(-1, C, 1, 1).to(cdt)
    a = torch.nn.functional.group_norm(xc, groups, weight.to(cdt), bias.to(cdt), eps)
    if scale is not None:
        a = a * (1 + scale.reshape(N, C, 1, 1).to(cdt)) + shift.reshape(N, C, 1, 1).to(cdt)
    if silu:
        a = torch.nn.functional.silu(a)
    fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    return a.to(out_dtype or x.dtype).contiguous(memory_format=fmt)



# ==== Triton ==========================================================================================
#
# Two launches over a grid of (sample n, channel block cb) x (pixel split s). A channel block holds GB whole
# groups (CBW = GB * Cg channels, padded to the power of two CBLK); a split holds PS consecutive pixels.
# Shifted data throughout: K_c = x[n, c, pixel 0], so the sums cancel only as much as the spread of the data,
# not its offset from zero.
#   _groupnorm_stats_kernel: per channel c of the block and split s, s1_sc = sum(x - K_c), s2_sc = sum((x - K_c)^2)
#   _groupnorm_apply_kernel: sums the splits (s1_c, s2_c), shifts each channel's sums to its group's K_g (the K of
#       the group's first channel; k = K_c - K_g): sum(x - K_g) = s1_c + HW k, sum((x - K_g)^2) = s2_c + 2 k s1_c
#       + HW k^2, adds them over the group's Cg channels (D1, D2), and with M = Cg HW, delta = D1 / M,
#       var = D2 / M - delta^2, rstd = 1 / sqrt(var + eps), a_c = rstd w_c (1 + scale_nc),
#       b_c = bias_c (1 + scale_nc) + shift_nc writes y = silu(((x - K_g) - delta) a_c + b_c). The mean K_g + delta
#       is never rounded to the data's magnitude (x - K_g is exact for x near K_g).
# Tiles are [BLOCK_P pixels, CBLK channels]; element (p, c) of sample n sits at n C HW + p C + c (channels-last:
# a pixel's CBW channels are consecutive, CBW * itemsize >= 32 bytes, one memory sector) or n C HW + c HW + p
# (contiguous: each channel's pixels are consecutive). x is read twice and y written once; the pixel splits give
# N * blocks * splits ~ 1024 programs whatever the batch (a fixed count, so the result does not depend on the
# device).


@triton.jit
def _groupnorm_stats_kernel(
    x_ptr,  # (N, C, H, W) input, contiguous or channels-last
    s1_ptr,  # (N, S, C) per-split sums of x - K_c (CDT)
    s2_ptr,  # (N, S, C) per-split sums of (x - K_c)^2 (CDT)
    C, HW, PS, S, NCB,
    CBW: tl.constexpr, CL: tl.constexpr, CDT: tl.constexpr, BLOCK_P: tl.constexpr, CBLK: tl.constexpr,
):
    pid = tl.program_id(0)
    s = tl.program_id(1)
    n = pid // NCB
    cb = pid % NCB
    cols = tl.arange(0, CBLK)
    cm = cols < CBW
    c = cb * CBW + cols
    base = x_ptr + n.to(tl.int64) * C * HW
    K = tl.load(base + tile_offsets(tl.arange(0, 1), c, C, HW, CL), mask=cm[None, :], other=0.0).to(CDT)
    p0 = s.to(tl.int64) * PS
    acc = tl.zeros([BLOCK_P, CBLK], dtype=CDT)
    acc2 = tl.zeros([BLOCK_P, CBLK], dtype=CDT)
    for start in range(0, PS, BLOCK_P):
        p = p0 + start + tl.arange(0, BLOCK_P)
        m = ((start + tl.arange(0, BLOCK_P) < PS) & (p < HW))[:, None] & cm[None, :]
        v = tl.load(base + tile_offsets(p, c, C, HW, CL), mask=m, other=0.0).to(CDT)
        d = tl.where(m, v - K, 0.0)
        acc += d
        acc2 += d * d
    out = (n.to(tl.int64) * S + s) * C + c
    tl.store(s1_ptr + out, tl.sum(acc, axis=0), mask=cm)
    tl.store(s2_ptr + out, tl.sum(acc2, axis=0), mask=cm)


@triton.jit
def _groupnorm_apply_kernel(
    x_ptr,  # (N, C, H, W) input, contiguous or channels-last
    s1_ptr,  # (N, S, C) per-split sums of x - K_c from _groupnorm_stats_kernel
    s2_ptr,  # (N, S, C) per-split sums of (x - K_c)^2
    w_ptr,  # (C,) GroupNorm weight
    b_ptr,  # (C,) GroupNorm bias
    sc_ptr,  # (N, C) scale, rows SC_S apart (unused unless SCALE_SHIFT)
    sh_ptr,  # (N, C) shift, rows SH_S apart (unused unless SCALE_SHIFT)
    pb_ptr,  # (N, C) pre-bias, rows PB_S apart (0: one (C,) row for all samples; unused unless PRE_BIAS)
    y_ptr,  # (N, C, H, W) output, layout of x, its own dtype
    C, HW, PS, S, NCB, SC_S, SH_S, PB_S, eps,
    Cg: tl.constexpr, GB: tl.constexpr, CL: tl.constexpr, SCALE_SHIFT: tl.constexpr, SILU: tl.constexpr,
    PRE_BIAS: tl.constexpr,
    CDT: tl.constexpr, BLOCK_P: tl.constexpr, CBLK: tl.constexpr,
):
    pid = tl.program_id(0)
    s = tl.program_id(1)
    n = pid // NCB
    cb = pid % NCB
    cols = tl.arange(0, CBLK)
    cm = cols < GB * Cg
    c = cb * (GB * Cg) + cols
    base = n.to(tl.int64) * C * HW
    K = tl.sum(tl.load(x_ptr + base + tile_offsets(tl.arange(0, 1), c, C, HW, CL), mask=cm[None, :],
                       other=0.0).to(CDT), axis=0)
    if PRE_BIAS:  # x + pb: the deviations from the shift are unchanged, the shift moves by pb
        pb = tl.load(pb_ptr + n * PB_S + c, mask=cm, other=0.0).to(CDT)
        K = K + pb
    row = n.to(tl.int64) * S * C + c
    s1 = tl.zeros([CBLK], dtype=CDT)
    s2 = tl.zeros([CBLK], dtype=CDT)
    for k in range(0, S):
        s1 += tl.load(s1_ptr + row + k * C, mask=cm, other=0.0)
        s2 += tl.load(s2_ptr + row + k * C, mask=cm, other=0.0)
    grp = cols // Cg
    Kg = tl.zeros([CBLK], dtype=CDT)
    delta = tl.zeros([CBLK], dtype=CDT)
    rstd = tl.zeros([CBLK], dtype=CDT)
    for gi in tl.static_range(GB):
        sel = (grp == gi) & cm
        kg = tl.sum(tl.where(cols == gi * Cg, K, 0.0), axis=0)
        k = K - kg
        d1 = tl.sum(tl.where(sel, s1 + HW * k, 0.0), axis=0) / Cg / HW
        d2 = tl.sum(tl.where(sel, s2 + 2.0 * k * s1 + HW * k * k, 0.0), axis=0) / Cg / HW
        var = tl.maximum(d2 - d1 * d1, 0.0)
        Kg = tl.where(sel, kg, Kg)
        delta = tl.where(sel, d1, delta)
        rstd = tl.where(sel, 1.0 / tl.sqrt(var + eps), rstd)
    a = rstd * tl.load(w_ptr + c, mask=cm, other=0.0).to(CDT)
    b = tl.load(b_ptr + c, mask=cm, other=0.0).to(CDT)
    if SCALE_SHIFT:
        one_sc = 1.0 + tl.load(sc_ptr + n * SC_S + c, mask=cm, other=0.0).to(CDT)
        a = a * one_sc
        b = b * one_sc + tl.load(sh_ptr + n * SH_S + c, mask=cm, other=0.0).to(CDT)
    p0 = s.to(tl.int64) * PS
    for start in range(0, PS, BLOCK_P):
        p = p0 + start + tl.arange(0, BLOCK_P)
        m = ((start + tl.arange(0, BLOCK_P) < PS) & (p < HW))[:, None] & cm[None, :]
        off = base + tile_offsets(p, c, C, HW, CL)
        v = tl.load(x_ptr + off, mask=m, other=0.0).to(CDT)
        if PRE_BIAS:
            v = v + pb[None, :]
        h = ((v - Kg[None, :]) - delta[None, :]) * a[None, :] + b[None, :]
        if SILU:
            h = h * tl.sigmoid(h)
        tl.store(y_ptr + off, to_storage(h, y_ptr.dtype.element_ty), mask=m)


def _rows(t, C):
    """``t`` as rows of ``C`` values, ``(-1, C)``, a view where its last dimension is contiguous."""
    r = t.reshape(-1, C)
    return r if r.stride(1) == 1 else r.contiguous()


PROGRAMS = 1024
"""Programs a launch aims at (channel blocks x pixel splits); fixed, so that results do not depend on the device."""


def _plan(N, C, groups, HW, itemsize, split=None):
    """Channel block (GB groups of Cg channels: at least 32 bytes of a pixel in channels-last), pixel tile and
    split: ``(GB, CBLK, BLOCK_P, PS, S)``."""
    Cg = C // groups
    GB = 1
    while GB * 2 <= groups and groups % (GB * 2) == 0 and GB * Cg * itemsize < 32:
        GB *= 2
    CBLK = triton.next_power_of_2(GB * Cg)
    tile = 1 << 16 if interpreting() else 4096
    BLOCK_P = max(1, min(triton.next_power_of_2(HW), tile // CBLK))
    blocks = N * (groups // GB)
    S = split if split is not None else max(1, min(triton.cdiv(PROGRAMS, blocks), triton.cdiv(HW, BLOCK_P)))
    S = max(1, min(int(S), HW))
    PS = triton.cdiv(HW, S)
    if split is None:
        PS = triton.cdiv(PS, BLOCK_P) * BLOCK_P  # whole tiles per split but the last
    S = triton.cdiv(HW, PS)
    return GB, CBLK, BLOCK_P, PS, S


@requires_triton
def groupnorm_silu_triton(x, weight, bias, *, groups: int, eps: float = 1e-5, scale=None, shift=None,
                          silu: bool = True, out_dtype=None, pre_bias=None, _split=None):
    """:func:`groupnorm_silu_ref` in two launches (same signature and results). ``_split``: force the number of
    pixel splits (tests)."""
    N, C = _check(x, weight, bias, groups, scale, shift, pre_bias)
    cl = is_channels_last(x)
    if not cl:
        x = x.contiguous()
    y = torch.empty_like(x, dtype=out_dtype or x.dtype)  # keeps the memory format
    HW = x.shape[2] * x.shape[3]
    if N == 0 or HW == 0:
        return y
    GB, CBLK, BLOCK_P, PS, S = _plan(N, C, groups, HW, x.element_size(), _split)
    NCB = groups // GB
    sdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    s1 = torch.empty(N, S, C, dtype=sdt, device=x.device)
    s2 = torch.empty_like(s1)
    # (N, C) rows read in place (ADM's scale and shift are the two halves of one (N, 2C) tensor); only a row that
    # is not contiguous is copied
    sc, sh, pb = (_rows(t, C) if t is not None else weight for t in (scale, shift, pre_bias))
    pb_stride = 0 if pre_bias is not None and pre_bias.numel() == C else pb.stride(0)
    cdt = tl_dtype(x.dtype)
    warps = 8 if BLOCK_P * CBLK >= 4096 else 4
    grid = (N * NCB, S)
    _groupnorm_stats_kernel[grid](x, s1, s2, C, HW, PS, S, NCB, CBW=GB * (C // groups), CL=cl, CDT=cdt,
                                  BLOCK_P=BLOCK_P, CBLK=CBLK, num_warps=warps)
    _groupnorm_apply_kernel[grid](x, s1, s2, weight.contiguous(), bias.contiguous(), sc, sh, pb, y, C, HW, PS, S, NCB,
                                  sc.stride(0), sh.stride(0), pb_stride, float(eps), Cg=C // groups, GB=GB, CL=cl, SCALE_SHIFT=scale is not None,
                                  SILU=bool(silu), PRE_BIAS=pre_bias is not None, CDT=cdt, BLOCK_P=BLOCK_P, CBLK=CBLK, num_warps=warps)
    return y


def groupnorm_silu(x, weight, bias, *, groups: int, eps: float = 1e-5, scale=None, shift=None, silu: bool = True,
                   out_dtype=None, pre_bias=None, use_triton=None):
    """Dispatch between :func:`groupnorm_silu_triton` and :func:`groupnorm_silu_ref` by the rule of
    :func:`afdps.kernels.backend.use_triton`."""
    fn = groupnorm_silu_triton if use_triton_rule(use_triton, x.device, "groupnorm_silu", x) else groupnorm_silu_ref
    return fn(x, weight, bias, groups=groups, eps=eps, scale=scale, shift=shift, silu=silu, out_dtype=out_dtype,
              pre_bias=pre_bias)
