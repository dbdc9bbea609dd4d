"""Triton resampling (kernels/resample.py): the same ancestors as :func:`resample_ref` for the same keys,
the invariants of a stable arrangement, and the gather of the moved rows (spec section 5).

Exact equality with the reference is expected: both evaluate the same float64 points from the same
Philox uniforms; the CDFs differ only in the rounding of the partial sums (parallel scan against a
sequential one), which could change an ancestor only for a point within ~1e-16 of a CDF step.
"""
import math

import pytest
import torch
from tolerances import DEVICE

from afdps.kernels import resample as rs
from afdps.kernels._triton import HAS_TRITON

pytestmark = [pytest.mark.interpreter, pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed"),
              pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]

INF = float("inf")


def _logw(B, N, seed=0, spread=2.0):
    gen = torch.Generator().manual_seed(seed)
    lw = spread * torch.randn(B, N, generator=gen, dtype=torch.float64)
    keys = torch.randint(-2**63, 2**63 - 1, (B,), generator=gen, dtype=torch.int64)
    return lw, keys


def _awkward(B, N, seed=0):
    """Random log-weights with dead particles, NaN, +inf, a uniform image and an all-dead image."""
    lw, keys = _logw(B, N, seed)
    if N > 3:
        lw[0, : N // 2] = -INF
        lw[1, 1] = float("nan")
        lw[1, 2] = INF  # non-finite counts as dead
    lw[2] = 0.0
    lw[3] = -INF
    return lw, keys


def _assert_same(out, ref):
    anc, nlw, ess, res = out
    ranc, rnlw, ress, rres = ref
    assert anc.dtype == torch.int64 and nlw.dtype == torch.float64 and ess.dtype == torch.float64
    assert res.dtype == torch.bool
    assert torch.equal(anc.cpu(), ranc.cpu())
    assert torch.equal(nlw.cpu(), rnlw.cpu())
    assert torch.equal(res.cpu(), rres.cpu())
    torch.testing.assert_close(ess.cpu(), ress.cpu(), rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize("scheme", rs.SCHEMES)
@pytest.mark.parametrize("N", [1, 7, 257])
@pytest.mark.parametrize("threshold", [0.5, 1.01], ids=["ess<0.5", "always"])
def test_same_ancestors_as_reference(scheme, N, threshold):
    lw, keys = _awkward(6, N, seed=N)
    lw, keys = lw.to(DEVICE), keys.to(DEVICE)
    _assert_same(rs.resample_triton(lw, keys, scheme=scheme, threshold=threshold),
                 rs.resample_ref(lw, keys, scheme=scheme, threshold=threshold))


@pytest.mark.parametrize("scheme", rs.SCHEMES)
def test_several_chunks_per_image(scheme, monkeypatch):
    """A block of 16 particles: the scans carry across 7 chunks of a 100-particle image."""
    monkeypatch.setattr(rs, "_resample_block", lambda N: 16)
    lw, keys = _awkward(4, 100, seed=3)
    lw, keys = lw.to(DEVICE), keys.to(DEVICE)
    _assert_same(rs.resample_triton(lw, keys, scheme=scheme, threshold=1.01),
                 rs.resample_ref(lw, keys, scheme=scheme, threshold=1.01))


def test_float32_log_weights_and_many_keys():
    lw, _ = _logw(1, 64, seed=5, spread=3.0)
    lw = lw.float().expand(12, 64).contiguous().to(DEVICE)
    keys = torch.arange(12, dtype=torch.int64, device=DEVICE) * 0x9E3779B97F4A7C15 % (2**62)
    for scheme in rs.SCHEMES:
        _assert_same(rs.resample_triton(lw, keys, scheme=scheme, threshold=1.01),
                     rs.resample_ref(lw, keys, scheme=scheme, threshold=1.01))


@pytest.mark.parametrize("scheme", rs.SCHEMES)
def test_invariants(scheme):
    B, N = 8, 50
    lw, keys = _logw(B, N, seed=11, spread=1.5)
    lw[:, ::7] = -INF
    lw, keys = lw.to(DEVICE), keys.to(DEVICE)
    anc, nlw, ess, res = rs.resample_triton(lw, keys, scheme=scheme, threshold=1.01)
    anc, nlw, res = anc.cpu(), nlw.cpu(), res.cpu()
    w = torch.softmax(lw.cpu(), -1)
    assert bool(res.all()) and bool((nlw == 0).all())
    counts = rs.offspring_counts(anc, N)
    assert bool((counts.sum(-1) == N).all())
    assert bool((w.gather(1, anc) > 0).all()), "a zero-weight particle was picked"
    slots = torch.arange(N).expand(B, N)
    survivors = counts > 0
    assert torch.equal(anc[survivors], slots[survivors]), "a survivor lost its slot"
    assert bool((counts.gather(1, anc)[~survivors] >= 2).all()), "a dead slot took a particle without extras"
    if scheme in ("systematic", "residual"):
        lo, hi = torch.floor(N * w), torch.ceil(N * w)
        if scheme == "systematic":
            assert bool(((counts >= lo - 1e-9) & (counts <= hi + 1e-9)).all())
        else:
            assert bool((counts >= lo).all())


@pytest.mark.parametrize("scheme", rs.SCHEMES)
def test_no_row_moves_when_all_weights_are_equal(scheme):
    B, N, D = 3, 33, 5
    lw = torch.zeros(B, N, dtype=torch.float64, device=DEVICE)
    keys = torch.tensor([1, 2, 3], dtype=torch.int64, device=DEVICE)
    x = torch.randn(B, N, D, device=DEVICE)
    x0 = x.clone()
    _, nlw, ess, res = rs.resample_and_gather_triton(x, lw, keys, scheme=scheme, threshold=0.5)
    assert not bool(res.any()) and torch.equal(x, x0) and bool((nlw == 0).all())
    torch.testing.assert_close(ess.cpu(), torch.ones(B, dtype=torch.float64), rtol=1e-12, atol=0)
    if scheme in ("systematic", "stratified"):  # forced: one point per stratum, each particle once
        anc, *_ = rs.resample_triton(lw, keys, scheme=scheme, threshold=1.5)
        assert torch.equal(anc.cpu(), torch.arange(N).expand(B, N))
        _, _, _, res = rs.resample_and_gather_triton(x, lw, keys, scheme=scheme, threshold=1.5)
        assert bool(res.all()) and torch.equal(x, x0)


@pytest.mark.parametrize("scheme", rs.SCHEMES)
def test_degenerate_weights(scheme):
    """One particle carries all the weight: every slot takes it (the others are -inf or 1e3 below)."""
    B, N, D = 2, 19, 4
    lw = torch.full((B, N), -INF, dtype=torch.float64)
    lw[1] = -1e3
    lw[0, 5] = 0.3
    lw[1, 17] = 2.0
    keys = torch.tensor([7, -7], dtype=torch.int64)
    x = torch.randn(B, N, D)
    expect = torch.stack([x[0, 5].expand(N, D), x[1, 17].expand(N, D)])
    lw, keys, x, expect = lw.to(DEVICE), keys.to(DEVICE), x.to(DEVICE), expect.to(DEVICE)
    xo, nlw, ess, res = rs.resample_and_gather_triton(x, lw, keys, scheme=scheme, threshold=0.5)
    assert xo is x and bool(res.all()) and torch.equal(x, expect)
    torch.testing.assert_close(ess.cpu(), torch.full((B,), 1.0 / N, dtype=torch.float64), rtol=1e-12, atol=0)
    _assert_same(rs.resample_triton(lw, keys, scheme=scheme, threshold=0.5),
                 rs.resample_ref(lw, keys, scheme=scheme, threshold=0.5))


def test_all_dead_image_is_reported_not_resampled():
    lw = torch.full((2, 6), -INF, dtype=torch.float64, device=DEVICE)
    lw[1] = torch.arange(6, dtype=torch.float64)
    keys = torch.tensor([1, 2], dtype=torch.int64, device=DEVICE)
    anc, nlw, ess, res = rs.resample_triton(lw, keys, threshold=1.01)
    assert math.isnan(float(ess[0])) and not bool(res[0]) and bool(res[1])
    assert torch.equal(anc[0].cpu(), torch.arange(6)) and bool(torch.isneginf(nlw[0]).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32])
def test_gather_rows_matches_reference(dtype):
    B, N = 4, 23
    lw, keys = _awkward(B, N, seed=2)
    anc, *_ = rs.resample_ref(lw, keys, scheme="multinomial", threshold=1.01)
    x = (100 * torch.randn(B, N, 3, 7)).to(dtype)
    xr = rs.gather_rows(x.clone(), anc)
    xt = rs.gather_rows_triton(x.clone().to(DEVICE), anc.to(DEVICE))
    assert torch.equal(xt.cpu(), xr)


@pytest.mark.parametrize("scheme", rs.SCHEMES)
def test_resample_and_gather_matches_reference(scheme):
    B, N, D = 5, 31, 40
    lw, keys = _awkward(B, N, seed=9)
    x = torch.randn(B, N, D)
    want = rs.resample_and_gather(x.clone(), lw, keys, scheme=scheme, threshold=0.7, use_triton=False)
    got = rs.resample_and_gather(x.clone().to(DEVICE), lw.to(DEVICE), keys.to(DEVICE), scheme=scheme,
                                 threshold=0.7, use_triton=True)
    assert torch.equal(got[0].cpu(), want[0])
    slots = torch.zeros(1, dtype=torch.int64)
    _assert_same((slots,) + tuple(got[1:]), (slots,) + tuple(want[1:]))


def test_resample_and_gather_moves_what_travels_with_a_particle():
    """``also``: each tensor (complex spectra included) moves by the same ancestors as x, on both paths."""
    B, N = 5, 31
    lw, keys = _awkward(B, N, seed=11)
    x = torch.randn(B, N, 2, 6)
    X = torch.fft.rfft2(x)  # complex64 (B, N, 2, 4)
    tag = torch.arange(B * N, dtype=torch.float64).view(B, N, 1).repeat(1, 1, 3)
    anc, *_ = rs.resample_ref(lw, keys, threshold=0.7)
    for use_triton in (False, True):
        xs, Xs, tags = x.clone().to(DEVICE), X.clone().to(DEVICE), tag.clone().to(DEVICE)
        out = rs.resample_and_gather(xs, lw.to(DEVICE), keys.to(DEVICE), threshold=0.7, use_triton=use_triton,
                                     also=(Xs, tags))
        assert out[0] is xs
        want = rs.gather_rows(x.clone(), anc)
        assert torch.equal(xs.cpu(), want)
        assert torch.equal(Xs.cpu(), rs.gather_rows(X.clone(), anc))
        assert torch.equal(tags.cpu()[..., 0], (torch.arange(B)[:, None] * N + anc).double())
    assert bool((anc != torch.arange(N)).any()), "no row moved: the test would not see a missed gather"


def test_dispatch_and_errors():
    lw, keys = _logw(2, 5)
    ref = rs.resample(lw, keys, use_triton=False)
    _assert_same(rs.resample(lw.to(DEVICE), keys.to(DEVICE), use_triton=True), ref)
    with pytest.raises(ValueError, match="scheme"):
        rs.resample_triton(lw.to(DEVICE), keys.to(DEVICE), scheme="bogus")
    with pytest.raises(ValueError, match="keys"):
        rs.resample_triton(lw.to(DEVICE), keys[:1].to(DEVICE))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resample_and_gather_never_synchronises():
    B, N, D = 4, 64, 1000
    lw, keys = _logw(B, N, seed=4, spread=3.0)
    lw, keys = lw.cuda(), keys.cuda()
    x = torch.randn(B, N, D, device="cuda")
    thr = torch.full((1,), 0.9, dtype=torch.float64, device="cuda")
    rs.resample_and_gather_triton(x, lw, keys, threshold=thr)  # compile outside the checked region
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        rs.resample_and_gather_triton(x, lw, keys, threshold=thr)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
