"""Resampling of weighted particle ensembles, per image, with deterministic cores.

Each scheme is a function of the normalised weights and given uniforms (``systematic_indices(w, u)``
and so on), returning sorted ancestor indices, so it can be tested exactly. The sampler then turns
offspring counts into a *stable* arrangement (:func:`stable_ancestors`): every particle that survives
keeps its own slot and the extra copies fill the slots of the particles that died, in increasing
order. With balanced weights almost no row is copied, and a copy never reads a slot that is written.

All schemes are unbiased: the expected number of offspring of particle ``j`` is ``N w_j``.

The Triton path (:func:`resample_triton`, :func:`resample_and_gather`) does all images in two launches
without a host synchronisation and returns the same ancestors as :func:`resample_ref` for the same keys;
design notes above ``_resample_kernel``.
"""
from __future__ import annotations

import math
import numbers

import torch

from ._triton import f64_scalars, num_sms, philox_uniform4, requires_triton, tl, triton
from .backend import interpreting
from .backend import use_triton as use_triton_rule
from .philox import uniform_rows

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
    "resample_triton",
    "gather_rows_triton",
    "resample_and_gather_triton",
    "resample",
    "resample_and_gather",
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


def _check_threshold(threshold) -> None:
    """A number or a tensor; NaN refused (``ess < NaN`` is never true: it silently switched resampling off)."""
    if isinstance(threshold, torch.Tensor):
        return
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or math.isnan(float(threshold)):
        raise ValueError(f"threshold must be a real number (the normalised ESS below which an image is resampled; "
                         f"negative: never), got {threshold!r}")


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
    _check_threshold(threshold)
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

    Bytes moved: ``(S + M) * row_bytes`` of DRAM traffic for the ``M`` rows that move from ``S`` distinct
    ancestors (each read once, each slot written; ``S = M`` when the weights are balanced, 1 when degenerate,
    where the other reads hit L2); rows that keep their particle are not touched. (bench/bench_resample.py counts
    the same; its rows before 2026-12-07 counted ``2 * M``.)
    """
    return _copy_moved(x, _moved_rows(ancestors))


def _moved_rows(ancestors: torch.Tensor):
    """The ``(image, slot)`` indices of the rows that take another particle, and those particles' indices (one
    host synchronisation, for the number of moved rows)."""
    B, N = ancestors.shape
    slots = torch.arange(N, device=ancestors.device).expand(B, N)
    moved = (ancestors != slots).nonzero(as_tuple=True)
    return moved, ancestors[moved]


def _copy_moved(x: torch.Tensor, rows) -> torch.Tensor:
    (b, i), src = rows
    if b.numel():
        x[b, i] = x[b, src]
    return x


# ==== Triton ==========================================================================================
#
# Two launches for all B images, no host synchronisation:
#
# 1. `_resample_kernel`, one program per image, looping over its N particles in chunks of BLOCK:
#    max and sum of exp (log-sum-exp, float64) -> w, ESS, the decision `ess < threshold`; then, only for
#    a resampled image: the CDF by a parallel scan (tl.cumsum, chunk carries) made consistent with the
#    reference's sequential sums (a running max over the partial sums of the *positive* weights, so a
#    zero-weight particle shares its predecessor's value and can never be picked), normalised by its
#    last entry; the points of the scheme from the Philox key (exactly the uniforms of `resample_ref`);
#    each point's ancestor by a branchless binary search of the CDF (kept in a global scratch row, read
#    back after a CTA barrier); offspring counts by atomic adds; the stable arrangement by two more
#    scans (extra copies, dead slots) and a binary search; and the compacted list of the moved rows
#    (dead slot <- donor) with its length.
# 2. `_gather_moved_kernel`, persistent (a few programs per SM): the work items are (moved row, chunk
#    of D) pairs read from the list, so the cost is that of copying the moved rows; unmoved rows are
#    never touched, and no grid size depends on how many rows moved (the host never learns it).
#
# In place is safe: a stable arrangement copies only survivors (never written) into dead slots.

_SCHEME_ID = {"systematic": 0, "stratified": 1, "multinomial": 2, "residual": 3}


@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b)


@triton.jit
def _count_le(ptr, n, v, LOG_N: tl.constexpr):
    # #{k < n : ptr[k] <= v} for the sorted (non-decreasing) array ptr[0:n], elementwise over v; power-of-
    # two steps (2**LOG_N > n), one gathered load per step.
    pos = tl.zeros_like(v).to(tl.int32)
    for t in tl.static_range(LOG_N):
        cand = pos + (1 << (LOG_N - 1 - t))
        ok = cand <= n
        val = tl.load(ptr + (cand - 1), mask=ok, other=0)
        pos = tl.where(ok & (val <= v), cand, pos)
    return pos


@triton.jit
def _chunk_weights(lw_ptr, idx, mask, m, S, Nf, SCHEME: tl.constexpr, HAS_RESID):
    # Normalised weights of one chunk (0 outside), or the residual weights N w - floor(N w) when the
    # scheme is residual and some residual is positive.
    lw = tl.load(lw_ptr + idx, mask=mask, other=float("-inf")).to(tl.float64)
    lw = tl.where((lw == lw) & (tl.abs(lw) < float("inf")), lw, float("-inf"))
    w = tl.where(mask, tl.exp(lw - m) / S, 0.0)
    if SCHEME == 3:
        nw = Nf * w
        resid = tl.maximum(nw - tl.floor(nw), 0.0)
        w = tl.where(HAS_RESID, resid, w)
    return w


@triton.jit
def _resample_kernel(
    lw_ptr,  # (B, N) log-weights, any float dtype
    keys_ptr,  # (B,) int64 Philox keys of the resampling stream
    thr_ptr,  # (1,) float64 ESS threshold
    anc_ptr,  # (B, N) int64 ancestors, stable arrangement (out)
    nlw_ptr,  # (B, N) float64 new log-weights (out)
    ess_ptr,  # (B,) float64 normalised ESS (out)
    res_ptr,  # (B,) uint8 resampled (out)
    cdf_ptr,  # (B, N) float64 scratch: normalised CDF of the scheme's weights
    cnt_ptr,  # (B, N) int32 scratch: offspring counts
    end_ptr,  # (B, N) int32 scratch: running end of the extra copies
    mvd_ptr,  # (B, N) int32 moved rows: destination slots, first mvn[b] entries (out)
    mvs_ptr,  # (B, N) int32 moved rows: source slots (out)
    mvn_ptr,  # (B,) int32 number of moved rows (out)
    N,
    SCHEME: tl.constexpr, BLOCK: tl.constexpr, LOG_N: tl.constexpr,
):
    b = tl.program_id(0)
    off = b.to(tl.int64) * N
    lw_row = lw_ptr + off
    ar = tl.arange(0, BLOCK)
    NEG = float("-inf")
    zero64 = tl.sum(tl.zeros([BLOCK], tl.float64), axis=0)
    zero32 = tl.sum(tl.zeros([BLOCK], tl.int32), axis=0)
    Nf = zero64 + N  # float64 N (N may arrive as the constant 1)
    # ---- log-sum-exp, ESS, decision -------------------------------------------------------------
    mv = tl.full([BLOCK], NEG, tl.float64)
    for start in range(0, N, BLOCK):
        idx = start + ar
        lw = tl.load(lw_row + idx, mask=idx < N, other=NEG).to(tl.float64)
        lw = tl.where((lw == lw) & (tl.abs(lw) < float("inf")), lw, NEG)
        mv = tl.maximum(mv, lw)
    m = tl.max(mv, axis=0)
    sv = tl.zeros([BLOCK], tl.float64)
    for start in range(0, N, BLOCK):
        idx = start + ar
        lw = tl.load(lw_row + idx, mask=idx < N, other=NEG).to(tl.float64)
        lw = tl.where((lw == lw) & (tl.abs(lw) < float("inf")), lw, NEG)
        sv += tl.where(idx < N, tl.exp(lw - m), 0.0)
    S = tl.sum(sv, axis=0)
    qv = tl.zeros([BLOCK], tl.float64)
    for start in range(0, N, BLOCK):
        idx = start + ar
        mask = idx < N
        lw = tl.load(lw_row + idx, mask=mask, other=NEG).to(tl.float64)
        lw = tl.where((lw == lw) & (tl.abs(lw) < float("inf")), lw, NEG)
        w = tl.where(mask, tl.exp(lw - m) / S, 0.0)
        qv += w * w
        tl.store(nlw_ptr + off + idx, lw, mask=mask)
    ess = 1.0 / (Nf * tl.sum(qv, axis=0))
    res = ess < tl.load(thr_ptr)  # False for NaN (no live particle)
    tl.store(ess_ptr + b, ess)
    tl.store(res_ptr + b, res.to(tl.uint8))
    if res:
        cdf_row = cdf_ptr + off
        cnt_row = cnt_ptr + off
        end_row = end_ptr + off
        key = tl.load(keys_ptr + b)
        # residual: floor(N w) copies each, R = N - sum floor(N w) drawn from the residual weights
        nres = zero32
        has_resid = zero64 > 0.0
        if SCHEME == 3:
            bsum = tl.zeros([BLOCK], tl.float64)
            rsum = tl.zeros([BLOCK], tl.float64)
            for start in range(0, N, BLOCK):
                idx = start + ar
                w = _chunk_weights(lw_row, idx, idx < N, m, S, Nf, 0, has_resid)
                nw = Nf * w
                base = tl.floor(nw)
                bsum += base
                rsum += tl.maximum(nw - base, 0.0)
            nres = tl.maximum(Nf - tl.sum(bsum, axis=0), 0.0).to(tl.int32)
            has_resid = tl.sum(rsum, axis=0) > 0.0
        # CDF: positive-weight partial sums, running max, then / last
        carry = zero64
        run = zero64 + NEG
        for start in range(0, N, BLOCK):
            idx = start + ar
            mask = idx < N
            w = _chunk_weights(lw_row, idx, mask, m, S, Nf, SCHEME, has_resid)
            cs = tl.cumsum(w, axis=0) + carry
            last = tl.minimum(N - start, BLOCK) - 1
            carry = tl.sum(tl.where(ar == last, cs, 0.0), axis=0)
            cp = tl.associative_scan(tl.where(w > 0.0, cs, NEG), 0, _max_combine)
            cp = tl.maximum(cp, run)
            run = tl.max(tl.where(mask, cp, NEG), axis=0)
            tl.store(cdf_row + idx, cp, mask=mask)
        for start in range(0, N, BLOCK):
            idx = start + ar
            mask = idx < N
            tl.store(cdf_row + idx, tl.load(cdf_row + idx, mask=mask) / run, mask=mask)
            if SCHEME == 3:
                nw = Nf * _chunk_weights(lw_row, idx, mask, m, S, Nf, 0, has_resid)
                tl.store(cnt_row + idx, tl.floor(nw).to(tl.int32), mask=mask)
            else:
                tl.store(cnt_row + idx, tl.zeros([BLOCK], tl.int32), mask=mask)
        tl.debug_barrier()
        # points of the scheme and their ancestors a_i = #{j : C_j <= p_i} (clamped), counted
        for start in range(0, N, BLOCK):
            idx = start + ar
            mask = idx < N
            fi = idx.to(tl.float64)
            if SCHEME == 0:
                U, _u1, _u2, _u3 = philox_uniform4(key, idx * 0, 0)
                p = (fi + U.to(tl.float64)) / Nf
            else:
                u0, u1, u2, u3 = philox_uniform4(key, idx // 4, 0)
                lane = idx % 4
                u = tl.where(lane == 0, u0, tl.where(lane == 1, u1, tl.where(lane == 2, u2, u3))).to(tl.float64)
                if SCHEME == 1:
                    p = (fi + u) / Nf
                else:
                    p = u
            a = tl.minimum(_count_le(cdf_row, N, p, LOG_N), N - 1)
            valid = mask
            if SCHEME == 3:
                valid = mask & (idx < nres)
            tl.atomic_add(cnt_row + a, tl.full([BLOCK], 1, tl.int32), mask=valid)
        tl.debug_barrier()
        # stable arrangement: extra copies (counts - 1) fill the dead slots in increasing order
        ecarry = zero32
        for start in range(0, N, BLOCK):
            idx = start + ar
            mask = idx < N
            c = tl.load(cnt_row + idx, mask=mask, other=0, cache_modifier=".cg")
            ex = tl.maximum(c - 1, 0)
            tl.store(end_row + idx, tl.cumsum(ex, axis=0) + ecarry, mask=mask)
            ecarry += tl.sum(ex, axis=0)
        tl.debug_barrier()
        dcarry = zero32
        for start in range(0, N, BLOCK):
            idx = start + ar
            mask = idx < N
            c = tl.load(cnt_row + idx, mask=mask, other=1, cache_modifier=".cg")
            dead = (c == 0) & mask
            dead_i = dead.to(tl.int32)
            rank = tl.cumsum(dead_i, axis=0) + dcarry - 1
            dcarry += tl.sum(dead_i, axis=0)
            donor = tl.minimum(_count_le(end_row, N, tl.maximum(rank, 0), LOG_N), N - 1)
            tl.store(anc_ptr + off + idx, tl.where(dead, donor, idx).to(tl.int64), mask=mask)
            tl.store(nlw_ptr + off + idx, tl.zeros([BLOCK], tl.float64), mask=mask)
            tl.store(mvd_ptr + off + rank, idx, mask=dead)
            tl.store(mvs_ptr + off + rank, donor, mask=dead)
        tl.store(mvn_ptr + b, dcarry)
    else:
        for start in range(0, N, BLOCK):
            idx = start + ar
            tl.store(anc_ptr + off + idx, idx.to(tl.int64), mask=idx < N)
        tl.store(mvn_ptr + b, zero32)


@triton.jit
def _moved_list_kernel(
    anc_ptr,  # (B, N) int64 ancestors (a stable arrangement)
    mvd_ptr,  # (B, N) int32 destination slots (out)
    mvs_ptr,  # (B, N) int32 source slots (out)
    mvn_ptr,  # (B,) int32 moved rows per image (out)
    N,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    off = b.to(tl.int64) * N
    ar = tl.arange(0, BLOCK)
    carry = tl.sum(tl.zeros([BLOCK], tl.int32), axis=0)
    for start in range(0, N, BLOCK):
        idx = start + ar
        mask = idx < N
        a = tl.load(anc_ptr + off + idx, mask=mask, other=0).to(tl.int32)
        moved = (a != idx) & mask
        mi = moved.to(tl.int32)
        rank = tl.cumsum(mi, axis=0) + carry - 1
        carry += tl.sum(mi, axis=0)
        tl.store(mvd_ptr + off + rank, idx, mask=moved)
        tl.store(mvs_ptr + off + rank, a, mask=moved)
    tl.store(mvn_ptr + b, carry)


@triton.jit
def _gather_moved_kernel(
    x_ptr,  # (B * N, D) rows, updated in place
    mvd_ptr,  # (B, N) int32 destination slots
    mvs_ptr,  # (B, N) int32 source slots
    mvn_ptr,  # (B,) int32 moved rows per image
    B, N, D, NC,
    BLOCK: tl.constexpr, BLOCK_B: tl.constexpr,
):
    # work item t = (moved row m, chunk c): m -> image by the prefix of the per-image counts
    pid = tl.program_id(0)
    P = tl.num_programs(0)
    bi = tl.arange(0, BLOCK_B)
    cnt = tl.load(mvn_ptr + bi, mask=bi < B, other=0)
    ends = tl.cumsum(cnt, axis=0)
    starts = ends - cnt
    total = tl.sum(cnt, axis=0)
    cols = tl.arange(0, BLOCK)
    for t in range(pid, total * NC, P):
        mrow = t // NC
        c = t % NC
        img = tl.sum((ends <= mrow).to(tl.int32), axis=0)
        k = mrow - tl.sum(tl.where(bi == img, starts, 0), axis=0)
        lst = img.to(tl.int64) * N + k
        dst = tl.load(mvd_ptr + lst)
        src = tl.load(mvs_ptr + lst)
        d = c * BLOCK + cols
        mask = d < D
        v = tl.load(x_ptr + (img.to(tl.int64) * N + src) * D + d, mask=mask)
        tl.store(x_ptr + (img.to(tl.int64) * N + dst) * D + d, v, mask=mask)


def _resample_block(N: int) -> int:
    cap = 4096 if interpreting() else 1024
    return max(16, min(triton.next_power_of_2(N), cap))


def _launch_resample(logw: torch.Tensor, keys: torch.Tensor, scheme: str, threshold):
    if scheme not in _SCHEME_ID:
        raise ValueError(f"resampling scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
    if logw.dim() != 2:
        raise ValueError(f"logw must be (B, N), got shape {tuple(logw.shape)}")
    B, N = logw.shape
    if keys.shape != (B,) or keys.dtype != torch.int64:
        raise ValueError(f"keys must be ({B},) int64, got {tuple(keys.shape)} {keys.dtype}")
    _check_threshold(threshold)
    dev = logw.device
    logw = logw.contiguous()
    keys = keys.to(dev).contiguous()
    thr = threshold if isinstance(threshold, torch.Tensor) else f64_scalars([threshold], dev)
    anc = torch.empty(B, N, dtype=torch.int64, device=dev)
    nlw = torch.empty(B, N, dtype=torch.float64, device=dev)
    ess = torch.empty(B, dtype=torch.float64, device=dev)
    res = torch.empty(B, dtype=torch.uint8, device=dev)
    cdf = torch.empty(B, N, dtype=torch.float64, device=dev)
    ints = torch.empty(4, B, N, dtype=torch.int32, device=dev)  # counts, ends, moved dst, moved src
    mvn = torch.empty(B, dtype=torch.int32, device=dev)
    if B and N:
        BLOCK = _resample_block(N)
        _resample_kernel[(B,)](logw, keys, thr, anc, nlw, ess, res, cdf, ints[0], ints[1], ints[2], ints[3], mvn, N,
                               SCHEME=_SCHEME_ID[scheme], BLOCK=BLOCK, LOG_N=max(1, int(N).bit_length()),
                               num_warps=4)
    return anc, nlw, ess, res.view(torch.bool), (ints[2], ints[3], mvn)


def _launch_gather(x: torch.Tensor, moved, B: int, N: int):
    mvd, mvs, mvn = moved
    rows = x.view(B * N, -1)
    D = rows.shape[1]
    if B * N == 0 or D == 0:
        return x
    if interpreting():
        BLOCK, programs = max(16, min(triton.next_power_of_2(D), 1 << 16)), 2
    else:  # 4096 elements (16 KB of float32) per work item, 4 programs per SM
        BLOCK, programs = 4096, 4 * num_sms(x.device)
    NC = triton.cdiv(D, BLOCK)
    _gather_moved_kernel[(programs,)](rows, mvd, mvs, mvn, B, N, D, NC, BLOCK=BLOCK,
                                      BLOCK_B=max(16, triton.next_power_of_2(B)), num_warps=4)
    return x


def _check_shape(x: torch.Tensor, B: int, N: int):
    if x.dim() < 2 or tuple(x.shape[:2]) != (B, N):  # (an (R, D) tensor was indexed x[b, i]: elements, not rows)
        raise ValueError(f"x must be (B, N, ...) = ({B}, {N}, ...), got shape {tuple(x.shape)}")


def _check_rows_layout(x: torch.Tensor, B: int, N: int):
    _check_shape(x, B, N)
    if not x.is_contiguous():
        raise ValueError("the Triton gather updates x in place and needs it contiguous")


@requires_triton
def resample_triton(logw: torch.Tensor, keys: torch.Tensor, *, scheme: str = "systematic", threshold: float = 0.5):
    """:func:`resample_ref` in one launch for all images (same ancestors for the same keys).

    ``threshold`` may also be a (1,) float64 tensor on ``logw``'s device (graph-friendly).
    """
    anc, nlw, ess, res, _ = _launch_resample(logw, keys, scheme, threshold)
    return anc, nlw, ess, res


@requires_triton
def gather_rows_triton(x: torch.Tensor, ancestors: torch.Tensor) -> torch.Tensor:
    """:func:`gather_rows` by two launches (compact the moved rows, copy them), no host sync; in place."""
    B, N = ancestors.shape
    _check_rows_layout(x, B, N)
    ancestors = ancestors.contiguous()
    moved = torch.empty(2, B, N, dtype=torch.int32, device=x.device)
    mvn = torch.empty(B, dtype=torch.int32, device=x.device)
    if B and N:
        _moved_list_kernel[(B,)](ancestors, moved[0], moved[1], mvn, N, BLOCK=_resample_block(N), num_warps=4)
    return _launch_gather(x, (moved[0], moved[1], mvn), B, N)


def _real_rows(t: torch.Tensor) -> torch.Tensor:
    """``t``, or its real view where complex (the gather kernel moves real words)."""
    return torch.view_as_real(t) if t.is_complex() else t


@requires_triton
def resample_and_gather_triton(x: torch.Tensor, logw: torch.Tensor, keys: torch.Tensor, *,
                               scheme: str = "systematic", threshold: float = 0.5, also: tuple = ()):
    """Resample and move the rows of ``x (B, N, ...)`` in place: two launches, no host synchronisation
    (one more per tensor of ``also``, each ``(B, N, ...)`` and moved alike).

    Returns ``(x, new_logw, ess, resampled)``.
    """
    B, N = logw.shape
    for t in (x, *also):
        _check_rows_layout(t, B, N)
    _, nlw, ess, res, moved = _launch_resample(logw, keys, scheme, threshold)
    for t in (x, *also):
        _launch_gather(_real_rows(t), moved, B, N)
    return x, nlw, ess, res


def resample(logw, keys, *, scheme="systematic", threshold=0.5, use_triton=None):
    """Dispatch between :func:`resample_triton` and :func:`resample_ref` by the rule of
    :func:`afdps.kernels.backend.use_triton`."""
    if use_triton_rule(use_triton, logw.device, "resample", logw):
        return resample_triton(logw, keys, scheme=scheme, threshold=threshold)
    return resample_ref(logw, keys, scheme=scheme, threshold=threshold)


def resample_and_gather(x, logw, keys, *, scheme="systematic", threshold=0.5, use_triton=None, also: tuple = ()):
    """Resample each image whose ESS is below ``threshold`` and move the rows of ``x (B, N, ...)`` in place,
    and those of each tensor of ``also`` (``(B, N, ...)``, any dtype: what travels with a particle).

    Returns ``(x, new_logw, ess, resampled)`` as :func:`resample_ref` defines them. The Triton path
    never synchronises with the host; the reference path does, once (one ``nonzero`` finds the moved rows for
    ``x`` and every tensor of ``also``).
    """
    if use_triton_rule(use_triton, x.device, "resample_and_gather", x) and all(t.is_contiguous() for t in (x, *also)):
        return resample_and_gather_triton(x, logw, keys, scheme=scheme, threshold=threshold, also=also)
    for t in (x, *also):  # the reference checks what the kernel checks (it moved single elements of (R, D) rows)
        _check_shape(t, *logw.shape)
    anc, nlw, ess, res = resample_ref(logw, keys, scheme=scheme, threshold=threshold)
    rows = _moved_rows(anc)  # looked up once for x and every tensor of also
    for t in also:
        _copy_moved(t, rows)
    return _copy_moved(x, rows), nlw, ess, res
