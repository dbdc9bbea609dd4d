"""One AFDPS timestep on the particle rows: prior drift, guidance, noise and log-weight increment.

Rows are particles, ``R = B * N`` of them (image-major), each a flat vector of ``D`` pixels.
The equations are those of the spec (section 2), with ``gm = lam * grad_mu`` and ``L = lam * lap_mu``::

    c     = -f x + 0.5 (g2 + v2) s
    x'    = x + c h - [euler] eta v2 h gm + sqrt(v2 h) xi
    rate  = 0.5 v2 (|gm|^2 - L) - <c, gm> + (1 - eta) v2 (L + <s, gm> - |gm|^2)
    dlogw = h rate

``v2 = 0`` is the probability-flow predictor (``rate = -<c, gm>``). With exact guidance (``euler=False``)
the guidance part of the step is left to the operator (:meth:`afdps.ops.LinearOperator.exact_guidance_step`).
``xi`` is the Philox stream of :mod:`afdps.kernels.philox` under ``keys[b]`` for row ``i`` of image ``b``.

The Triton kernels (:func:`particle_step_triton`, :func:`langevin_step_triton`) read each input once,
draw ``xi`` in-kernel (never stored) and fuse the three inner products of the rate into the same pass;
design notes above ``_particle_step_kernel``.
"""
from __future__ import annotations

import math

import torch

from ._triton import (HAS_TRITON, f64_scalars, interpreting, philox_normal_tile, resolve, tl, tl_dtype, to_storage,
                      triton)
from .philox import randn_rows

__all__ = [
    "particle_step_ref",
    "langevin_step_ref",
    "PARAM_NAMES",
    "LANGEVIN_PARAM_NAMES",
    "particle_step_params",
    "langevin_step_params",
    "particle_step_launch",
    "langevin_step_launch",
    "particle_step_triton",
    "langevin_step_triton",
    "particle_step",
    "langevin_step",
]


def _rows_noise(keys: torch.Tensor, num_particles: int, D: int, like: torch.Tensor) -> torch.Tensor:
    return randn_rows(keys.to(like.device), num_particles, D).reshape(-1, D)


def particle_step_ref(x, score, grad_mu, keys, *, num_particles: int, f: float, g2: float, v2: float, eta: float,
                      h: float, lam: float, lap_mu: float, euler: bool):
    """Reference of the fused step.

    Parameters
    ----------
    x, score, grad_mu : (R, D) tensors (float32, float64 or bfloat16 storage; arithmetic in float32
        or float64). ``grad_mu = A^T (A x - y) / sigma_y^2`` (not yet multiplied by ``lam``).
    keys : (B,) int64 Philox keys of this step, ``R = B * num_particles``.
    f, g2, v2, eta, h, lam, lap_mu : scalars of the step (``lap_mu = ||A||_F^2 / sigma_y^2``).
    euler : include the explicit guidance term ``-eta v2 h gm``.

    Returns
    -------
    x_new : (R, D), dtype of ``x``.
    dlogw : (R,) float64, ``h * rate``.

    Bytes moved: reads ``x``, ``score``, ``grad_mu`` and writes ``x_new``: ``4 * R * D * itemsize``.
    """
    R, D = x.shape
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf, sf, gf = x.to(cdt), score.to(cdt), grad_mu.to(cdt)
    gm = lam * gf
    c = (-f) * xf + 0.5 * (g2 + v2) * sf
    c_gm = (c * gm).sum(-1, dtype=torch.float64)
    gm2 = (gm * gm).sum(-1, dtype=torch.float64)
    s_gm = (sf * gm).sum(-1, dtype=torch.float64)
    L = lam * lap_mu
    rate = 0.5 * v2 * (gm2 - L) - c_gm + (1.0 - eta) * v2 * (L + s_gm - gm2)
    x_new = xf + h * c
    if euler and eta * v2 != 0.0:
        x_new = x_new - (eta * v2 * h) * gm
    if v2 > 0.0:
        x_new = x_new + math.sqrt(v2 * h) * _rows_noise(keys, num_particles, D, x).to(cdt)
    return x_new.to(x.dtype), h * rate


def langevin_step_ref(x, score, grad_mu, keys, *, num_particles: int, lam: float, snr: float):
    """Unadjusted Langevin corrector towards ``Q_t``: ``x + e (s - lam grad_mu) + sqrt(2 e) z``.

    The step size is Song et al.'s predictor-corrector rule, per image ``b``:
    ``e_b = 2 (snr * mean_i |z_i| / mean_i |s_i - lam grad_mu_i|)^2`` (``|.|`` the L2 norm of a row,
    means over the particles of the image). Weights are unchanged.

    Returns ``x_new (R, D)`` and the step sizes ``(B,)`` float64.
    """
    R, D = x.shape
    B = R // num_particles
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(cdt)
    drift = score.to(cdt) - lam * grad_mu.to(cdt)
    z = _rows_noise(keys, num_particles, D, x).to(cdt)
    znorm = z.square().sum(-1, dtype=torch.float64).sqrt().view(B, num_particles).mean(1)
    dnorm = drift.square().sum(-1, dtype=torch.float64).sqrt().view(B, num_particles).mean(1)
    e = 2.0 * (snr * znorm / dnorm.clamp_min(1e-30)).square()
    e_rows = e.repeat_interleave(num_particles).to(cdt).unsqueeze(-1)
    x_new = xf + e_rows * drift + torch.sqrt(2.0 * e_rows) * z
    return x_new.to(x.dtype), e


# ==== Triton ==========================================================================================
#
# Layout: rows are particles (R = B * N, image-major), D pixels each, contiguous. One program owns
# BLOCK pixels of one row (a 1-D grid of R * NB programs, NB = cdiv(D, BLOCK), so neither grid axis
# limit nor a small R starves the GPU). Pixels are handled as a (BLOCK // 4, 4) tile: row j of the tile
# is the Philox group j = d // 4, so one Philox call and two Box-Muller pairs serve four pixels (the
# stream of kernels/philox.py) and the loads stay 16-byte vectors.
#
# Reductions: each program writes its float32 block partials of <c, gm>, |gm|^2 and <s, gm> to a
# (3, R, NB) buffer; a second, tiny kernel sums them per row in float64 and forms dlogw. Chosen over
# float64 atomics because the result is then bit-reproducible from run to run (atomics add in arrival
# order), needs no zero-initialised output (one memset launch less) and no float64 atomic hardware;
# the buffer is 3 * R * NB * 4 bytes, under 0.1% of the traffic at D = 3*256*256.
#
# Per-step scalars are read from a float64 device tensor (`particle_step_params`), not passed as
# Python floats: Triton would pass those as float32 (the constant lam * lap_mu terms of the rate need
# float64), and a tensor lets one compiled kernel, or one captured CUDA graph, serve every step.

# The params tensor of the fused step holds the raw scalars, in this order (float64); the kernels derive
# 0.5 (g2 + v2), eta v2 h, sqrt(v2 h) and lam lap_mu in float64 exactly as the reference does in Python.
PARAM_NAMES = ("f", "g2", "v2", "eta", "h", "lam", "lap_mu")
# ... and of the Langevin corrector.
LANGEVIN_PARAM_NAMES = ("lam", "snr")


@triton.jit
def _particle_step_kernel(
    x_ptr,  # (R, D) particles, float32 / bfloat16 / float64
    s_ptr,  # (R, D) score s(x, tau)
    g_ptr,  # (R, D) grad_mu = A^T (A x - y) / sigma_y^2 (lam not applied)
    keys_ptr,  # (B,) int64 Philox keys, image b = row // N
    p_ptr,  # (7,) float64 step scalars f, g2, v2, eta, h, lam, lap_mu
    out_ptr,  # (R, D) x_new, dtype of x
    part_ptr,  # (3, R, NB) compute dtype: block partials of <c, gm>, |gm|^2, <s, gm>
    R, D, N, NB,
    EULER: tl.constexpr, NOISE: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr,
):
    # gm = lam g;  c = -f x + 0.5 (g2 + v2) s;  x_new = x + h c [- eta v2 h gm] [+ sqrt(v2 h) z]
    # partials: sum(c gm), sum(gm gm), sum(s gm) over this block (zeros where d >= D).
    pid = tl.program_id(0)
    row = pid // NB
    blk = pid % NB
    G: tl.constexpr = BLOCK // 4
    lane = tl.arange(0, 4)
    j = blk * G + tl.arange(0, G)  # Philox group d // 4
    d = j[:, None] * 4 + lane[None, :]
    mask = d < D
    base = row.to(tl.int64) * D
    x = tl.load(x_ptr + base + d, mask=mask, other=0.0).to(CDT)
    s = tl.load(s_ptr + base + d, mask=mask, other=0.0).to(CDT)
    g = tl.load(g_ptr + base + d, mask=mask, other=0.0).to(CDT)
    f64 = tl.load(p_ptr + 0)
    v2 = tl.load(p_ptr + 2)
    h64 = tl.load(p_ptr + 4)
    lam = tl.load(p_ptr + 5).to(CDT)
    gm = lam * g
    c = (-f64).to(CDT) * x + (0.5 * (tl.load(p_ptr + 1) + v2)).to(CDT) * s
    xn = x + h64.to(CDT) * c
    if EULER:
        xn = xn - (tl.load(p_ptr + 3) * v2 * h64).to(CDT) * gm
    if NOISE:
        key = tl.load(keys_ptr + row // N)
        z = philox_normal_tile(key, j, row % N, lane)
        xn = xn + tl.sqrt(v2 * h64).to(CDT) * z.to(CDT)
    tl.store(out_ptr + base + d, to_storage(xn, out_ptr.dtype.element_ty), mask=mask)
    cg = tl.sum(tl.sum(c * gm, axis=1), axis=0)
    gg = tl.sum(tl.sum(gm * gm, axis=1), axis=0)
    sg = tl.sum(tl.sum(s * gm, axis=1), axis=0)
    RB = R * NB
    tl.store(part_ptr + row * NB + blk, cg)
    tl.store(part_ptr + RB + row * NB + blk, gg)
    tl.store(part_ptr + 2 * RB + row * NB + blk, sg)


@triton.jit
def _particle_step_finish_kernel(
    part_ptr,  # (3, R, NB) block partials from _particle_step_kernel
    p_ptr,  # (7,) float64 step scalars f, g2, v2, eta, h, lam, lap_mu
    out_ptr,  # (R,) float64 dlogw
    R, NB,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # dlogw = h [0.5 v2 (gm2 - L) - cgm + (1 - eta) v2 (L + sgm - gm2)], sums in float64
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    cgm = tl.zeros([BLOCK_R], dtype=tl.float64)
    gm2 = tl.zeros([BLOCK_R], dtype=tl.float64)
    sgm = tl.zeros([BLOCK_R], dtype=tl.float64)
    RB = R * NB
    for k0 in range(0, NB, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        m = rmask[:, None] & (k < NB)[None, :]
        off = rows[:, None] * NB + k[None, :]
        cgm += tl.sum(tl.load(part_ptr + off, mask=m, other=0.0).to(tl.float64), axis=1)
        gm2 += tl.sum(tl.load(part_ptr + RB + off, mask=m, other=0.0).to(tl.float64), axis=1)
        sgm += tl.sum(tl.load(part_ptr + 2 * RB + off, mask=m, other=0.0).to(tl.float64), axis=1)
    v2 = tl.load(p_ptr + 2)
    eta = tl.load(p_ptr + 3)
    h = tl.load(p_ptr + 4)
    L = tl.load(p_ptr + 5) * tl.load(p_ptr + 6)
    rate = 0.5 * v2 * (gm2 - L) - cgm + (1.0 - eta) * v2 * (L + sgm - gm2)
    tl.store(out_ptr + rows, h * rate, mask=rmask)


@triton.jit
def _langevin_norms_kernel(
    s_ptr,  # (R, D) score s(x, tau_next)
    g_ptr,  # (R, D) grad_mu
    keys_ptr,  # (B,) int64 Philox keys of the corrector stream
    p_ptr,  # (2,) float64: lam, snr
    part_ptr,  # (2, R, NB) compute dtype: block partials of |z|^2 and |s - lam g|^2
    R, D, N, NB,
    CDT: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    row = pid // NB
    blk = pid % NB
    G: tl.constexpr = BLOCK // 4
    lane = tl.arange(0, 4)
    j = blk * G + tl.arange(0, G)
    d = j[:, None] * 4 + lane[None, :]
    mask = d < D
    base = row.to(tl.int64) * D
    s = tl.load(s_ptr + base + d, mask=mask, other=0.0).to(CDT)
    g = tl.load(g_ptr + base + d, mask=mask, other=0.0).to(CDT)
    drift = s - tl.load(p_ptr + 0).to(CDT) * g
    key = tl.load(keys_ptr + row // N)
    z = tl.where(mask, philox_normal_tile(key, j, row % N, lane).to(CDT), 0.0)
    RB = R * NB
    tl.store(part_ptr + row * NB + blk, tl.sum(tl.sum(z * z, axis=1), axis=0))
    tl.store(part_ptr + RB + row * NB + blk, tl.sum(tl.sum(drift * drift, axis=1), axis=0))


@triton.jit
def _langevin_size_kernel(
    part_ptr,  # (2, R, NB) block partials from _langevin_norms_kernel
    p_ptr,  # (2,) float64: lam, snr
    e_ptr,  # (B,) float64 step sizes, out
    R, N, NB,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # e_b = 2 (snr mean_i |z_i| / max(mean_i |s_i - lam g_i|, 1e-30))^2, row norms in float64
    b = tl.program_id(0)
    RB = R * NB
    zacc = tl.zeros([BLOCK_N], dtype=tl.float64)
    dacc = tl.zeros([BLOCK_N], dtype=tl.float64)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        rows = b * N + n
        nmask = n < N
        zz = tl.zeros([BLOCK_N], dtype=tl.float64)
        dd = tl.zeros([BLOCK_N], dtype=tl.float64)
        for k0 in range(0, NB, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            m = nmask[:, None] & (k < NB)[None, :]
            off = rows[:, None] * NB + k[None, :]
            zz += tl.sum(tl.load(part_ptr + off, mask=m, other=0.0).to(tl.float64), axis=1)
            dd += tl.sum(tl.load(part_ptr + RB + off, mask=m, other=0.0).to(tl.float64), axis=1)
        zacc += tl.where(nmask, tl.sqrt(zz), 0.0)
        dacc += tl.where(nmask, tl.sqrt(dd), 0.0)
    zmean = tl.sum(zacc, axis=0) / N
    dmean = tl.maximum(tl.sum(dacc, axis=0) / N, 1e-30)
    q = tl.load(p_ptr + 1) * zmean / dmean
    tl.store(e_ptr + b, 2.0 * q * q)


@triton.jit
def _langevin_update_kernel(
    x_ptr,  # (R, D) particles
    s_ptr,  # (R, D) score
    g_ptr,  # (R, D) grad_mu
    keys_ptr,  # (B,) int64 Philox keys (same stream as the norms pass: z is regenerated, never stored)
    p_ptr,  # (2,) float64: lam, snr
    e_ptr,  # (B,) float64 step sizes from _langevin_size_kernel
    out_ptr,  # (R, D) x_new
    D, N, NB,
    CDT: tl.constexpr, BLOCK: tl.constexpr,
):
    # x_new = x + e (s - lam g) + sqrt(2 e) z, e rounded to the compute dtype first
    pid = tl.program_id(0)
    row = pid // NB
    blk = pid % NB
    G: tl.constexpr = BLOCK // 4
    lane = tl.arange(0, 4)
    j = blk * G + tl.arange(0, G)
    d = j[:, None] * 4 + lane[None, :]
    mask = d < D
    base = row.to(tl.int64) * D
    x = tl.load(x_ptr + base + d, mask=mask, other=0.0).to(CDT)
    s = tl.load(s_ptr + base + d, mask=mask, other=0.0).to(CDT)
    g = tl.load(g_ptr + base + d, mask=mask, other=0.0).to(CDT)
    drift = s - tl.load(p_ptr + 0).to(CDT) * g
    img = row // N
    e = tl.load(e_ptr + img).to(CDT)
    z = philox_normal_tile(tl.load(keys_ptr + img), j, row % N, lane).to(CDT)
    xn = x + e * drift + tl.sqrt(2.0 * e) * z
    tl.store(out_ptr + base + d, to_storage(xn, out_ptr.dtype.element_ty), mask=mask)


# Launch configuration. On a GPU: 2048 pixels per program (8 per thread with 8 warps: two 16-byte
# loads per array in flight) -- a starting point to tune on the H100 (not measured yet). Under the
# interpreter every program costs milliseconds of Python, so a row is covered by as few programs as
# possible.
_GPU_BLOCK, _GPU_WARPS = 2048, 8
_INTERP_MAX_BLOCK = 1 << 15


def _row_block(D: int, block: int | None) -> int:
    if block is not None:
        if block < 4 or block & (block - 1):
            raise ValueError(f"block must be a power of two >= 4, got {block}")
        return block
    if interpreting():
        return max(4, min(triton.next_power_of_2(D), _INTERP_MAX_BLOCK))
    return max(128, min(triton.next_power_of_2(D), _GPU_BLOCK))


def _check_rows(x, score, grad_mu, keys, num_particles: int):
    if x.dim() != 2:
        raise ValueError(f"x must be (R, D), got shape {tuple(x.shape)}")
    R, D = x.shape
    for name, t in (("score", score), ("grad_mu", grad_mu)):
        if tuple(t.shape) != (R, D):
            raise ValueError(f"{name} must have the shape of x {(R, D)}, got {tuple(t.shape)}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, x on {x.device}")
    N = int(num_particles)
    if N < 1 or R % N:
        raise ValueError(f"num_particles={num_particles!r} must divide the number of rows {R}")
    if keys.shape != (R // N,) or keys.dtype != torch.int64:
        raise ValueError(f"keys must be ({R // N},) int64, got {tuple(keys.shape)} {keys.dtype}")
    if x.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise ValueError(f"x must be a floating tensor, got {x.dtype}")
    return R, D, N


def particle_step_params(*, f: float, g2: float, v2: float, eta: float, h: float, lam: float, lap_mu: float,
                         device="cpu") -> torch.Tensor:
    """The (7,) float64 tensor ``(f, g2, v2, eta, h, lam, lap_mu)`` that :func:`particle_step_launch` reads."""
    return f64_scalars([f, g2, v2, eta, h, lam, lap_mu], device)


def langevin_step_params(*, lam: float, snr: float, device="cpu") -> torch.Tensor:
    """The (2,) float64 tensor ``(lam, snr)`` that :func:`langevin_step_launch` reads."""
    return f64_scalars([lam, snr], device)


def particle_step_launch(x, score, grad_mu, keys, params, *, num_particles: int, euler: bool, noise: bool,
                         block: int | None = None, num_warps: int | None = None):
    """Launch the fused step with the scalars in ``params`` (:func:`particle_step_params`).

    ``euler``: include the explicit guidance term (the reference's ``euler and eta v2 != 0``);
    ``noise``: add the Brownian increment (the reference's ``v2 > 0``). Two launches, no host
    synchronisation; safe to capture in a CUDA graph (update ``params`` in place between replays).
    ``block`` (pixels per program, a power of two) and ``num_warps`` override the launch configuration.
    """
    R, D, N = _check_rows(x, score, grad_mu, keys, num_particles)
    x, score, grad_mu, keys = x.contiguous(), score.contiguous(), grad_mu.contiguous(), keys.contiguous()
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.empty_like(x)
    dlogw = torch.empty(R, dtype=torch.float64, device=x.device)
    if R == 0 or D == 0:
        return out, dlogw.zero_()
    BLOCK = _row_block(D, block)
    NB = triton.cdiv(D, BLOCK)
    part = torch.empty(3, R, NB, dtype=cdt, device=x.device)
    _particle_step_kernel[(R * NB,)](
        x, score, grad_mu, keys, params, out, part, R, D, N, NB,
        EULER=bool(euler), NOISE=bool(noise), CDT=tl_dtype(x.dtype), BLOCK=BLOCK,
        num_warps=num_warps or (_GPU_WARPS if BLOCK >= 1024 else 4))
    BLOCK_R, BLOCK_K = 16, min(64, triton.next_power_of_2(NB))
    _particle_step_finish_kernel[(triton.cdiv(R, BLOCK_R),)](part, params, dlogw, R, NB, BLOCK_R=BLOCK_R,
                                                              BLOCK_K=BLOCK_K, num_warps=4)
    return out, dlogw


def langevin_step_launch(x, score, grad_mu, keys, params, *, num_particles: int, block: int | None = None,
                         num_warps: int | None = None):
    """Launch the Langevin corrector with ``params = (lam, snr)`` (:func:`langevin_step_params`).

    Three launches (row norms with the noise generated in-kernel, per-image step size, update with the
    noise regenerated), no host synchronisation. Returns ``x_new (R, D)`` and ``e (B,)`` float64.
    ``block`` / ``num_warps`` override the launch configuration (for tuning).
    """
    R, D, N = _check_rows(x, score, grad_mu, keys, num_particles)
    x, score, grad_mu, keys = x.contiguous(), score.contiguous(), grad_mu.contiguous(), keys.contiguous()
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    B = R // N
    out = torch.empty_like(x)
    e = torch.empty(B, dtype=torch.float64, device=x.device)
    if R == 0 or D == 0:
        return out, e.fill_(float("nan"))
    BLOCK = _row_block(D, block)
    NB = triton.cdiv(D, BLOCK)
    warps = num_warps or (_GPU_WARPS if BLOCK >= 1024 else 4)
    part = torch.empty(2, R, NB, dtype=cdt, device=x.device)
    _langevin_norms_kernel[(R * NB,)](score, grad_mu, keys, params, part, R, D, N, NB, CDT=tl_dtype(x.dtype),
                                      BLOCK=BLOCK, num_warps=warps)
    _langevin_size_kernel[(B,)](part, params, e, R, N, NB, BLOCK_N=min(64, triton.next_power_of_2(N)),
                                BLOCK_K=min(64, triton.next_power_of_2(NB)), num_warps=4)
    _langevin_update_kernel[(R * NB,)](x, score, grad_mu, keys, params, e, out, D, N, NB, CDT=tl_dtype(x.dtype),
                                       BLOCK=BLOCK, num_warps=warps)
    return out, e


def particle_step_triton(x, score, grad_mu, keys, *, num_particles: int, f: float, g2: float, v2: float,
                         eta: float, h: float, lam: float, lap_mu: float, euler: bool):
    """The fused step (same signature and results as :func:`particle_step_ref`).

    One pass over the rows: reads ``x``, ``score``, ``grad_mu``, draws the noise in-kernel from
    ``keys[row // N]`` and Philox counter ``(d // 4, row % N)``, writes ``x_new`` and the block partials
    of the three inner products; a second tiny launch forms ``dlogw`` in float64.
    """
    if not HAS_TRITON:
        raise RuntimeError("particle_step_triton needs triton (pip install 'afdps[triton]')")
    params = particle_step_params(f=f, g2=g2, v2=v2, eta=eta, h=h, lam=lam, lap_mu=lap_mu, device=x.device)
    return particle_step_launch(x, score, grad_mu, keys.to(x.device), params, num_particles=num_particles,
                                euler=bool(euler) and float(eta) * float(v2) != 0.0, noise=float(v2) > 0.0)


def langevin_step_triton(x, score, grad_mu, keys, *, num_particles: int, lam: float, snr: float):
    """The Langevin corrector (same signature and results as :func:`langevin_step_ref`)."""
    if not HAS_TRITON:
        raise RuntimeError("langevin_step_triton needs triton (pip install 'afdps[triton]')")
    params = langevin_step_params(lam=lam, snr=snr, device=x.device)
    return langevin_step_launch(x, score, grad_mu, keys.to(x.device), params, num_particles=num_particles)


def particle_step(x, score, grad_mu, keys, *, num_particles: int, f: float, g2: float, v2: float, eta: float,
                  h: float, lam: float, lap_mu: float, euler: bool, use_triton: bool | None = None):
    """Dispatch: ``None`` -> the Triton kernel when it can run on ``x``'s device (CUDA, or the CPU under
    ``TRITON_INTERPRET=1``), else :func:`particle_step_ref`; ``False`` -> reference; ``True`` -> kernel or
    raise."""
    fn = particle_step_triton if resolve(use_triton, x.device, "particle_step") else particle_step_ref
    return fn(x, score, grad_mu, keys, num_particles=num_particles, f=f, g2=g2, v2=v2, eta=eta, h=h, lam=lam,
              lap_mu=lap_mu, euler=euler)


def langevin_step(x, score, grad_mu, keys, *, num_particles: int, lam: float, snr: float,
                  use_triton: bool | None = None):
    """Dispatch between :func:`langevin_step_triton` and :func:`langevin_step_ref` (rule of
    :func:`particle_step`)."""
    fn = langevin_step_triton if resolve(use_triton, x.device, "langevin_step") else langevin_step_ref
    return fn(x, score, grad_mu, keys, num_particles=num_particles, lam=lam, snr=snr)
