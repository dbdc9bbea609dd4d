"""Unadjusted Langevin corrector of AFDPS-ODE (spec section 2): ``x + e (s - lam grad_mu) + sqrt(2 e) z``.

After each probability-flow predictor step the ensemble takes ``M`` Langevin steps towards the target
``Q_tau`` at the new time; the weights are unchanged. The step size is Song et al.'s predictor-corrector
rule per image, ``e_b = 2 (snr * mean_i |z_i| / mean_i |s_i - lam grad_mu_i|)^2``. Rows and noise follow
:mod:`afdps.kernels._rows`; the Triton path (:func:`langevin_step_triton`) regenerates ``z`` in-kernel
instead of storing it.
"""
from __future__ import annotations

import torch

from ._rows import GPU_WARPS, check_rows, check_scalars, row_block, rows_noise
from .backend import use_triton as use_triton_rule
from ._triton import f64_scalars, philox_normal_tile, requires_triton, row_tile, tl, tl_dtype, to_storage, triton

__all__ = ["langevin_step_ref", "LANGEVIN_PARAM_NAMES", "langevin_step_params", "langevin_step_launch",
           "langevin_step_triton", "langevin_step"]

# The params tensor of the corrector holds these scalars, in this order (float64).
LANGEVIN_PARAM_NAMES = ("lam", "snr")


def _check_live(live, R: int, device):
    """``live``: None or an ``(R,)`` bool tensor of the rows that count in the step-size means."""
    if live is None:
        return None
    if not isinstance(live, torch.Tensor) or live.dtype != torch.bool or tuple(live.shape) != (R,):
        got = f"{tuple(live.shape)} {live.dtype}" if isinstance(live, torch.Tensor) else type(live).__name__
        raise ValueError(f"live must be a bool tensor of shape ({R},) (one flag per row), got {got}")
    return live.to(device)


def langevin_step_ref(x, score, grad_mu, keys, *, num_particles: int, lam: float, snr: float, live=None):
    """Unadjusted Langevin corrector towards ``Q_t``: ``x + e (s - lam grad_mu) + sqrt(2 e) z``.

    The step size is Song et al.'s predictor-corrector rule, per image ``b``:
    ``e_b = 2 (snr * mean_i |z_i| / mean_i |s_i - lam grad_mu_i|)^2`` (``|.|`` the L2 norm of a row,
    means over the live particles of the image: rows whose drift is not finite, and rows that ``live (R,)``
    bool marks False (particles whose weight is zero), are left out, so one dead particle cannot stop or
    shrink the others; NaN if none is live). Every row is moved; the weights are unchanged.

    Returns ``x_new (R, D)`` and the step sizes ``(B,)`` float64.

    Bytes moved: reads ``x``, ``score``, ``grad_mu`` and writes ``x_new``: ``4 * R * D * itemsize``
    (the reference also writes and reads the noise ``z``: ``+2 * R * D * itemsize``).
    """
    R, D, _ = check_rows(x, score, grad_mu, keys, num_particles)  # (as the kernel: float keys were rounded here)
    check_scalars(("snr",), lam=lam, snr=snr)
    B = R // num_particles
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(cdt)
    drift = score.to(cdt) - lam * grad_mu.to(cdt)
    z = rows_noise(keys, num_particles, D, x).to(cdt)
    zrow = z.square().sum(-1, dtype=torch.float64).sqrt().view(B, num_particles)
    drow = drift.square().sum(-1, dtype=torch.float64).sqrt().view(B, num_particles)
    live = torch.isfinite(drow) if live is None else torch.isfinite(drow) & _check_live(live, R, x.device).view(B, -1)
    count = live.sum(1)
    znorm = torch.where(live, zrow, 0.0).sum(1) / count
    dnorm = torch.where(live, drow, 0.0).sum(1) / count
    e = 2.0 * (snr * znorm / dnorm.clamp_min(1e-30)).square()
    e_rows = e.repeat_interleave(num_particles).to(cdt).unsqueeze(-1)
    x_new = xf + e_rows * drift + torch.sqrt(2.0 * e_rows) * z
    return x_new.to(x.dtype), e


# ==== Triton ==========================================================================================

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
    row, blk, lane, j, d, mask, base = row_tile(NB, D, BLOCK)
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
    live_ptr,  # (R,) bool rows that count (read only with HAS_LIVE)
    e_ptr,  # (B,) float64 step sizes, out
    R, N, NB,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, HAS_LIVE: tl.constexpr,
):
    # e_b = 2 (snr mean_i |z_i| / max(mean_i |s_i - lam g_i|, 1e-30))^2, row norms in float64, means over
    # the live rows (finite drift norm, NaN failing both comparisons and inf the second; and live[row])
    b = tl.program_id(0)
    RB = R * NB
    zacc = tl.zeros([BLOCK_N], dtype=tl.float64)
    dacc = tl.zeros([BLOCK_N], dtype=tl.float64)
    cnt = tl.zeros([BLOCK_N], dtype=tl.float64)
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
        live = nmask & (dd == dd) & (dd < float("inf"))
        if HAS_LIVE:
            live = live & (tl.load(live_ptr + rows, mask=nmask, other=0) != 0)
        zacc += tl.where(live, tl.sqrt(zz), 0.0)
        dacc += tl.where(live, tl.sqrt(dd), 0.0)
        cnt += live.to(tl.float64)
    count = tl.sum(cnt, axis=0)
    zmean = tl.sum(zacc, axis=0) / count
    dmean = tl.maximum(tl.sum(dacc, axis=0) / count, 1e-30)
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
    row, blk, lane, j, d, mask, base = row_tile(NB, D, BLOCK)
    x = tl.load(x_ptr + base + d, mask=mask, other=0.0).to(CDT)
    s = tl.load(s_ptr + base + d, mask=mask, other=0.0).to(CDT)
    g = tl.load(g_ptr + base + d, mask=mask, other=0.0).to(CDT)
    drift = s - tl.load(p_ptr + 0).to(CDT) * g
    img = row // N
    e = tl.load(e_ptr + img).to(CDT)
    z = philox_normal_tile(tl.load(keys_ptr + img), j, row % N, lane).to(CDT)
    xn = x + e * drift + tl.sqrt(2.0 * e) * z
    tl.store(out_ptr + base + d, to_storage(xn, out_ptr.dtype.element_ty), mask=mask)


SIZE_CHUNK = 64
"""Particles per chunk of the step-size kernel's loop over an image's rows (a power of 2; tests set it lower to reach
two chunks with few rows under the interpreter)."""


def langevin_step_params(*, lam: float, snr: float, device="cpu") -> torch.Tensor:
    """The (2,) float64 tensor ``(lam, snr)`` that :func:`langevin_step_launch` reads."""
    check_scalars(("snr",), lam=lam, snr=snr)
    return f64_scalars([lam, snr], device)


def langevin_step_launch(x, score, grad_mu, keys, params, *, num_particles: int, block: int | None = None,
                         num_warps: int | None = None, live=None):
    """Launch the Langevin corrector with ``params = (lam, snr)`` (:func:`langevin_step_params`); ``live``
    as in :func:`langevin_step_ref`.

    Three launches (row norms with the noise generated in-kernel, per-image step size, update with the
    noise regenerated), no host synchronisation. Returns ``x_new (R, D)`` and ``e (B,)`` float64.
    ``block`` / ``num_warps`` override the launch configuration (for tuning).
    """
    R, D, N = check_rows(x, score, grad_mu, keys, num_particles)
    x, score, grad_mu, keys = x.contiguous(), score.contiguous(), grad_mu.contiguous(), keys.contiguous()
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    B = R // N
    live = _check_live(live, R, x.device)
    out = torch.empty_like(x)
    e = torch.empty(B, dtype=torch.float64, device=x.device)
    if R == 0 or D == 0:
        return out, e.fill_(float("nan"))
    BLOCK = row_block(D, block)
    NB = triton.cdiv(D, BLOCK)
    warps = num_warps or (GPU_WARPS if BLOCK >= 1024 else 4)
    part = torch.empty(2, R, NB, dtype=cdt, device=x.device)
    _langevin_norms_kernel[(R * NB,)](score, grad_mu, keys, params, part, R, D, N, NB, CDT=tl_dtype(x.dtype),
                                      BLOCK=BLOCK, num_warps=warps)
    _langevin_size_kernel[(B,)](part, params, e if live is None else live.contiguous().view(torch.uint8), e, R, N, NB,
                                BLOCK_N=min(SIZE_CHUNK, triton.next_power_of_2(N)),
                                BLOCK_K=min(64, triton.next_power_of_2(NB)),
                                HAS_LIVE=live is not None, num_warps=4)
    _langevin_update_kernel[(R * NB,)](x, score, grad_mu, keys, params, e, out, D, N, NB, CDT=tl_dtype(x.dtype),
                                       BLOCK=BLOCK, num_warps=warps)
    return out, e


@requires_triton
def langevin_step_triton(x, score, grad_mu, keys, *, num_particles: int, lam: float, snr: float, live=None):
    """The Langevin corrector (same signature and results as :func:`langevin_step_ref`)."""
    params = langevin_step_params(lam=lam, snr=snr, device=x.device)
    return langevin_step_launch(x, score, grad_mu, keys.to(x.device), params, num_particles=num_particles, live=live)


def langevin_step(x, score, grad_mu, keys, *, num_particles: int, lam: float, snr: float, use_triton=None, live=None):
    """Dispatch between :func:`langevin_step_triton` and :func:`langevin_step_ref` by the rule of
    :func:`afdps.kernels.backend.use_triton`."""
    fn = langevin_step_triton if use_triton_rule(use_triton, x.device, "langevin_step", x) else langevin_step_ref
    return fn(x, score, grad_mu, keys, num_particles=num_particles, lam=lam, snr=snr, live=live)
