"""Pointwise work of the circular-blur operator on the half spectrum (``rfft2``, ``norm="ortho"``).

With ``H`` the transfer function of the blur (``A x = irfft2(H * rfft2(x))``), ``|H|^2`` are the
eigenvalues of ``A^T A`` and every operator-side step of the sampler is one filter on the
spectrum between one ``rfft2`` and one ``irfft2``:

- normal residual ``A^T (A x - y)``:  ``R = |H|^2 X - conj(H) Y`` (times a scale; with ``||A x - y||^2``, and
                                      ``||A x - t y||^2`` for a second ``t``, by Parseval)
- exact guidance step:                ``X - c phi(c |H|^2) R`` with ``c = h kappa``
- Stage-I filter:                     ``m(|H|^2) B + s(|H|^2) Z`` (mean filter on ``A^T y``, square-root
                                      covariance on white noise)

``Y`` is ``rfft2(y)`` of shape ``(B, 1, C, H, W//2+1)``, broadcast over the particles of each image.

:func:`blur_residual_triton` and :func:`blur_guidance_triton` do each filter in one pass over the
spectrum (the references launch about six complex kernels). The Stage-I filter runs once per sampling
run, so it has no kernel.
"""
from __future__ import annotations

import math

import torch

from ._triton import f64_scalars, requires_triton, tl, triton
from .backend import interpreting
from .backend import use_triton as use_triton_rule

__all__ = [
    "phi",
    "rfft_weights",
    "blur_residual_ref",
    "blur_guidance_ref",
    "blur_residual_triton",
    "blur_guidance_triton",
    "blur_residual",
    "blur_guidance",
]


def phi(z: torch.Tensor) -> torch.Tensor:
    """``(1 - exp(-z)) / z`` with ``phi(0) = 1``, accurate for small ``z``."""
    small = z.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 1.0 - 0.5 * z, -torch.expm1(-safe) / safe)


def rfft_weights(width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Parseval weights of the ``rfft`` columns: 1 for the self-conjugate ones, 2 otherwise."""
    wr = width // 2 + 1
    w = torch.full((wr,), 2.0, device=device, dtype=dtype)
    w[0] = 1.0
    if width % 2 == 0:
        w[-1] = 1.0
    return w


def blur_residual_ref(X: torch.Tensor, H: torch.Tensor, Y: torch.Tensor, width: int, with_norm: bool,
                      scale: float = 1.0, second: float | None = None):
    """Spectrum of ``scale A^T (A x - y)`` and, if asked, ``||A x - y||^2`` (unscaled) per leading index.

    ``X``: ``(..., C, H, Wr)`` complex, ``H``: ``(H, Wr)`` complex, ``Y`` broadcastable to ``X``.
    Reads ``X`` once and writes one spectrum: 16 bytes per complex64 element each way. ``scale`` (the
    potential's ``1 / sigma^2``) rides along, so the gradient needs no pass of its own. ``second`` (with
    ``with_norm``): the norm is ``(2, ...)``, ``||A x - y||^2`` and ``||A x - second y||^2`` (the potential at
    the step's two grid times, whose measurements are scaled differently) from the same pass.
    """
    if second is not None and not with_norm:
        raise ValueError("second scales a norm: it needs with_norm=True")
    AX_minus_Y = H * X - Y
    R = torch.conj(H) * AX_minus_Y
    if float(scale) != 1.0:
        R = R * float(scale)
    if not with_norm:
        return R, None
    w = rfft_weights(width, device=X.device, dtype=X.real.dtype)

    def norm(a):
        return (a.real.square() + a.imag.square()).mul(w).sum(dim=(-3, -2, -1), dtype=torch.float64)

    if second is None:
        return R, norm(AX_minus_Y)
    return R, torch.stack([norm(AX_minus_Y), norm(AX_minus_Y + (1.0 - float(second)) * Y)])


def blur_guidance_ref(X: torch.Tensor, H: torch.Tensor, Y: torch.Tensor, c: float) -> torch.Tensor:
    """Exact guidance step on the spectrum: ``X - c phi(c |H|^2) (|H|^2 X - conj(H) Y)``.

    ``c = h kappa`` (step length times guidance stiffness). Same shapes as :func:`blur_residual_ref`.

    Bytes moved: reads ``X`` and writes the new spectrum, ``2 * numel(X) * itemsize`` (16 bytes per
    complex64 element in all), plus ``H`` and ``Y`` once per image.
    """
    e = H.real.square() + H.imag.square()
    filt = c * phi(c * e)
    return X - filt * (e * X - torch.conj(H) * Y)


# ==== Triton ==========================================================================================
#
# The spectra are complex64 (or complex128) tensors passed as their `torch.view_as_real` views: a row
# of the leading dims holds M = C * Hh * Wr interleaved (re, im) pairs. One program owns BLOCK complex
# elements of one row, loaded as a (BLOCK, 2) tile (8-byte vectors) and split into re / im. H, of shape
# (Hh, Wr), is indexed by m % (Hh * Wr) (it broadcasts over channels and stays in L2); Y row r // YDIV
# serves X row r (Y is (B, 1, ...) against X's (B, N, ...): one measurement per image). The Parseval
# norm is reduced like the fused step: float32 block partials, float64 sum over the blocks.


@triton.jit
def _blur_residual_kernel(
    x_ptr,  # (L, M, 2) X = rfft2(x) as real pairs
    h_ptr,  # (Hh * Wr, 2) transfer function H
    y_ptr,  # (L // YDIV, M, 2) Y = rfft2(y)
    r_ptr,  # (L, M, 2) out: s conj(H) (H X - Y)
    s_ptr,  # (2,) float64 s and t (read at run time: one compilation, graph-replayable)
    part_ptr,  # (NORMS, L, NB) float32 out: block partials of the weighted |H X - Y|^2, |H X - t Y|^2
    M, HW, WR, LASTW, YDIV, NB, L,
    NORMS: tl.constexpr, BLOCK: tl.constexpr,
):
    # a = H X - Y; R = s conj(H) a; norm += w_col |a|^2 with w_col = 1 for columns 0 and LASTW, else 2;
    # the second norm of a + (1 - t) Y
    pid = tl.program_id(0)
    row = pid // NB
    blk = pid % NB
    m = blk * BLOCK + tl.arange(0, BLOCK)
    mask = m < M
    mask2 = mask[:, None]
    two = tl.arange(0, 2)[None, :]
    xo = row.to(tl.int64) * M * 2 + m[:, None] * 2 + two
    yo = (row // YDIV).to(tl.int64) * M * 2 + m[:, None] * 2 + two
    hw = m % HW
    xr, xi = tl.split(tl.load(x_ptr + xo, mask=mask2, other=0.0))
    hr, hi = tl.split(tl.load(h_ptr + hw[:, None] * 2 + two, mask=mask2, other=0.0).to(xr.dtype))
    yr, yi = tl.split(tl.load(y_ptr + yo, mask=mask2, other=0.0).to(xr.dtype))
    ar = (hr * xr - hi * xi) - yr
    ai = (hr * xi + hi * xr) - yi
    sc = tl.load(s_ptr).to(xr.dtype)
    rr = (hr * ar + hi * ai) * sc
    ri = (hr * ai - hi * ar) * sc
    tl.store(r_ptr + xo, tl.join(rr, ri), mask=mask2)
    if NORMS > 0:
        col = m % WR
        wcol = tl.where((col == 0) | (col == LASTW), 1.0, 2.0)
        tl.store(part_ptr + row * NB + blk, tl.sum(tl.where(mask, (ar * ar + ai * ai) * wcol, 0.0), axis=0))
    if NORMS > 1:
        u = 1.0 - tl.load(s_ptr + 1).to(xr.dtype)
        br = ar + u * yr
        bi = ai + u * yi
        tl.store(part_ptr + (L + row) * NB + blk, tl.sum(tl.where(mask, (br * br + bi * bi) * wcol, 0.0), axis=0))


@triton.jit
def _phi(z):
    # (1 - exp(-z)) / z: below |z| = 0.5 its Taylor series to z^15 (truncation < 1e-19, enough for float64
    # too) in the nested form 1 + t/2 (1 + t/3 (1 + ...)), t = -z, whose constants are small integers (exact
    # in any dtype); else direct (cancellation there costs at most 1 / (1 - exp(-0.5)) < 2.6 roundings).
    t = -z
    p = 1.0 + t / 16.0
    p = 1.0 + p * t / 15.0
    p = 1.0 + p * t / 14.0
    p = 1.0 + p * t / 13.0
    p = 1.0 + p * t / 12.0
    p = 1.0 + p * t / 11.0
    p = 1.0 + p * t / 10.0
    p = 1.0 + p * t / 9.0
    p = 1.0 + p * t / 8.0
    p = 1.0 + p * t / 7.0
    p = 1.0 + p * t / 6.0
    p = 1.0 + p * t / 5.0
    p = 1.0 + p * t / 4.0
    p = 1.0 + p * t / 3.0
    p = 1.0 + p * t / 2.0
    small = tl.abs(z) < 0.5
    safe = tl.where(small, 1.0, z)
    return tl.where(small, p, (1.0 - tl.exp(-safe)) / safe)


@triton.jit
def _blur_guidance_kernel(
    x_ptr,  # (L, M, 2) X = rfft2(x)
    h_ptr,  # (Hh * Wr, 2) transfer function H
    y_ptr,  # (L // YDIV, M, 2) Y = rfft2(y)
    o_ptr,  # (L, M, 2) out: X - c phi(c |H|^2) (|H|^2 X - conj(H) Y)
    c_ptr,  # (1,) float64 c = h * kappa (read at run time: one compilation, graph-replayable)
    M, HW, YDIV, NB,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    row = pid // NB
    blk = pid % NB
    m = blk * BLOCK + tl.arange(0, BLOCK)
    mask2 = (m < M)[:, None]
    two = tl.arange(0, 2)[None, :]
    xo = row.to(tl.int64) * M * 2 + m[:, None] * 2 + two
    yo = (row // YDIV).to(tl.int64) * M * 2 + m[:, None] * 2 + two
    hw = m % HW
    xr, xi = tl.split(tl.load(x_ptr + xo, mask=mask2, other=0.0))
    hr, hi = tl.split(tl.load(h_ptr + hw[:, None] * 2 + two, mask=mask2, other=0.0).to(xr.dtype))
    yr, yi = tl.split(tl.load(y_ptr + yo, mask=mask2, other=0.0).to(xr.dtype))
    cc = tl.load(c_ptr).to(xr.dtype)
    e = hr * hr + hi * hi
    filt = cc * _phi(cc * e)
    qr = e * xr - (hr * yr + hi * yi)
    qi = e * xi - (hr * yi - hi * yr)
    tl.store(o_ptr + xo, tl.join(xr - filt * qr, xi - filt * qi), mask=mask2)


def _spectral_rows(X: torch.Tensor, H: torch.Tensor, Y: torch.Tensor):
    """Real views and the row bookkeeping: (Xr (L, M, 2), Hr, Yr, L, M, YDIV)."""
    if not X.is_complex() or X.dim() < 3:
        raise ValueError(f"X must be a complex (..., C, H, Wr) spectrum, got {X.dtype} {tuple(X.shape)}")
    if X.dtype not in (torch.complex64, torch.complex128):
        raise ValueError(f"X must be complex64 or complex128, got {X.dtype}")
    C, Hh, Wr = X.shape[-3:]
    if tuple(H.shape) != (Hh, Wr):
        raise ValueError(f"H must be ({Hh}, {Wr}), got {tuple(H.shape)}")
    lead = tuple(X.shape[:-3])
    L = math.prod(lead)
    ylead = tuple(Y.shape[:-3]) if Y.dim() >= 3 else ()
    ydiv = None
    if Y.dim() >= 3 and tuple(Y.shape[-3:]) == (C, Hh, Wr) and len(ylead) <= len(lead):
        ylead = (1,) * (len(lead) - len(ylead)) + ylead
        for k in range(len(lead), -1, -1):  # Y leads = X leads[:k] followed by ones
            if ylead[:k] == lead[:k] and all(s == 1 for s in ylead[k:]):
                ydiv = math.prod(lead[k:])
                break
    if ydiv is None:
        Y = torch.broadcast_to(Y, X.shape)
        ydiv = 1
    Y = Y.to(X.dtype).resolve_conj().contiguous()
    X = X.resolve_conj().contiguous()
    H = H.to(X.dtype).resolve_conj().contiguous()
    return torch.view_as_real(X).view(L, -1, 2), torch.view_as_real(H), torch.view_as_real(Y), L, C * Hh * Wr, ydiv


def _spectral_block(M: int) -> int:
    if interpreting():
        return max(16, min(triton.next_power_of_2(M), 1 << 16))
    return max(16, min(triton.next_power_of_2(M), 1024))


@requires_triton
def blur_residual_triton(X: torch.Tensor, H: torch.Tensor, Y: torch.Tensor, width: int, with_norm: bool,
                         scale: float = 1.0, second: float | None = None):
    """:func:`blur_residual_ref` in one launch (plus a float64 sum of the block partials for each norm)."""
    if second is not None and not with_norm:
        raise ValueError("second scales a norm: it needs with_norm=True")
    Xr, Hr, Yr, L, M, ydiv = _spectral_rows(X, H, Y)
    norms = 0 if not with_norm else (1 if second is None else 2)
    s_t = f64_scalars([scale, 1.0 if second is None else second], X.device)
    Wr = X.shape[-1]
    out = torch.empty(X.shape, dtype=X.dtype, device=X.device)
    BLOCK = _spectral_block(M)
    NB = triton.cdiv(M, BLOCK) if M else 0
    part = torch.zeros(max(norms, 1), L, NB, dtype=torch.float32 if X.dtype == torch.complex64 else torch.float64,
                       device=X.device)
    if L and M:
        _blur_residual_kernel[(L * NB,)](Xr, Hr, Yr, torch.view_as_real(out), s_t, part, M, H.shape[0] * Wr, Wr,
                                         Wr - 1 if int(width) % 2 == 0 else 0, ydiv, NB, L,
                                         NORMS=norms, BLOCK=BLOCK, num_warps=4)
    if not with_norm:
        return out, None
    sums = part.sum(-1, dtype=torch.float64)
    return out, (sums[0].view(X.shape[:-3]) if second is None else sums.view(2, *X.shape[:-3]))


@requires_triton
def blur_guidance_triton(X: torch.Tensor, H: torch.Tensor, Y: torch.Tensor, c) -> torch.Tensor:
    """:func:`blur_guidance_ref` in one launch; ``c`` (a float, or a (1,) float64 tensor on ``X``'s
    device) is read at run time, so one compilation serves every step."""
    Xr, Hr, Yr, L, M, ydiv = _spectral_rows(X, H, Y)
    out = torch.empty(X.shape, dtype=X.dtype, device=X.device)
    c_t = c if isinstance(c, torch.Tensor) else f64_scalars([c], X.device)
    BLOCK = _spectral_block(M)
    NB = triton.cdiv(M, BLOCK) if M else 0
    if L and M:
        _blur_guidance_kernel[(L * NB,)](Xr, Hr, Yr, torch.view_as_real(out), c_t, M, H.shape[0] * X.shape[-1],
                                         ydiv, NB, BLOCK=BLOCK, num_warps=4)
    return out


def blur_residual(X, H, Y, width: int, with_norm: bool, use_triton=None, scale: float = 1.0,
                  second: float | None = None):
    """Dispatch between :func:`blur_residual_triton` and :func:`blur_residual_ref` by the rule of
    :func:`afdps.kernels.backend.use_triton`."""
    fn = blur_residual_triton if use_triton_rule(use_triton, X.device, "blur_residual", X) else blur_residual_ref
    return fn(X, H, Y, width, with_norm, scale, second)


def blur_guidance(X, H, Y, c: float, use_triton=None):
    """Dispatch between :func:`blur_guidance_triton` and :func:`blur_guidance_ref` by the rule of
    :func:`afdps.kernels.backend.use_triton`."""
    fn = blur_guidance_triton if use_triton_rule(use_triton, X.device, "blur_guidance", X) else blur_guidance_ref
    return fn(X, H, Y, c)
