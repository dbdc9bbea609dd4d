"""GroupNorm + scale-shift + SiLU in one pass pair: the normalisation of every ADM ResBlock.

With ``x`` of shape ``(N, C, H, W)`` in ``G`` groups of ``Cg = C / G`` channels, per sample ``n`` and
group ``g`` (statistics over the group's ``Cg * H * W`` values, in float32, float64 for float64 input)::

    xhat = (x - mean_ng) / sqrt(var_ng + eps)
    a    = (xhat * weight_c + bias_c) * (1 + scale_nc) + shift_nc      # scale-shift optional
    y    = silu(a) = a * sigmoid(a)                                      # optional

``y`` has the dtype and the memory format (contiguous or channels-last) of ``x``. The reference composes
PyTorch ops in the compute dtype; the Triton kernel (:func:`groupnorm_silu_triton`) reads each group
twice (statistics, then the normalised write) and never materialises the float32 intermediate.
"""
from __future__ import annotations

import torch

from ._triton import requires_triton, tl, to_storage, triton
from .backend import interpreting
from .backend import use_triton as use_triton_rule

__all__ = ["groupnorm_silu_ref", "groupnorm_silu_triton", "groupnorm_silu"]


def _check(x, weight, bias, groups, scale, shift):
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
    if scale is not None:
        for name, t in (("scale", scale), ("shift", shift)):
            if t.numel() != N * C:
                raise ValueError(f"{name} must hold (N, C) = ({N}, {C}) values, got shape {tuple(t.shape)}")
    return N, C


def groupnorm_silu_ref(x, weight, bias, *, groups: int, eps: float = 1e-5, scale=None, shift=None,
                       silu: bool = True):
    """Reference: ``silu((GN(x) * weight + bias) * (1 + scale) + shift)`` in the compute dtype (module docstring).

    ``scale``/``shift``: ``(N, C)`` (or ``(N, C, 1, 1)``) or ``None``. Bytes moved: reads ``x`` and writes
    ``y``, ``2 * numel * itemsize`` (PyTorch's composition moves several float32 intermediates more).
    """
    _check(x, weight, bias, groups, scale, shift)
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    a = torch.nn.functional.group_norm(x.to(cdt), groups, weight.to(cdt), bias.to(cdt), eps)
    if scale is not None:
        N, C = x.shape[:2]
        a = a * (1 + scale.reshape(N, C, 1, 1).to(cdt)) + shift.reshape(N, C, 1, 1).to(cdt)
    if silu:
        a = torch.nn.functional.silu(a)
    fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
    return a.to(x.dtype).contiguous(memory_format=fmt)


def _is_channels_last(x) -> bool:
    return x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous()


# ==== Triton ==========================================================================================
#
# One program per (sample n, group g), looping twice over the group's M = Cg * HW elements in BLOCK chunks:
# pass 1 sums x - K and (x - K)^2 (float32 or float64; K the group's first value), pass 2 normalises, applies the affine, scale-shift and SiLU,
# and stores. Element i of the group is channel g*Cg + i // HW, pixel i % HW (contiguous layout), or
# pixel i // Cg, channel g*Cg + i % Cg (channels-last), so both layouts read consecutive addresses.


@triton.jit
def _groupnorm_silu_kernel(
    x_ptr,  # (N, C, H, W) input, contiguous or channels-last
    w_ptr,  # (C,) GroupNorm weight
    b_ptr,  # (C,) GroupNorm bias
    sc_ptr,  # (N, C) scale (unused unless SCALE_SHIFT)
    sh_ptr,  # (N, C) shift (unused unless SCALE_SHIFT)
    y_ptr,  # (N, C, H, W) output, layout of x
    C, HW, G, eps,
    CL: tl.constexpr, SCALE_SHIFT: tl.constexpr, SILU: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr,
):
    # sums of d = x - K with K the group's first value (shifted data: var = E[d^2] - E[d]^2 cancels only
    # as much as the spread of the group, not its offset); mean = K + E[d]; y = silu((x - mean) rstd w + b) ...
    pid = tl.program_id(0)
    n = pid // G
    g = pid % G
    Cg = C // G
    M = Cg * HW
    base = n.to(tl.int64) * C * HW
    if CL:
        K = tl.load(x_ptr + base + g * Cg).to(CDT)
    else:
        K = tl.load(x_ptr + base + g * Cg * HW).to(CDT)
    acc = tl.zeros([BLOCK], dtype=CDT)
    acc2 = tl.zeros([BLOCK], dtype=CDT)
    for start in range(0, M, BLOCK):
        i = start + tl.arange(0, BLOCK)
        m = i < M
        if CL:
            off = (i // Cg) * C + g * Cg + i % Cg
        else:
            off = (g * Cg + i // HW) * HW + i % HW
        v = tl.load(x_ptr + base + off, mask=m, other=0.0).to(CDT)
        d = tl.where(m, v - K, 0.0)
        acc += d
        acc2 += d * d
    dm = tl.sum(acc, axis=0) / M
    mean = K + dm
    var = tl.maximum(tl.sum(acc2, axis=0) / M - dm * dm, 0.0)
    rstd = 1.0 / tl.sqrt(var + eps)
    for start in range(0, M, BLOCK):
        i = start + tl.arange(0, BLOCK)
        m = i < M
        if CL:
            c = g * Cg + i % Cg
            off = (i // Cg) * C + c
        else:
            c = g * Cg + i // HW
            off = c * HW + i % HW
        v = tl.load(x_ptr + base + off, mask=m, other=0.0).to(CDT)
        a = (v - mean) * rstd * tl.load(w_ptr + c, mask=m, other=1.0).to(CDT) + tl.load(b_ptr + c, mask=m,
                                                                                        other=0.0).to(CDT)
        if SCALE_SHIFT:
            a = a * (1.0 + tl.load(sc_ptr + n * C + c, mask=m, other=0.0).to(CDT)) \
                + tl.load(sh_ptr + n * C + c, mask=m, other=0.0).to(CDT)
        if SILU:
            a = a * tl.sigmoid(a)
        tl.store(y_ptr + base + off, to_storage(a, y_ptr.dtype.element_ty), mask=m)


@requires_triton
def groupnorm_silu_triton(x, weight, bias, *, groups: int, eps: float = 1e-5, scale=None, shift=None,
                          silu: bool = True):
    """:func:`groupnorm_silu_ref` in one launch (same signature and results)."""
    N, C = _check(x, weight, bias, groups, scale, shift)
    cl = _is_channels_last(x)
    if not cl:
        x = x.contiguous()
    y = torch.empty_like(x)  # keeps the memory format
    HW = x.shape[2] * x.shape[3]
    M = (C // groups) * HW
    if N == 0 or M == 0:
        return y
    block = triton.next_power_of_2(M)
    block = max(16, min(block, 1 << 16 if interpreting() else 2048))
    sc = scale.reshape(N, C).contiguous() if scale is not None else weight
    sh = shift.reshape(N, C).contiguous() if shift is not None else bias
    cdt = tl.float64 if x.dtype == torch.float64 else tl.float32
    _groupnorm_silu_kernel[(N * groups,)](x, weight.contiguous(), bias.contiguous(), sc, sh, y, C, HW, groups,
                                          float(eps), CL=cl, SCALE_SHIFT=scale is not None, SILU=bool(silu),
                                          CDT=cdt, BLOCK=block, num_warps=8 if block >= 1024 else 4)
    return y


def groupnorm_silu(x, weight, bias, *, groups: int, eps: float = 1e-5, scale=None, shift=None, silu: bool = True,
                   use_triton=None):
    """Dispatch between :func:`groupnorm_silu_triton` and :func:`groupnorm_silu_ref` by the rule of
    :func:`afdps.kernels.backend.use_triton`."""
    fn = groupnorm_silu_triton if use_triton_rule(use_triton, x.device, "groupnorm_silu") else groupnorm_silu_ref
    return fn(x, weight, bias, groups=groups, eps=eps, scale=scale, shift=shift, silu=silu)
