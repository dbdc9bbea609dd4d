"""The fused kernels as ``torch.library`` custom ops (namespace ``afdps``), for ``torch.compile`` and CUDA graphs.

Each op has a fake (meta) implementation, so ``torch.compile(fullgraph=True)`` traces through it and
Inductor keeps the kernel as one opaque call; the real implementation chooses between the Triton kernel
and the PyTorch reference by the one rule of :func:`afdps.kernels.backend.use_triton` (the kernel on
CUDA; on the CPU under ``TRITON_INTERPRET=1`` only with ``AFDPS_BACKEND=triton``).

Per-step scalars enter as float64 tensors, not Python floats: a compiled graph then does not recompile
when they change, and a captured CUDA graph reads their current values at each replay (update them in
place with ``params.copy_(...)``). Build them with :func:`particle_step_params` and friends.

=============================  =====================================================================
op                             signature
=============================  =====================================================================
``afdps::particle_step``       ``(x, score, grad_mu, keys, params[7], num_particles, euler, noise)
                               -> (x_new, dlogw)``
``afdps::langevin_step``       ``(x, score, grad_mu, keys, params[2], num_particles, live=None)
                               -> (x_new, e)``; ``live (R,)`` bool: the rows that set their image's
                               step size (``None``: all)
``afdps::resample``            ``(logw, keys, threshold[1], scheme) -> (ancestors, new_logw, ess,
                               resampled)``
``afdps::resample_and_gather`` ``(x!, logw, keys, threshold[1], scheme) -> (new_logw, ess, resampled)``;
                               moves the rows of ``x`` in place
``afdps::blur_residual``       ``(X, H, Y, width, with_norm) -> (R, norm)`` (``norm`` empty when not
                               asked)
``afdps::blur_guidance``       ``(X, H, Y, c[1]) -> X_new``
=============================  =====================================================================

``euler`` and ``noise`` of ``particle_step`` must be ``euler and eta * v2 != 0`` and ``v2 > 0`` (the
kernel is specialised on them; the reference fallback derives them from ``params``).
"""
from typing import Optional

import torch
from torch import Tensor

from .kernels import fourier as _fourier
from .kernels import langevin as _lv
from .kernels import particle_step as _ps
from .kernels import resample as _rs
from .kernels.backend import use_triton as _use_triton

__all__ = [
    "particle_step",
    "langevin_step",
    "resample",
    "resample_and_gather",
    "blur_residual",
    "blur_guidance",
    "particle_step_params",
    "langevin_step_params",
    "threshold_tensor",
]

particle_step_params = _ps.particle_step_params
langevin_step_params = _lv.langevin_step_params


def threshold_tensor(threshold: float, device="cpu") -> Tensor:
    """The (1,) float64 threshold (or blur step ``c``) tensor the ops take."""
    return torch.full((1,), float(threshold), dtype=torch.float64, device=device)


def _kernel(device) -> bool:
    return _use_triton(None, device, "afdps custom op")


# ---- particle step ---------------------------------------------------------------------------------
@torch.library.custom_op("afdps::particle_step", mutates_args=())
def particle_step(x: Tensor, score: Tensor, grad_mu: Tensor, keys: Tensor, params: Tensor, num_particles: int,
                  euler: bool, noise: bool) -> tuple[Tensor, Tensor]:
    if _kernel(x.device):
        return _ps.particle_step_launch(x, score, grad_mu, keys, params, num_particles=num_particles, euler=euler,
                                        noise=noise)
    kw = dict(zip(_ps.PARAM_NAMES, params.tolist()))
    return _ps.particle_step_ref(x, score, grad_mu, keys, num_particles=num_particles, euler=euler, **kw)


@particle_step.register_fake
def _(x, score, grad_mu, keys, params, num_particles, euler, noise):
    return torch.empty_like(x), x.new_empty((x.shape[0],), dtype=torch.float64)


@torch.library.custom_op("afdps::langevin_step", mutates_args=())
def langevin_step(x: Tensor, score: Tensor, grad_mu: Tensor, keys: Tensor, params: Tensor,
                  num_particles: int, live: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    if _kernel(x.device):
        return _lv.langevin_step_launch(x, score, grad_mu, keys, params, num_particles=num_particles, live=live)
    kw = dict(zip(_lv.LANGEVIN_PARAM_NAMES, params.tolist()))
    return _lv.langevin_step_ref(x, score, grad_mu, keys, num_particles=num_particles, live=live, **kw)


@langevin_step.register_fake
def _(x, score, grad_mu, keys, params, num_particles, live=None):
    return torch.empty_like(x), x.new_empty((x.shape[0] // num_particles,), dtype=torch.float64)


# ---- resampling ------------------------------------------------------------------------------------
@torch.library.custom_op("afdps::resample", mutates_args=())
def resample(logw: Tensor, keys: Tensor, threshold: Tensor, scheme: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if _kernel(logw.device):
        return _rs.resample_triton(logw, keys, scheme=scheme, threshold=threshold)
    return _rs.resample_ref(logw, keys, scheme=scheme, threshold=float(threshold.item()))


@resample.register_fake
def _(logw, keys, threshold, scheme):
    B, N = logw.shape
    f64 = torch.float64
    return (logw.new_empty((B, N), dtype=torch.int64), logw.new_empty((B, N), dtype=f64),
            logw.new_empty((B,), dtype=f64), logw.new_empty((B,), dtype=torch.bool))


@torch.library.custom_op("afdps::resample_and_gather", mutates_args=("x",))
def resample_and_gather(x: Tensor, logw: Tensor, keys: Tensor, threshold: Tensor,
                        scheme: str) -> tuple[Tensor, Tensor, Tensor]:
    if _kernel(x.device) and x.is_contiguous():
        _, nlw, ess, res = _rs.resample_and_gather_triton(x, logw, keys, scheme=scheme, threshold=threshold)
        return nlw, ess, res
    anc, nlw, ess, res = _rs.resample_ref(logw, keys, scheme=scheme, threshold=float(threshold.item()))
    _rs.gather_rows(x, anc)
    return nlw, ess, res


@resample_and_gather.register_fake
def _(x, logw, keys, threshold, scheme):
    B, N = logw.shape
    f64 = torch.float64
    return logw.new_empty((B, N), dtype=f64), logw.new_empty((B,), dtype=f64), logw.new_empty((B,), dtype=torch.bool)


# ---- Fourier-domain blur ---------------------------------------------------------------------------
@torch.library.custom_op("afdps::blur_residual", mutates_args=())
def blur_residual(X: Tensor, H: Tensor, Y: Tensor, width: int, with_norm: bool) -> tuple[Tensor, Tensor]:
    fn = _fourier.blur_residual_triton if _kernel(X.device) else _fourier.blur_residual_ref
    R, norm = fn(X, H, Y, width, with_norm)
    if norm is None:
        norm = X.new_empty((0,), dtype=torch.float64)
    return R.contiguous(), norm


@blur_residual.register_fake
def _(X, H, Y, width, with_norm):
    lead = tuple(X.shape[:-3]) if with_norm else (0,)
    return torch.empty_like(X, memory_format=torch.contiguous_format), X.new_empty(lead, dtype=torch.float64)


@torch.library.custom_op("afdps::blur_guidance", mutates_args=())
def blur_guidance(X: Tensor, H: Tensor, Y: Tensor, c: Tensor) -> Tensor:
    if _kernel(X.device):
        return _fourier.blur_guidance_triton(X, H, Y, c)
    return _fourier.blur_guidance_ref(X, H, Y, float(c.item())).contiguous()


@blur_guidance.register_fake
def _(X, H, Y, c):
    return torch.empty_like(X, memory_format=torch.contiguous_format)

