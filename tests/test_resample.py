"""Resampling references: exact ancestors for given uniforms, invariants, unbiasedness (chi-square)."""
import math

import pytest
import torch
from scipy import stats

from afdps.kernels import resample as rs
from afdps.kernels.philox import stream_keys


def test_systematic_exact_small_case():
    w = torch.tensor([0.1, 0.0, 0.4, 0.2, 0.3], dtype=torch.float64)
    # C = [.1, .1, .5, .7, 1.0]; points (i + 0.25) / 5 = .05 .25 .45 .65 .85
    assert rs.systematic_indices(w, torch.tensor(0.25)).tolist() == [0, 2, 2, 3, 4]
    # points .19 .39 .59 .79 .99
    assert rs.systematic_indices(w, torch.tensor(0.95)).tolist() == [2, 2, 3, 4, 4]
    # u = 0: point 0 falls before C_0 = 0.1 -> particle 0; point 0.2 -> 2 (C_1 = 0.1 <= 0.2)
    assert rs.systematic_indices(w, torch.tensor(0.0)).tolist() == [0, 2, 2, 3, 4]


def test_stratified_and_multinomial_exact():
    w = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    u = torch.tensor([0.9, 0.1, 0.7], dtype=torch.float64)
    # stratified points (i + u_i)/3 = .3, .3667, .9 -> 0, 0, 2
    assert rs.stratified_indices(w, u).tolist() == [0, 0, 2]
    # multinomial points u = .9, .1, .7 -> 2, 0, 1 (C = .5, .75, 1), sorted
    assert rs.multinomial_indices(w, u).tolist() == [0, 1, 2]


def test_residual_exact():
    w = torch.tensor([0.45, 0.35, 0.2], dtype=torch.float64)
    # N w = 1.35, 1.05, 0.6 -> floors 1, 1, 0; R = 1 drawn from residuals (.35, .05, .6) at u_0 = .7
    # normalised residual C = .35, .4, 1.0 -> particle 2
    u = torch.tensor([0.7, 0.0, 0.0], dtype=torch.float64)
    assert rs.residual_indices(w, u).tolist() == [0, 1, 2]
    u = torch.tensor([0.1, 0.9, 0.9], dtype=torch.float64)
    assert rs.residual_indices(w, u).tolist() == [0, 0, 1]


def test_never_picks_zero_weight_even_when_total_is_short():
    w = torch.tensor([0.3, 0.3, 0.3999999, 0.0], dtype=torch.float64)  # sums to 0.9999999
    for u in (0.0, 0.5, 0.999999):
        anc = rs.systematic_indices(w, torch.tensor(u))
        assert 3 not in anc.tolist()
    u = torch.full((4,), 0.9999999, dtype=torch.float64)
    for fn in (rs.stratified_indices, rs.multinomial_indices, rs.residual_indices):
        assert 3 not in fn(w, u).tolist()


@pytest.mark.parametrize("N", [1, 7, 257])
def test_systematic_offspring_within_floor_ceil(N):
    g = torch.Generator().manual_seed(N)
    w = torch.softmax(3 * torch.randn(50, N, generator=g, dtype=torch.float64), -1)
    u = torch.rand(50, generator=g, dtype=torch.float64)
    counts = rs.offspring_counts(rs.systematic_indices(w, u), N)
    assert bool((counts.sum(-1) == N).all())
    assert bool((counts >= torch.floor(N * w - 1e-9)).all()) and bool((counts <= torch.ceil(N * w + 1e-9)).all())


def test_stable_ancestors_keeps_survivors_in_place():
    # survivors 1, 2, 5 keep their slots; the two extra copies of 1 fill dead slots 0 and 3, the
    # extra copy of 5 fills dead slot 4
    counts = torch.tensor([[0, 3, 1, 0, 0, 2]])
    anc = rs.stable_ancestors(counts)
    assert anc.tolist() == [[1, 1, 2, 1, 5, 5]]
    assert rs.stable_ancestors(torch.ones(1, 6, dtype=torch.long)).tolist() == [list(range(6))]


@pytest.mark.parametrize("N", [7, 64, 257])
def test_stable_ancestors_is_a_rearrangement(N):
    g = torch.Generator().manual_seed(0)
    w = torch.softmax(2 * torch.randn(20, N, generator=g, dtype=torch.float64), -1)
    sorted_anc = rs.systematic_indices(w, torch.rand(20, generator=g, dtype=torch.float64))
    counts = rs.offspring_counts(sorted_anc, N)
    anc = rs.stable_ancestors(counts)
    assert torch.equal(torch.sort(anc, -1).values, sorted_anc)  # same multiset
    slots = torch.arange(N).expand(20, N)
    alive = counts > 0
    assert bool((anc[alive] == slots[alive]).all())  # survivors stay
    # a slot that is written (ancestor != slot) is never read by another slot
    moved = anc != slots
    for b in range(20):
        assert not set(anc[b][moved[b]].tolist()) & set(slots[b][moved[b]].tolist())


@pytest.mark.parametrize("scheme", rs.SCHEMES)
def test_unbiased_offspring_chi_square(scheme):
    """Over T = 4000 seeded repetitions the mean offspring count of particle j estimates N w_j.
    Statistic sum_j (sum_t o_tj - T N w_j)^2 / (T N w_j) is at most chi-square(N-1)-distributed (the
    variances of these schemes are at most multinomial's); we require its p-value > 1e-3."""
    N, T = 16, 4000
    g = torch.Generator().manual_seed(11)
    w = torch.softmax(torch.randn(N, generator=g, dtype=torch.float64), -1).expand(T, N)
    u = torch.rand(T, N, generator=g, dtype=torch.float64)
    anc = rs._scheme_indices(scheme, w, u)
    counts = rs.offspring_counts(anc, N).sum(0).double()
    expected = T * N * w[0]
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert stats.chi2.sf(chi2, N - 1) > 1e-3


def test_resample_ref_decisions_and_reset():
    B, N = 3, 64
    logw = torch.zeros(B, N, dtype=torch.float64)
    logw[1, :] = torch.linspace(0, 300, N)  # degenerate: particle N-1 holds 99% of the weight
    logw[2, 5] = float("nan")  # one dead particle, ESS still high
    anc, new_logw, ess, did = rs.resample_ref(logw, stream_keys([1, 2, 3], 4, 3), scheme="systematic", threshold=0.5)
    assert did.tolist() == [False, True, False]
    assert anc[0].tolist() == list(range(N)) and anc[2].tolist() == list(range(N))
    assert bool((new_logw[1] == 0).all()) and float(ess[0]) == pytest.approx(1.0)
    assert new_logw[2, 5] == -math.inf
    assert set(anc[1].tolist()) == {N - 1} and float(ess[1]) < 2.0 / N
    assert math.isnan(float(rs.resample_ref(torch.full((1, 4), float("nan")), stream_keys([0], 0, 3))[2][0]))


def test_gather_rows_moves_only_needed_rows():
    x = torch.arange(6 * 2, dtype=torch.float32).reshape(1, 6, 2)
    anc = torch.tensor([[1, 1, 2, 1, 5, 5]])
    out = rs.gather_rows(x.clone(), anc)
    assert torch.equal(out[0], x[0][anc[0]])


def test_the_reference_gather_refuses_rows_the_kernel_refuses():
    """(R, D) rows, the particle step's layout, were indexed x[b, i] by the reference: single elements moved, rows
    left as they were, where the kernel refuses the shape; (B, N + 1, D) was taken too."""
    from afdps.kernels.resample import resample_and_gather
    lw = torch.tensor([[0.0, -50.0, -50.0, -50.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    keys = torch.tensor([3, 4], dtype=torch.int64)
    for bad in (torch.arange(32.0).reshape(8, 4), torch.zeros(2, 5, 3)):
        with pytest.raises(ValueError, match=r"x must be \(B, N, \.\.\.\) = \(2, 4, \.\.\.\)"):
            resample_and_gather(bad, lw, keys, threshold=0.5, use_triton=False)
    x = torch.arange(32.0).reshape(2, 4, 4)
    out, *_ = resample_and_gather(x.clone(), lw, keys, threshold=0.5, use_triton=False)
    assert torch.equal(out[0], x[0, :1].expand(4, 4)) and torch.equal(out[1], x[1])  # image 0 resampled to its one


def test_the_reference_steps_check_their_rows_as_the_kernels_do():
    """Float keys were rounded (other noise), a (1, D) score broadcast, num_particles=2.5 taken as 2 by the kernel."""
    from afdps.kernels.langevin import langevin_step_ref
    from afdps.kernels.particle_step import particle_step_ref
    x = torch.zeros(4, 8)
    keys = torch.tensor([1, 2], dtype=torch.int64)
    step = dict(h=0.01, f=0.0, g2=1.0, v2=1.0, lam=1.0, eta=0.5, lap_mu=0.0, euler=False)
    with pytest.raises(ValueError, match=r"keys must be \(2,\) int64, got \(2,\) torch.float64"):
        particle_step_ref(x, x, x, keys.double(), num_particles=2, **step)
    with pytest.raises(ValueError, match=r"score must have the shape of x \(4, 8\), got \(1, 8\)"):
        langevin_step_ref(x, x[:1], x, keys, num_particles=2, lam=1.0, snr=0.1)
    with pytest.raises(ValueError, match="num_particles must be an integer, got 2.5"):
        particle_step_ref(x, x, x, keys, num_particles=2.5, **step)


def test_the_steps_refuse_scalars_that_are_not_finite():
    """A NaN step scalar turned every row to NaN without a word, and a NaN threshold (``ess < nan`` never true)
    switched resampling off; a negative snr was squared away. The kernels' params builders refuse the same (no
    launch needed: they run before it). A negative threshold stays: it is the sampler's 'never resample'."""
    from afdps.kernels import langevin as lv
    from afdps.kernels import particle_step as ps
    from afdps.kernels.resample import resample_and_gather
    x = torch.zeros(4, 8)
    keys = torch.tensor([1, 2], dtype=torch.int64)
    step = dict(h=0.01, f=0.0, g2=1.0, v2=1.0, lam=1.0, eta=0.5, lap_mu=0.0)
    for name, bad, says in (("h", float("nan"), "h must be a finite real number, got nan"),
                            ("lam", float("inf"), "lam must be a finite real number, got inf"),
                            ("v2", -1.0, "v2 must be >= 0, got -1.0"), ("eta", "0.5", "eta must be a finite real")):
        with pytest.raises(ValueError, match=says):
            ps.particle_step_ref(x, x, x, keys, num_particles=2, euler=False, **{**step, name: bad})
        with pytest.raises(ValueError, match=says):
            ps.particle_step_params(**{**step, name: bad})
    for kw, says in (({"snr": -0.1}, "snr must be >= 0, got -0.1"),
                     ({"lam": float("nan")}, "lam must be a finite real number, got nan")):
        with pytest.raises(ValueError, match=says):
            lv.langevin_step_ref(x, x, x, keys, num_particles=2, **{"lam": 1.0, "snr": 0.1, **kw})
        with pytest.raises(ValueError, match=says):
            lv.langevin_step_params(**{"lam": 1.0, "snr": 0.1, **kw})
    lw = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="threshold must be a real number .* got nan"):
        resample_and_gather(x.view(2, 4, 4), lw, keys, threshold=float("nan"), use_triton=False)
    _, _, _, did = resample_and_gather(x.view(2, 4, 4), lw, keys, threshold=-1.0, use_triton=False)
    assert not did.any()
