"""Baselines that AFDPS is compared with.

:func:`dps`: Diffusion Posterior Sampling (Chung, Kim, McCann, Klasky and Ye, ICLR 2023), the
gradient-through-the-denoiser approximation of the likelihood score.
"""
from __future__ import annotations

import math
import time

import torch

from ..kernels.philox import PURPOSE, randn_rows, stream_keys
from .io import progress_bar
from .priors import score_with_graph
from .sampler import EnsembleDied, Result
from .schedules import ancestral_step
from .validation import MAX_STEPS, STEPS_WHY, check_int, check_problem, check_real, per_image_seeds

__all__ = ["dps"]


def _epsilon_with_grad(prior, x: torch.Tensor, t: float, sigma: float) -> torch.Tensor:
    """``eps_hat(x, t)`` with the autograd graph through the network (or through the prior's score)."""
    if hasattr(prior, "epsilon"):
        return prior.epsilon(x, t, grad=True)
    return -sigma * score_with_graph(prior, x, t, "DPS")


def dps(prior, op, y, sigma_y, *, num_steps: int = 1000, zeta: float = 1.0, num_samples: int = 1, seed=None,
        batch_size: int | None = None, clip_denoised: bool = True, time_power: float = 1.0, progress=None) -> Result:
    """Diffusion Posterior Sampling (Chung et al., 2023, Algorithm 1), batched over images.

    Each of ``num_steps`` ancestral (DDPM) steps from ``tau = T`` to ``tau_min`` on
    ``prior.schedule.timesteps(num_steps, time_power)`` estimates ``x0 = (x - sigma_t eps(x, t)) /
    alpha_t`` (clipped to [-1, 1] if ``clip_denoised``, as the reference implementation does), draws the
    unconditional step ``x' ~ q(x_s | x_t, x0)`` (the last step returns ``x0``), and moves it along the
    gradient of the residual norm through the network:
    ``x_s = x' - zeta * grad_{x_t} ||y - A x0(x_t)||``. The norm is not squared: that is the step size
    ``zeta_i = zeta / ||y - A x0||`` of the paper applied to the squared norm, as in the authors' code.
    ``sigma_y`` does not enter the update (DPS tunes ``zeta`` instead); it is checked and recorded.

    Parameters
    ----------
    prior : a diffusion prior; :class:`afdps.priors.EpsilonModel` (gradients through the network) or
        any prior whose ``score`` is differentiable with autograd. VP schedules only.
    op : a linear operator of :mod:`afdps.ops` with ``input_shape == prior.event_shape``.
    y : (B, *op.output_shape) measurements (a torch tensor; the public ``afdps.baselines.dps`` also takes
        NumPy and CuPy arrays and returns the result as the same kind).
    num_samples : independent DPS runs per image (the result's "particles", all of equal weight).
    seed : int, one int per image, or ``None`` (fresh); noise is Philox keyed per image, so an image's
        result does not depend on the rest of the batch.
    batch_size : at most this many rows (image x sample) per network call with its backward pass.

    Returns
    -------
    :class:`afdps.Result` with ``particles`` (B, num_samples, *event), equal log-weights, ``nfe =
    num_steps`` (each with a backward pass through the network) and ``timings["total"]``.
    """
    K = check_int("num_steps", num_steps, 1, MAX_STEPS, STEPS_WHY)
    S = check_int("num_samples", num_samples, 1)
    zeta = check_real("zeta", zeta, low=0.0)
    check_real("time_power", time_power, low=1.0)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    sched = prior.schedule
    if not hasattr(sched, "alpha") or float(sched.alpha(sched.T)) >= 1.0:
        raise ValueError(f"DPS here needs a variance-preserving schedule, got {sched!r}")
    sigma_y, event = check_problem(prior, op, y, sigma_y, schedule_needs=("timesteps", "alpha", "sigma", "rho", "T"))
    device = y.device
    y = y.float()
    B = y.shape[0]
    D = math.prod(event)
    seeds = per_image_seeds(seed, B)
    taus = sched.timesteps(K, float(time_power)).tolist()

    t0 = time.perf_counter()
    x = randn_rows(stream_keys(seeds, 0, PURPOSE["dps"], device), S, D).float() * float(sched.rho)
    x = x.reshape(B * S, *event)
    yr = y.repeat_interleave(S, dim=0)
    rows = B * S
    chunk = batch_size or rows
    bar = progress_bar(K, "dps", progress)
    # the non-finite rule of the sampler: a sample whose network output or state is not finite dies
    # (log-weight -inf); an image whose samples all die is an error naming the step and the cause
    dead = torch.zeros(rows, dtype=torch.bool, device=device)
    eps_bad = torch.zeros(rows, dtype=torch.bool, device=device)
    try:
        for j in range(K):
            t, s = taus[j], taus[j + 1]
            a_t, s_t = float(sched.alpha(t)), float(sched.sigma(t))
            last = j == K - 1
            noise = None
            if not last:
                noise = randn_rows(stream_keys(seeds, j + 1, PURPOSE["dps"], device), S, D).float()
                noise = noise.reshape(B * S, *event)
            new = torch.empty_like(x)
            for i in range(0, rows, chunk):
                xi = x[i:i + chunk].detach().requires_grad_(True)
                eps = _epsilon_with_grad(prior, xi, t, s_t)
                eps_bad[i:i + chunk] |= ~torch.isfinite(eps.detach()).flatten(1).all(1)
                x0 = (xi - s_t * eps) / a_t
                if clip_denoised:
                    x0 = x0.clamp(-1.0, 1.0)
                norm = (yr[i:i + chunk] - op.A(x0)).flatten(1).norm(dim=1)
                (g,) = torch.autograd.grad(norm.sum(), xi)
                with torch.no_grad():
                    step = x0 if last else ancestral_step(sched, xi, x0, t, s, noise[i:i + chunk])
                    new[i:i + chunk] = step - zeta * g
            x = new
            dead |= ~torch.isfinite(x).flatten(1).all(1)
            all_dead = dead.view(B, S).all(1)
            if bool(all_dead.any()):
                b = int(all_dead.nonzero()[0])
                cause = ("the network returned NaN or inf for them" if bool(eps_bad.view(B, S)[b].all()) else
                         f"their states diverged (try a smaller zeta, got {zeta:g})")
                raise EnsembleDied(f"every DPS sample of image {{image}} has died at step {j} (tau={t:.4g}): ", b,
                                   detail=cause)
            bar.update(1)
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    particles = x.detach().reshape(B, S, *event)
    logw = torch.where(dead.view(B, S), -torch.inf, torch.zeros(B, S, dtype=torch.float64, device=device))
    return Result(particles=particles, log_weights=logw,
                  ess=torch.ones(K, B, dtype=torch.float64), resampled=torch.zeros(K, B, dtype=torch.bool),
                  seeds=seeds, nfe=K, timings={"total": wall})
