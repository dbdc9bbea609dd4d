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

Two more options fold the passes around an ADM ResBlock's first normalisation into it:

- ``concat``: a second input whose channels follow ``x``'s; the kernels normalise ``torch.cat([x, concat], 1)``
  without forming it (ADM's decoder concatenates every skip before its ResBlock: one write and one read less).
- ``resample``: ``"up"`` (nearest x2) or ``"down"`` (2x2 mean, even height and width) applied to ``y`` in the
  write, ``R(silu(a))`` computed in float32 (ADM's up and down ResBlocks resample the normalised activation:
  the resampling kernel's read and write of it go).

And ``stats`` (``concat_stats``): the input's :class:`GNStats`, made by the pass that wrote it (the residual kernel,
``afdps.kernels.residual.residual_add(stats=True)``, or the input convolution's, ``afdps.kernels.conv_in``): the
kernels skip their statistics pass over that input, which
is then read once.
"""
from __future__ import annotations

import torch

from ._triton import is_channels_last, requires_triton, tile_offsets, tl, tl_dtype, to_storage, triton
from .backend import interpreting
from .backend import use_triton as use_triton_rule
from .residual import RESAMPLES, GNStats, resample_ref

__all__ = ["groupnorm_silu_ref", "groupnorm_silu_triton", "groupnorm_silu", "RESAMPLES", "GNStats"]


def _check_stats(name, st, t):
    """``st``: None, or the :class:`GNStats` of ``t`` ((N, S, C) sums and an (N, C) shift in ``t``'s compute dtype,
    on its device)."""
    if st is None:
        return None
    if not (isinstance(st, tuple) and len(st) == 3 and all(torch.is_tensor(v) for v in st)):
        raise ValueError(f"{name} must be a GNStats (s1, s2, k) of tensors, got {type(st).__name__}")
    N, C = t.shape[:2]
    s1, s2, k = st
    if s1.dim() != 3 or s1.shape[0] != N or s1.shape[2] != C or s1.shape[1] < 1 or s2.shape != s1.shape \
            or tuple(k.shape) != (N, C):
        raise ValueError(f"{name} must hold (N, S, C) = ({N}, S >= 1, {C}) sums and an (N, C) shift, got shapes "
                         f"{tuple(s1.shape)}, {tuple(s2.shape)} and {tuple(k.shape)}")
    cdt = torch.float64 if t.dtype == torch.float64 else torch.float32
    for v in st:
        if v.dtype != cdt or v.device != t.device:
            raise ValueError(f"{name} must be {cdt} on {t.device}, got {v.dtype} on {v.device}")
    return GNStats(*(_canonical(v) for v in st))


def _canonical(v):
    """``v`` with the strides of a fresh contiguous tensor (the kernels take row lengths from them; ``contiguous()``
    keeps any stride of a size-1 dimension)."""
    want, step = [], 1
    for size in reversed(v.shape):
        want.insert(0, step)
        step *= size
    return v if list(v.stride()) == want else v.clone(memory_format=torch.contiguous_format)


def _check(x, weight, bias, groups, scale, shift, pre_bias=None, concat=None, resample=None, stats=None,
           concat_stats=None):
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    if resample not in RESAMPLES:
        raise ValueError(f"resample must be None, 'up' or 'down', got {resample!r}")
    if resample == "down" and (x.shape[2] % 2 or x.shape[3] % 2):
        raise ValueError(f"resample='down' needs an even height and width, got {tuple(x.shape[2:])}")
    N, C = x.shape[:2]
    if concat is not None:
        if concat.dim() != 4 or concat.shape[0] != N or concat.shape[2:] != x.shape[2:]:
            raise ValueError(f"concat must be (N, C2, H, W) with x's N, H, W {(N, *x.shape[2:])}, got shape "
                             f"{tuple(concat.shape)}")
        if concat.dtype != x.dtype or concat.device != x.device:
            raise ValueError(f"concat must have x's dtype and device ({x.dtype}, {x.device}), got "
                             f"({concat.dtype}, {concat.device})")
        C += concat.shape[1]
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
    if concat_stats is not None and concat is None:
        raise ValueError("concat_stats needs concat")
    return N, C, _check_stats("stats", stats, x), _check_stats("concat_stats", concat_stats, concat)


def _channels_last(x, concat):
    return is_channels_last(x) and (concat is None or is_channels_last(concat))


def groupnorm_silu_ref(x, weight, bias, *, groups: int, eps: float = 1e-5, scale=None, shift=None,
                       silu: bool = True, out_dtype=None, pre_bias=None, concat=None, resample=None, stats=None,
                       concat_stats=None):
    """Reference: ``silu((GN(x) * weight + bias) * (1 + scale) + shift)`` in the compute dtype (module docstring).

    ``scale``/``shift``: ``(N, C)`` (or ``(N, C, 1, 1)``) or ``None``; ``pre_bias``: ``(C,)`` or ``(N, C)``, added to
    ``x`` in the compute dtype before the statistics (the bias of the convolution that made ``x``, run without
    it, and ADM's time embedding without scale-shift); ``out_dtype``: the output's dtype (default
    ``x``'s); ``concat``: ``(N, C2, H, W)``, normalise ``cat([x, concat], 1)`` (``C`` counts both);
    ``resample``: None, ``"up"`` or ``"down"``, applied to the result in the compute dtype; ``stats``,
    ``concat_stats``: the inputs' :class:`GNStats`, checked, then unused here (the kernels use them in place of their
    statistics pass; this computes its own). Bytes it must move:
    the input read and ``y`` written, ``numel(x, concat) * x.itemsize + numel(y) * y.itemsize`` (the Triton kernels
    read the input twice; PyTorch's composition moves several float32 intermediates more).
    """
    N, C, _, _ = _check(x, weight, bias, groups, scale, shift, pre_bias, concat, resample, stats, concat_stats)
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xc = x.to(cdt) if concat is None else torch.cat([x.to(cdt), concat.to(cdt)], 1)
    if pre_bias is not None:
        xc = xc + pre_bias.reshape(-1, C, 1, 1).to(cdt)
    a = torch.nn.functional.group_norm(xc, groups, weight.to(cdt), bias.to(cdt), eps)
    if scale is not None:
        a = a * (1 + scale.reshape(N, C, 1, 1).to(cdt)) + shift.reshape(N, C, 1, 1).to(cdt)
    if silu:
        a = torch.nn.functional.silu(a)
    a = resample_ref(a, resample)
    fmt = torch.channels_last if _channels_last(x, concat) else torch.contiguous_format
    return a.to(out_dtype or x.dtype).contiguous(memory_format=fmt)



# ==== Triton ==========================================================================================
#
# Two launches over a grid of (sample n, channel block cb) x (pixel split s). A channel block holds GB whole
# groups (CBW = GB * Cg channels, padded to the power of two CBLK); a split holds PS consecutive pixels.
# Shifted data throughout: K_c = x[n, c, pixel 0], so the sums cancel only as much as the spread of the data,
# not its offset from zero.
#   _groupnorm_stats_kernel: per channel c of the block and split s, s1_sc = sum(x - K_c), s2_sc = sum((x - K_c)^2);
#       the first split writes K_c to k
#   _groupnorm_apply_kernel: sums the splits (s1_c, s2_c: channel c < C1 from buffer a, the others, a second
#       input's, from buffer b; sums made elsewhere, GNStats, come in the same form), shifts each channel's sums to its group's K_g (the K of
#       the group's first channel; k = K_c - K_g): sum(x - K_g) = s1_c + HW k, sum((x - K_g)^2) = s2_c + 2 k s1_c
#       + HW k^2, adds them over the group's Cg channels (D1, D2), and with M = Cg HW, delta = D1 / M,
#       var = D2 / M - delta^2, rstd = 1 / sqrt(var + eps), a_c = rstd w_c (1 + scale_nc),
#       b_c = bias_c (1 + scale_nc) + shift_nc writes y = silu(((x - K_g) - delta) a_c + b_c). The mean K_g + delta
#       is never rounded to the data's magnitude (x - K_g is exact for x near K_g).
# Tiles are [BLOCK_P pixels, CBLK channels]; element (p, c) of sample n sits at n C HW + p C + c (channels-last:
# a pixel's CBW channels are consecutive, CBW * itemsize >= CHUNK_BYTES, a cache line) or n C HW + c HW + p
# (contiguous: each channel's pixels are consecutive). x is read twice and y written once; the pixel splits give
# N * blocks * splits ~ 1024 programs whatever the batch (a fixed count, so the result does not depend on the
# device). With a second input (TWO: channels C1.. of the concatenation, C - C1 of them, same layout), a tile's
# channel c < C1 comes from x and the others from x2 (_load_tile: two masked loads, each element read once).
# The apply kernel's pixel q runs over the input's pixels (RES 0; RES 1 writes each one to the 2x2 output pixels
# (2h + i, 2w + j)) or over the (H/2, W/2) output's (RES 2: the mean of the four normalised inputs (2h + i, 2w + j)).


@triton.jit
def _load_tile(x_ptr, x2_ptr, n, p, c, m, C, C1, HW, CL: tl.constexpr, TWO: tl.constexpr):
    """The [pixels, channels] tile of sample n of x, or of cat([x, x2], 1) with TWO (x holds channels < C1)."""
    if TWO:
        in1 = (c < C1)[None, :]
        v1 = tl.load(x_ptr + n.to(tl.int64) * C1 * HW + tile_offsets(p, c, C1, HW, CL), mask=m & in1, other=0.0)
        v2 = tl.load(x2_ptr + n.to(tl.int64) * (C - C1) * HW + tile_offsets(p, c - C1, C - C1, HW, CL),
                     mask=m & (c >= C1)[None, :], other=0.0)
        return tl.where(in1, v1, v2)
    else:
        return tl.load(x_ptr + n.to(tl.int64) * C * HW + tile_offsets(p, c, C, HW, CL), mask=m, other=0.0)


@triton.jit
def _groupnorm_stats_kernel(
    x_ptr,  # (N, C, H, W) input (N, C1, H, W with TWO), contiguous or channels-last
    x2_ptr,  # (N, C - C1, H, W) the concatenation's second input, layout of x (unused unless TWO)
    s1_ptr,  # (N, S, C) per-split sums of x - K_c (CDT)
    s2_ptr,  # (N, S, C) per-split sums of (x - K_c)^2 (CDT)
    k_ptr,  # (N, C) the shift K_c (CDT)
    C, C1, HW, PS, S, NCB,
    CBW: tl.constexpr, CL: tl.constexpr, TWO: tl.constexpr, CDT: tl.constexpr, BLOCK_P: tl.constexpr,
    CBLK: tl.constexpr,
):
    pid = tl.program_id(0)
    s = tl.program_id(1)
    n = pid // NCB
    cb = pid % NCB
    cols = tl.arange(0, CBLK)
    c = cb * CBW + cols
    cm = (cols < CBW) & (c < C)
    K = _load_tile(x_ptr, x2_ptr, n, tl.arange(0, 1), c, cm[None, :], C, C1, HW, CL, TWO).to(CDT)
    if s == 0:
        tl.store(k_ptr + n.to(tl.int64) * C + c[None, :], K, mask=cm[None, :])
    p0 = s.to(tl.int64) * PS
    acc = tl.zeros([BLOCK_P, CBLK], dtype=CDT)
    acc2 = tl.zeros([BLOCK_P, CBLK], dtype=CDT)
    for start in range(0, PS, BLOCK_P):
        p = p0 + start + tl.arange(0, BLOCK_P)
        m = ((start + tl.arange(0, BLOCK_P) < PS) & (p < HW))[:, None] & cm[None, :]
        v = _load_tile(x_ptr, x2_ptr, n, p, c, m, C, C1, HW, CL, TWO).to(CDT)
        d = tl.where(m, v - K, 0.0)
        acc += d
        acc2 += d * d
    out = (n.to(tl.int64) * S + s) * C + c
    tl.store(s1_ptr + out, tl.sum(acc, axis=0), mask=cm)
    tl.store(s2_ptr + out, tl.sum(acc2, axis=0), mask=cm)


@triton.jit
def _normalise(v, Kg, delta, a, b, pb, PRE_BIAS: tl.constexpr, SILU: tl.constexpr):
    if PRE_BIAS:
        v = v + pb[None, :]
    h = ((v - Kg[None, :]) - delta[None, :]) * a[None, :] + b[None, :]
    if SILU:
        h = h * tl.sigmoid(h)
    return h


@triton.jit
def _groupnorm_apply_kernel(
    x_ptr,  # (N, C, H, W) input (N, C1, H, W with TWO), contiguous or channels-last
    x2_ptr,  # (N, C - C1, H, W) the concatenation's second input (unused unless TWO)
    s1a_ptr,  # (N, SA, LA) per-split sums of x - K_c, channel c < C1 at c (_groupnorm_stats_kernel or GNStats)
    s2a_ptr,  # (N, SA, LA) per-split sums of (x - K_c)^2
    ka_ptr,  # (N, LA) the shifts K_c
    s1b_ptr,  # (N, SB, LB) the same of the channels c >= C1 (TWO's second input), at c - C1 (SB = 0 without)
    s2b_ptr,
    kb_ptr,  # (N, LB)
    w_ptr,  # (C,) GroupNorm weight
    b_ptr,  # (C,) GroupNorm bias
    sc_ptr,  # (N, C) scale, rows SC_S apart (unused unless SCALE_SHIFT)
    sh_ptr,  # (N, C) shift, rows SH_S apart (unused unless SCALE_SHIFT)
    pb_ptr,  # (N, C) pre-bias, rows PB_S apart (0: one (C,) row for all samples; unused unless PRE_BIAS)
    y_ptr,  # (N, C, H', W') output, layout of x, its own dtype: H' = H, 2 H (RES 1) or H / 2 (RES 2)
    C, C1, HW, W, SA, LA, SB, LB, NQ, PQ, NCB, SC_S, SH_S, PB_S, eps,
    Cg: tl.constexpr, GB: tl.constexpr, CL: tl.constexpr, TWO: tl.constexpr, RES: tl.constexpr,
    SCALE_SHIFT: tl.constexpr, SILU: tl.constexpr, PRE_BIAS: tl.constexpr,
    CDT: tl.constexpr, BLOCK_P: tl.constexpr, CBLK: tl.constexpr,
):
    pid = tl.program_id(0)
    s = tl.program_id(1)
    n = pid // NCB
    cb = pid % NCB
    cols = tl.arange(0, CBLK)
    cm = cols < GB * Cg
    c = cb * (GB * Cg) + cols
    ma = cm & (c < C1)
    mb = cm & (c >= C1)
    K = tl.load(ka_ptr + n.to(tl.int64) * LA + c, mask=ma, other=0.0)
    K += tl.load(kb_ptr + n.to(tl.int64) * LB + (c - C1), mask=mb, other=0.0)
    pb = tl.zeros([CBLK], dtype=CDT)
    if PRE_BIAS:  # x + pb: the deviations from the shift are unchanged, the shift moves by pb
        pb = tl.load(pb_ptr + n * PB_S + c, mask=cm, other=0.0).to(CDT)
        K = K + pb
    s1 = tl.zeros([CBLK], dtype=CDT)
    s2 = tl.zeros([CBLK], dtype=CDT)
    row = n.to(tl.int64) * SA * LA + c
    for k in range(0, SA):
        s1 += tl.load(s1a_ptr + row + k * LA, mask=ma, other=0.0)
        s2 += tl.load(s2a_ptr + row + k * LA, mask=ma, other=0.0)
    row = n.to(tl.int64) * SB * LB + (c - C1)
    for k in range(0, SB):
        s1 += tl.load(s1b_ptr + row + k * LB, mask=mb, other=0.0)
        s2 += tl.load(s2b_ptr + row + k * LB, mask=mb, other=0.0)
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
    q0 = s.to(tl.int64) * PQ
    ty = y_ptr.dtype.element_ty
    for start in range(0, PQ, BLOCK_P):
        q = q0 + start + tl.arange(0, BLOCK_P)
        m = ((start + tl.arange(0, BLOCK_P) < PQ) & (q < NQ))[:, None] & cm[None, :]
        if RES == 2:  # q: an output pixel (H/2, W/2); the mean of its four normalised inputs
            ybase = y_ptr + n.to(tl.int64) * C * NQ
            p = (q // (W // 2)) * (2 * W) + 2 * (q % (W // 2))
            h = _normalise(_load_tile(x_ptr, x2_ptr, n, p, c, m, C, C1, HW, CL, TWO).to(CDT), Kg, delta, a, b, pb,
                           PRE_BIAS, SILU)
            h += _normalise(_load_tile(x_ptr, x2_ptr, n, p + 1, c, m, C, C1, HW, CL, TWO).to(CDT), Kg, delta, a, b,
                            pb, PRE_BIAS, SILU)
            h += _normalise(_load_tile(x_ptr, x2_ptr, n, p + W, c, m, C, C1, HW, CL, TWO).to(CDT), Kg, delta, a, b,
                            pb, PRE_BIAS, SILU)
            h += _normalise(_load_tile(x_ptr, x2_ptr, n, p + W + 1, c, m, C, C1, HW, CL, TWO).to(CDT), Kg, delta, a,
                            b, pb, PRE_BIAS, SILU)
            tl.store(ybase + tile_offsets(q, c, C, NQ, CL), to_storage(0.25 * h, ty), mask=m)
        else:
            h = to_storage(_normalise(_load_tile(x_ptr, x2_ptr, n, q, c, m, C, C1, HW, CL, TWO).to(CDT), Kg, delta,
                                      a, b, pb, PRE_BIAS, SILU), ty)
            if RES == 1:  # q: an input pixel (h, w), written to (2h + i, 2w + j) of the (2H, 2W) output
                ybase = y_ptr + n.to(tl.int64) * C * (4 * HW)
                o = (q // W) * (4 * W) + 2 * (q % W)
                tl.store(ybase + tile_offsets(o, c, C, 4 * HW, CL), h, mask=m)
                tl.store(ybase + tile_offsets(o + 1, c, C, 4 * HW, CL), h, mask=m)
                tl.store(ybase + tile_offsets(o + 2 * W, c, C, 4 * HW, CL), h, mask=m)
                tl.store(ybase + tile_offsets(o + 2 * W + 1, c, C, 4 * HW, CL), h, mask=m)
            else:
                tl.store(y_ptr + n.to(tl.int64) * C * HW + tile_offsets(q, c, C, HW, CL), h, mask=m)


def _rows(t, C):
    """``t`` as rows of ``C`` values, ``(-1, C)``, a view where its last dimension is contiguous."""
    r = t.reshape(-1, C)
    return r if r.stride(1) == 1 else r.contiguous()


PROGRAMS = 1024
"""Programs a launch aims at (channel blocks x pixel splits); fixed, so that results do not depend on the device
(``bench_adm --gn-sweep`` times other values)."""
CHUNK_BYTES = 128
"""The least bytes of one pixel a channel block holds (whole groups, powers of two of them), in channels-last one
128-byte cache line. Measured (``bench_adm --gn-sweep``, FFHQ ADM at batch 64, H200, ms per forward): 32 B 71.4,
128 B 70.9, 512 B 75.0 with 1024 programs; 74.6, 77.1 and 86.0 with 4096."""


def _plan(N, C, groups, HW, itemsize, split=None):
    """Channel block (GB groups of Cg channels: at least CHUNK_BYTES of a pixel in channels-last), pixel tile and
    split: ``(GB, CBLK, BLOCK_P, PS, S)``."""
    Cg = C // groups
    GB = 1
    while GB * 2 <= groups and groups % (GB * 2) == 0 and GB * Cg * itemsize < CHUNK_BYTES:
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


def _stats_launch(x, x2, C, C1, CBW, CBLK, BLOCK_P, PS, S, cl, two, warps):
    """The statistics launch over ``x`` (``C`` channels; with ``two``, ``cat([x, x2], 1)``, ``C1`` of them x's), in
    channel blocks of ``CBW``: :class:`GNStats` ``(N, S, C)``."""
    N, HW = x.shape[0], x.shape[2] * x.shape[3]
    sdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    s1 = torch.empty(N, S, C, dtype=sdt, device=x.device)
    s2 = torch.empty_like(s1)
    k = torch.empty(N, C, dtype=sdt, device=x.device)
    _groupnorm_stats_kernel[(N * triton.cdiv(C, CBW), S)](x, x2, s1, s2, k, C, C1, HW, PS, S, triton.cdiv(C, CBW),
                                                          CBW=CBW, CL=cl, TWO=two, CDT=tl_dtype(x.dtype),
                                                          BLOCK_P=BLOCK_P, CBLK=CBLK, num_warps=warps)
    return GNStats(s1, s2, k)


@requires_triton
def groupnorm_silu_triton(x, weight, bias, *, groups: int, eps: float = 1e-5, scale=None, shift=None,
                          silu: bool = True, out_dtype=None, pre_bias=None, concat=None, resample=None, stats=None,
                          concat_stats=None, _split=None):
    """:func:`groupnorm_silu_ref` in two launches, or one where ``stats`` (and, with ``concat``, ``concat_stats``)
    are given (same signature and results). ``_split``: force the number of pixel splits (tests)."""
    N, C, stats, concat_stats = _check(x, weight, bias, groups, scale, shift, pre_bias, concat, resample, stats,
                                       concat_stats)
    cl = _channels_last(x, concat)
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    x2 = concat.contiguous(memory_format=fmt) if concat is not None else x
    H, W = x.shape[2], x.shape[3]
    Ho, Wo = {None: (H, W), "up": (2 * H, 2 * W), "down": (H // 2, W // 2)}[resample]
    y = torch.empty((N, C, Ho, Wo), dtype=out_dtype or x.dtype, device=x.device, memory_format=fmt)
    HW = H * W
    if N == 0 or HW == 0:
        return y
    GB, CBLK, BLOCK_P, PS, S = _plan(N, C, groups, HW, x.element_size(), _split)
    NCB = groups // GB
    # The apply kernel's pixels: the input's, or the output's for "down" (in as many splits, whole tiles each)
    NQ = HW // 4 if resample == "down" else HW
    PQ = PS if resample != "down" else triton.cdiv(triton.cdiv(NQ, S), BLOCK_P) * BLOCK_P
    SQ = triton.cdiv(NQ, PQ) if NQ else 0
    # (N, C) rows read in place (ADM's scale and shift are the two halves of one (N, 2C) tensor); only a row that
    # is not contiguous is copied
    sc, sh, pb = (_rows(t, C) if t is not None else weight for t in (scale, shift, pre_bias))
    pb_stride = 0 if pre_bias is not None and pre_bias.numel() == C else pb.stride(0)
    cdt = tl_dtype(x.dtype)
    warps = 8 if BLOCK_P * CBLK >= 4096 else 4
    C1, two = x.shape[1], concat is not None
    plan = (GB * (C // groups), CBLK, BLOCK_P, PS, S, cl)
    if two and stats is None and concat_stats is None:  # one launch over the concatenation, split into its parts
        stats = both = _stats_launch(x, x2, C, C1, *plan, True, warps)  # x's channels first (row length C)
        concat_stats = GNStats(both.s1[:, :, C1:], both.s2[:, :, C1:], both.k[:, C1:])
    if stats is None:
        stats = _stats_launch(x, x, C1, C1, *plan, False, warps)
    if two and concat_stats is None:
        concat_stats = _stats_launch(x2, x2, C - C1, C - C1, *plan, False, warps)
    sb = concat_stats if two else stats  # unread without a second input (SB = 0)
    if SQ:
        _groupnorm_apply_kernel[(N * NCB, SQ)](
            x, x2, stats.s1, stats.s2, stats.k, sb.s1, sb.s2, sb.k, weight.contiguous(), bias.contiguous(), sc, sh, pb, y, C, C1,
            HW, W, stats.s1.shape[1], stats.s1.stride(1), sb.s1.shape[1] if two else 0, sb.s1.stride(1), NQ, PQ, NCB,
            sc.stride(0), sh.stride(0), pb_stride, float(eps), Cg=C // groups, GB=GB, CL=cl, TWO=two,
            RES=RESAMPLES.index(resample), SCALE_SHIFT=scale is not None, SILU=bool(silu),
            PRE_BIAS=pre_bias is not None, CDT=cdt, BLOCK_P=BLOCK_P, CBLK=CBLK, num_warps=warps)
    return y


def groupnorm_silu(x, weight, bias, *, groups: int, eps: float = 1e-5, scale=None, shift=None, silu: bool = True,
                   out_dtype=None, pre_bias=None, concat=None, resample=None, stats=None, concat_stats=None,
                   use_triton=None):
    """Dispatch between :func:`groupnorm_silu_triton` and :func:`groupnorm_silu_ref` by the rule of
    :func:`afdps.kernels.backend.use_triton`."""
    fn = groupnorm_silu_triton if use_triton_rule(use_triton, x.device, "groupnorm_silu", x) else groupnorm_silu_ref
    return fn(x, weight, bias, groups=groups, eps=eps, scale=scale, shift=shift, silu=silu, out_dtype=out_dtype,
              pre_bias=pre_bias, concat=concat, resample=resample, stats=stats, concat_stats=concat_stats)
