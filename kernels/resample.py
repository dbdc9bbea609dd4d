"""Resampling of weighted particle ensembles, per image, with deterministic cores.

Each scheme is a function of the normalised weights and given uniforms (``systematic_indices(w, u)``
and so on), returning sorted ancestor indices, so it can be tested exactly. The sampler then turns
offspring counts into a *stable* arrangement (:func:`stable_ancestors`): every particle that survives
keeps its own slot and the extra copies fill the slots of the particles that died, in increasing
order. With balanced weights almost no row is copied, and a copy never reads a slot that is written.

All schemes are unbiased: the expected number of offspring of particle ``j`` is ``N w_j``.
"""
from __future__ import annotations

import torch

from .philox import PURPOSE, uniform_rows

__all__ = [
    "SCHEMES",
    "normalize_log_weights",
    "systematic_indices",
    "stratified_indices",
    "multinomial_indices",
    "residual_indices",
    "offspring_counts",
    "ancestors_from_counts",
    "stable_ancestors",
    "resample_ref",
    "gather_rows",
]

SCHEMES = ("systematic", "stratified", "multinomial", "residual")


def normalize_log_weights(logw: torch.Tensor):
    """Softmax in float64 with non-finite log-weights treated as ``-inf``.

    Returns ``(w, ess, logw_clean)``: normalised weights ``(B, N)`` (NaN rows where every particle is
    dead), normalised ESS ``1 / (N sum w^2)`` ``(B,)``, and the log-weights with non-finite entries
    replaced by ``-inf``.
    """
    lw = logw.to(torch.float64)
    lw = torch.where(torch.isfinite(lw), lw, torch.full_like(lw, -torch.inf))
    w = torch.softmax(lw, dim=-1)
    ess = 1.0 / (lw.shape[-1] * w.square().sum(-1))
    return w, ess, lw


def _cdf(weights: torch.Tensor) -> torch.Tensor:
    # Dividing by the last partial sum makes it exactly 1.0, so no point u < 1 falls past the end
    # and a zero-weight particle (whose partial sum equals its predecessor's) is never chosen.
    c = torch.cumsum(weights.to(torch.float64), dim=-1)
    return c / c[..., -1:]


def _search(weights: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    N = weights.shape[-1]
    idx = torch.searchsorted(_cdf(weights).contiguous(), points.contiguous(), right=True)
    return idx.clamp_(max=N - 1)


def systematic_indices(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Systematic: points ``(i + u) / N`` with one ``u`` per row; ``a_i = #{j : C_j <= point_i}``.

    ``weights (..., N)``, ``u (...)`` in ``[0, 1)``; returns sorted ancestors ``(..., N)`` int64.
    """
    N = weights.shape[-1]
    i = torch.arange(N, dtype=torch.float64, device=weights.device)
    points = (i + u.to(torch.float64).unsqueeze(-1)) / N
    return _search(weights, points)


def stratified_indices(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Stratified: points ``(i + u_i) / N`` with one uniform per point; ``u (..., N)``."""
    N = weights.shape[-1]
    i = torch.arange(N, dtype=torch.float64, device=weights.device)
    return _search(weights, (i + u.to(torch.float64)) / N)


def multinomial_indices(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Multinomial: ``N`` independent inverse-CDF draws at ``u (..., N)``; returned sorted."""
    return torch.sort(_search(weights, u.to(torch.float64)), dim=-1).values


def residual_indices(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Residual: ``floor(N w_j)`` copies of each particle, the remaining ``R`` drawn multinomially
    from the residual weights ``N w - floor(N w)`` at the first ``R`` uniforms of ``u (..., N)``."""
    N = weights.shape[-1]
    w = weights.to(torch.float64)
    base = torch.floor(N * w)
    resid = (N * w - base).clamp_min(0.0)
    R = (N - base.sum(-1)).clamp_min(0).round().long()  # (...,)
    has_resid = resid.sum(-1, keepdim=True) > 0
    resid = torch.where(has_resid, resid, w)
    draws = _search(resid, u.to(torch.float64))  # (..., N)
    use = torch.arange(N, device=w.device) < R.unsqueeze(-1)
    counts = base.long()
    counts = counts.scatter_add(-1, draws, use.long())
    return ancestors_from_counts(counts)


def offspring_counts(ancestors: torch.Tensor, N: int | None = None) -> torch.Tensor:
    """How many times each particle appears in ``ancestors (..., N)``."""
    N = ancestors.shape[-1] if N is None else N
    out = torch.zeros(*ancestors.shape[:-1], N, dtype=torch.long, device=ancestors.device)
    return out.scatter_add(-1, ancestors, torch.ones_like(ancestors))


def ancestors_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Sorted ancestors ``(..., N)`` with particle ``j`` repeated ``counts[..., j]`` times."""
    N = counts.shape[-1]
    ends = torch.cumsum(counts, dim=-1)
    slots = torch.arange(N, device=counts.device).expand_as(counts).contiguous()
    return torch.searchsorted(ends.contiguous(), slots, right=True).clamp_(max=N - 1)


def stable_ancestors(counts: torch.Tensor) -> torch.Tensor:
    """Ancestor of every slot such that survivors (``counts >= 1``) keep their slot and the
    ``counts_j - 1`` extra copies of each survivor fill the dead slots in increasing order.

    Two exclusive scans and one search: the ``k``-th dead slot takes the particle ``j`` whose extra
    copies cover rank ``k`` of the running sum of ``max(counts - 1, 0)``.
    """
    N = counts.shape[-1]
    slots = torch.arange(N, device=counts.device).expand_as(counts)
    extras_end = torch.cumsum((counts - 1).clamp_min(0), dim=-1)
    dead = counts == 0
    dead_rank = torch.cumsum(dead.long(), dim=-1) - 1
    donor = torch.searchsorted(extras_end.contiguous(), dead_rank.clamp_min(0).contiguous(), right=True)
    return torch.where(dead, donor.clamp_(max=N - 1), slots)


def _scheme_indices(scheme: str, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    if scheme == "systematic":
        return systematic_indices(w, u[..., 0])
    if scheme == "stratified":
        return stratified_indices(w, u)
    if scheme == "multinomial":
        return multinomial_indices(w, u)
    if scheme == "residual":
        return residual_indices(w, u)
    raise ValueError(f"resampling scheme {scheme!r} is not one of {', '.join(SCHEMES)}")


def resample_ref(logw: torch.Tensor, keys: torch.Tensor, *, scheme: str = "systematic", threshold: float = 0.5):
    """Normalise, measure the ESS and resample the images whose normalised ESS is below ``threshold``.

    Parameters
    ----------
    logw : (B, N) log-weights (any float dtype; non-finite entries count as dead particles).
    keys : (B,) int64 Philox keys of this step's resampling stream (the uniforms: word ``d % 4`` of
        counter ``(d // 4, 0)``; systematic uses ``d = 0`` only).

    Returns
    -------
    ancestors : (B, N) int64, stable arrangement; ``ancestors[b, i] == i`` for images not resampled.
    new_logw : (B, N) float64, zero for resampled images, cleaned log-weights otherwise.
    ess : (B,) float64 normalised ESS before resampling (NaN for an image with no live particle).
    resampled : (B,) bool.
    """
    B, N = logw.shape
    w, ess, lw = normalize_log_weights(logw)
    slots = torch.arange(N, device=logw.device).expand(B, N)
    resampled = ess < threshold
    u = uniform_rows(keys.to(logw.device), 1, N)[:, 0, :]
    anc = stable_ancestors(offspring_counts(_scheme_indices(scheme, torch.nan_to_num(w, nan=1.0 / N), u), N))
    anc = torch.where(resampled.unsqueeze(-1), anc, slots)
    new_logw = torch.where(resampled.unsqueeze(-1), torch.zeros_like(lw), lw)
    return anc, new_logw, ess, resampled


def gather_rows(x: torch.Tensor, ancestors: torch.Tensor) -> torch.Tensor:
    """``x[b, i] <- x[b, ancestors[b, i]]`` for the rows that move, in place; ``x (B, N, ...)``.

    Safe in place because a stable arrangement never reads a slot it writes.
    """
    B, N = ancestors.shape
    slots = torch.arange(N, device=ancestors.device).expand(B, N)
    moved = (ancestors != slots).nonzero(as_tuple=True)
    if moved[0].numel():
        x[moved] = x[moved[0], ancestors[moved]]
    return x


def resample(logw, keys, *, scheme="systematic", threshold=0.5, use_triton: bool = False):
    """Dispatch: the Triton kernels when ``use_triton``, else :func:`resample_ref`."""
    if use_triton:
        raise NotImplementedError("the Triton resampling kernels are not built yet; use backend='torch'")
    return resample_ref(logw, keys, scheme=scheme, threshold=threshold)


PURPOSE_RESAMPLE = PURPOSE["resample"]
