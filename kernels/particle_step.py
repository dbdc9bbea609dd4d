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

The Triton kernel (:func:`particle_step_triton`) reads each input once,
draw ``xi`` in-kernel (never stored) and fuse the three inner products of the rate into the same pass;
design notes above ``_particle_step_kernel``.
"""
from __future__ import annotations

import math

import torch

from ._rows import GPU_WARPS, check_rows, check_scalars, row_block, rows_noise
from ._triton import f64_scalars, philox_normal_tile, requires_triton, row_tile, tl, tl_dtype, to_storage, triton
from .backend import use_triton as use_triton_rule

__all__ = [
    "particle_step_ref",
    "PARAM_NAMES",
    "particle_step_params",
    "particle_step_launch",
    "particle_step_triton",
    "particle_step",
]


def _row_sum(a: torch.Tensor) -> torch.Tensor:
    """``a.sum(-1, dtype=torch.float64)``. Two columns are added directly, which is the same sum bit for bit: torch's
    CPU reduction over a last dimension of 2 took 1.44 ms for 40000 float64 rows against 0.39 ms for 4 columns and
    0.05 ms for the direct add (one thread, 2026-12-06); the 2-D exactness tests make three such sums a step."""
    if a.shape[-1] == 2:  # + 0.0: a sum starts from +0, so two -0.0 give +0.0 there too
        return a[..., 0].double() + a[..., 1].double() + 0.0
    return a.sum(-1, dtype=torch.float64)


def particle_step_ref(x, score, grad_mu, keys, *, num_particles: int, f: float, g2: float, v2: float, eta: float,
                      h: float, lam: float, lap_mu: float, euler: bool, row0: int = 0):
    """Reference of the fused step.

    Parameters
    ----------
    x, score, grad_mu : (R, D) tensors (float32, float64 or bfloat16 storage; arithmetic in float32
        or float64). ``grad_mu = A^T (A x - y) / sigma_y^2`` (not yet multiplied by ``lam``).
    keys : (B,) int64 Philox keys of this step, ``R = B * num_particles``.
    f, g2, v2, eta, h, lam, lap_mu : scalars of the step (``lap_mu = ||A||_F^2 / sigma_y^2``).
    euler : include the explicit guidance term ``-eta v2 h gm``.
    row0 : global index of each image's first row (its Philox counter; nonzero where one process holds
        particles ``row0 .. row0 + num_particles - 1`` of a larger ensemble).

    Returns
    -------
    x_new : (R, D), dtype of ``x``.
    dlogw : (R,) float64, ``h * rate``.

    Bytes moved: reads ``x``, ``score``, ``grad_mu`` and writes ``x_new``: ``4 * R * D * itemsize``.
    """
    R, D, _ = check_rows(x, score, grad_mu, keys, num_particles)  # (as the kernel: float keys were rounded here)
    check_scalars(("g2", "v2"), f=f, g2=g2, v2=v2, eta=eta, h=h, lam=lam, lap_mu=lap_mu)
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf, sf, gf = x.to(cdt), score.to(cdt), grad_mu.to(cdt)
    gm = lam * gf
    c = (-f) * xf + 0.5 * (g2 + v2) * sf
    c_gm, gm2, s_gm = _row_sum(c * gm), _row_sum(gm * gm), _row_sum(sf * gm)
    L = lam * lap_mu
    rate = 0.5 * v2 * (gm2 - L) - c_gm + (1.0 - eta) * v2 * (L + s_gm - gm2)
    x_new = xf + h * c
    if euler and eta * v2 != 0.0:
        x_new = x_new - (eta * v2 * h) * gm
    if v2 > 0.0:
        x_new = x_new + math.sqrt(v2 * h) * rows_noise(keys, num_particles, D, x, row0).to(cdt)
    return x_new.to(x.dtype), h * rate


# ==== Triton ==========================================================================================
#
# Layout (kernels/_rows.py): rows are particles (R = B * N, image-major), D pixels each, contiguous. One program owns
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


@triton.jit
def _particle_step_kernel(
    x_ptr,  # (R, D) particles, float32 / bfloat16 / float64
    s_ptr,  # (R, D) score s(x, tau)
    g_ptr,  # (R, D) grad_mu = A^T (A x - y) / sigma_y^2 (lam not applied)
    keys_ptr,  # (B,) int64 Philox keys, image b = row // N
    p_ptr,  # (7,) float64 step scalars f, g2, v2, eta, h, lam, lap_mu
    out_ptr,  # (R, D) x_new, dtype of x
    part_ptr,  # (3, R, NB) compute dtype: block partials of <c, gm>, |gm|^2, <s, gm>
    R, D, N, NB, ROW0,
    EULER: tl.constexpr, NOISE: tl.constexpr, CDT: tl.constexpr, BLOCK: tl.constexpr,
):
    # gm = lam g;  c = -f x + 0.5 (g2 + v2) s;  x_new = x + h c [- eta v2 h gm] [+ sqrt(v2 h) z]
    # partials: sum(c gm), sum(gm gm), sum(s gm) over this block (zeros where d >= D).
    row, blk, lane, j, d, mask, base = row_tile(NB, D, BLOCK)
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
        z = philox_normal_tile(key, j, row % N + ROW0, lane)
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


def particle_step_params(*, f: float, g2: float, v2: float, eta: float, h: float, lam: float, lap_mu: float,
                         device="cpu") -> torch.Tensor:
    """The (7,) float64 tensor ``(f, g2, v2, eta, h, lam, lap_mu)`` that :func:`particle_step_launch` reads."""
    check_scalars(("g2", "v2"), f=f, g2=g2, v2=v2, eta=eta, h=h, lam=lam, lap_mu=lap_mu)
    return f64_scalars([f, g2, v2, eta, h, lam, lap_mu], device)


def particle_step_launch(x, score, grad_mu, keys, params, *, num_particles: int, euler: bool, noise: bool,
                         block: int | None = None, num_warps: int | None = None, row0: int = 0):
    """Launch the fused step with the scalars in ``params`` (:func:`particle_step_params`).

    ``euler``: include the explicit guidance term (the reference's ``euler and eta v2 != 0``);
    ``noise``: add the Brownian increment (the reference's ``v2 > 0``). Two launches, no host
    synchronisation; safe to capture in a CUDA graph (update ``params`` in place between replays).
    ``block`` (pixels per program, a power of two) and ``num_warps`` override the launch configuration.
    """
    R, D, N = check_rows(x, score, grad_mu, keys, num_particles)
    x, score, grad_mu, keys = x.contiguous(), score.contiguous(), grad_mu.contiguous(), keys.contiguous()
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = torch.empty_like(x)
    dlogw = torch.empty(R, dtype=torch.float64, device=x.device)
    if R == 0 or D == 0:
        return out, dlogw.zero_()
    BLOCK = row_block(D, block)
    NB = triton.cdiv(D, BLOCK)
    part = torch.empty(3, R, NB, dtype=cdt, device=x.device)
    _particle_step_kernel[(R * NB,)](
        x, score, grad_mu, keys, params, out, part, R, D, N, NB, int(row0),
        EULER=bool(euler), NOISE=bool(noise), CDT=tl_dtype(x.dtype), BLOCK=BLOCK,
        num_warps=num_warps or (GPU_WARPS if BLOCK >= 1024 else 4))
    BLOCK_R, BLOCK_K = 16, min(64, triton.next_power_of_2(NB))
    _particle_step_finish_kernel[(triton.cdiv(R, BLOCK_R),)](part, params, dlogw, R, NB, BLOCK_R=BLOCK_R,
                                                              BLOCK_K=BLOCK_K, num_warps=4)
    return out, dlogw


@requires_triton
def particle_step_triton(x, score, grad_mu, keys, *, num_particles: int, f: float, g2: float, v2: float,
                         eta: float, h: float, lam: float, lap_mu: float, euler: bool, row0: int = 0):
    """The fused step (same signature and results as :func:`particle_step_ref`).

    One pass over the rows: reads ``x``, ``score``, ``grad_mu``, draws the noise in-kernel from
    ``keys[row // N]`` and Philox counter ``(d // 4, row0 + row % N)``, writes ``x_new`` and the block partials
    of the three inner products; a second tiny launch forms ``dlogw`` in float64.
    """
    params = particle_step_params(f=f, g2=g2, v2=v2, eta=eta, h=h, lam=lam, lap_mu=lap_mu, device=x.device)
    return particle_step_launch(x, score, grad_mu, keys.to(x.device), params, num_particles=num_particles,
                                euler=bool(euler) and float(eta) * float(v2) != 0.0, noise=float(v2) > 0.0, row0=row0)


def particle_step(x, score, grad_mu, keys, *, num_particles: int, f: float, g2: float, v2: float, eta: float,
                  h: float, lam: float, lap_mu: float, euler: bool, use_triton=None, row0: int = 0):
    """Dispatch between :func:`particle_step_triton` and :func:`particle_step_ref` by the rule of
    :func:`afdps.kernels.backend.use_triton` (``None``: the kernel on CUDA, the reference elsewhere;
    ``True``: the kernel or raise; ``False``: the reference)."""
    fn = particle_step_triton if use_triton_rule(use_triton, x.device, "particle_step", x) else particle_step_ref
    return fn(x, score, grad_mu, keys, num_particles=num_particles, f=f, g2=g2, v2=v2, eta=eta, h=h, lam=lam,
              lap_mu=lap_mu, euler=euler, row0=row0)


