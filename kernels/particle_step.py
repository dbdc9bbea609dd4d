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
"""
from __future__ import annotations

import math

import torch

from .philox import randn_rows

__all__ = ["particle_step_ref", "langevin_step_ref", "particle_step", "langevin_step"]


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


def particle_step(*args, use_triton: bool = False, **kwargs):
    """Dispatch: the Triton kernel when ``use_triton``, else :func:`particle_step_ref`."""
    if use_triton:
        raise NotImplementedError("the fused Triton particle step is not built yet; use backend='torch'")
    return particle_step_ref(*args, **kwargs)


def langevin_step(*args, use_triton: bool = False, **kwargs):
    """Dispatch: the Triton kernel when ``use_triton``, else :func:`langevin_step_ref`."""
    if use_triton:
        raise NotImplementedError("the fused Triton Langevin step is not built yet; use backend='torch'")
    return langevin_step_ref(*args, **kwargs)
