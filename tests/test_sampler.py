"""afdps.sample: API, input validation, determinism, per-image independence, result fields."""
import math

import pytest
import torch

import afdps
from afdps import ops
from afdps.priors import GaussianMixture, SpectralGaussian


def _gm():
    return GaussianMixture(torch.tensor([[-1.0, 0.0], [1.5, 1.0]]), torch.stack([0.3 * torch.eye(2), 0.5 * torch.eye(2)]),
                           torch.tensor([0.4, 0.6]))


def _spectral(shape=(3, 8, 8)):
    C, H, W = shape
    power = torch.linspace(1.0, 0.01, H * (W // 2 + 1)).reshape(1, H, W // 2 + 1).expand(C, -1, -1).clone()
    return SpectralGaussian(torch.zeros(C), SpectralGaussian.symmetric(power, W), W)


A2 = ops.Dense(torch.tensor([[1.0, 0.5]]))
Y2 = torch.tensor([[0.3], [-1.0], [2.0]])


def test_result_fields_and_shapes():
    r = afdps.sample(_gm(), A2, Y2, 0.5, num_particles=32, num_steps=10, seed=0)
    assert r.particles.shape == (3, 32, 2) and r.log_weights.shape == (3, 32)
    assert r.ess.shape == (10, 3) and r.resampled.shape == (10, 3) and r.resampled.dtype == torch.bool
    assert r.best.shape == (3, 2) and r.mean.shape == (3, 2) and r.std.shape == (3, 2)
    torch.testing.assert_close(r.weights.sum(1), torch.ones(3, dtype=torch.float64))
    # the default (SDE, eta 0.5) uses the Tweedie potential: one score call with its VJP per step and one more
    # at the next time, except after the last step
    assert r.potential == "tweedie" and r.nfe == 19 and r.seeds == [0, 0, 0]
    assert afdps.sample(_gm(), A2, Y2, 0.5, num_particles=4, num_steps=10, seed=0, eta=1.0).potential == "scaled"
    assert not bool(r.resampled[-1].any())  # never resampled after the last step
    assert len(r.resample_steps) == 3


def test_weighted_statistics_are_consistent():
    r = afdps.sample(_gm(), A2, Y2, 0.5, num_particles=64, num_steps=8, seed=1)
    w = r.weights
    p = r.particles.double()
    m = (w[..., None] * p).sum(1)
    torch.testing.assert_close(r.mean.double(), m, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(r.std.double() ** 2, (w[..., None] * (p - m[:, None]) ** 2).sum(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.best, r.particles[torch.arange(3), r.log_weights.argmax(1)])


def test_same_seed_same_result_and_batch_independence():
    """An image's ensemble depends only on the seed and its own measurement."""
    kw = dict(num_particles=16, num_steps=12, seed=7)
    full = afdps.sample(_gm(), A2, Y2, 0.5, **kw)
    again = afdps.sample(_gm(), A2, Y2, 0.5, **kw)
    assert torch.equal(full.particles, again.particles) and torch.equal(full.log_weights, again.log_weights)
    alone = afdps.sample(_gm(), A2, Y2[1:2], 0.5, **kw)
    assert torch.equal(alone.particles[0], full.particles[1])
    assert torch.equal(alone.log_weights[0], full.log_weights[1])
    other = afdps.sample(_gm(), A2, torch.stack([Y2[2], Y2[1]]), 0.5, **kw)
    assert torch.equal(other.particles[1], full.particles[1])
    different = afdps.sample(_gm(), A2, Y2, 0.5, num_particles=16, num_steps=12, seed=8)
    assert not torch.equal(different.particles, full.particles)
    per_image = afdps.sample(_gm(), A2, Y2, 0.5, num_particles=16, num_steps=12, seed=[7, 8, 7])
    assert torch.equal(per_image.particles[0], full.particles[0])
    assert torch.equal(per_image.particles[1], afdps.sample(_gm(), A2, Y2[1:2], 0.5, num_particles=16, num_steps=12, seed=8).particles[0])


def test_seed_none_is_recorded_and_reproducible():
    r = afdps.sample(_gm(), A2, Y2[:1], 0.5, num_particles=8, num_steps=5)
    again = afdps.sample(_gm(), A2, Y2[:1], 0.5, num_particles=8, num_steps=5, seed=r.seeds)
    assert torch.equal(r.particles, again.particles)


@pytest.mark.parametrize("kw", [
    dict(method="ode"), dict(method="ode", corrector_steps=0), dict(eta=0.5), dict(eta=0.0), dict(tempering="linear"),
    dict(guidance="euler"), dict(resample="none"), dict(resample="multinomial"), dict(resample="stratified"),
    dict(resample="residual"), dict(weights=False), dict(denoise=True), dict(dtype=torch.float64),
])
def test_every_mode_runs_on_images(kw):
    pr = _spectral()
    op = ops.Blur(ops.gaussian_kernel(3, 1.0), pr.event_shape)
    y = op.measure(torch.zeros(2, *pr.event_shape), 0.1, torch.Generator().manual_seed(0))
    r = afdps.sample(pr, op, y, 0.1, num_particles=8, num_steps=6, seed=3, **kw)
    assert torch.isfinite(r.particles).all() and r.particles.shape == (2, 8, *pr.event_shape)
    if kw.get("weights") is False:
        assert bool((r.log_weights == 0).all())
    if kw.get("method") == "ode":
        assert r.nfe == 6 * (1 + kw.get("corrector_steps", 1))


def test_all_operators_run():
    pr = _spectral((3, 8, 8))
    for op in (ops.Blur(ops.motion_kernel(5, 0.5, seed=1), (3, 8, 8)), ops.BlockDownsample(2, (3, 8, 8)),
               ops.Inpaint(ops.box_mask((8, 8), 4), (3, 8, 8)), ops.Identity((3, 8, 8))):
        y = op.measure(torch.zeros(1, 3, 8, 8), 0.1)
        r = afdps.sample(pr, op, y, 0.1, num_particles=4, num_steps=4, seed=0)
        assert torch.isfinite(r.particles).all()


@pytest.mark.parametrize("kw, match", [
    (dict(method="langevin"), "method"),
    (dict(tempering="cosine"), "tempering"),
    (dict(guidance="rk4"), "guidance"),
    (dict(resample="optimal"), "resample"),
    (dict(num_particles=0), "num_particles"),
    (dict(num_particles=2.5), "num_particles"),
    (dict(num_steps=0), "num_steps"),
    (dict(ess_threshold=1.5), "ess_threshold"),
    (dict(eta=float("nan")), "eta"),
    (dict(corrector_snr=0.0), "corrector_snr"),
    (dict(corrector_snr=(0.1, 0.0)), "corrector_snr"),
    (dict(corrector_snr=(0.1, 0.2, 0.3)), "corrector_snr"),
    (dict(seed=[1, 2]), "one int per image"),
    (dict(backend="cuda"), "backend"),
    (dict(dtype=torch.float16), "dtype"),
])
def test_bad_options_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        afdps.sample(_gm(), A2, Y2, 0.5, **{"num_particles": 4, "num_steps": 2, **kw})


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="sigma_y"):
        afdps.sample(_gm(), A2, Y2, 0.0)
    with pytest.raises(ValueError, match="sigma_y"):
        afdps.sample(_gm(), A2, Y2, -1.0)
    with pytest.raises(ValueError, match="non-finite"):
        afdps.sample(_gm(), A2, torch.tensor([[0.0], [float("inf")]]), 0.5)
    with pytest.raises(ValueError, match=r"y\[None\]"):
        afdps.sample(_gm(), A2, torch.tensor([0.3]), 0.5)
    with pytest.raises(ValueError, match="does not match the prior"):
        afdps.sample(_gm(), ops.Dense(torch.ones(1, 3)), Y2, 0.5)
    with pytest.raises(ValueError, match="leading batch"):
        afdps.sample(_gm(), A2, torch.zeros(3, 2), 0.5)


def test_triton_backend_request_is_honoured_or_raises(monkeypatch):
    """An explicitly requested backend that cannot run raises instead of silently falling back."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="Triton backend was requested but cannot run"):
        afdps.sample(_gm(), A2, Y2, 0.5, num_particles=4, num_steps=2, backend="triton")
    monkeypatch.setenv("AFDPS_BACKEND", "bogus")
    with pytest.raises(ValueError, match="AFDPS_BACKEND"):
        afdps.sample(_gm(), A2, Y2, 0.5, num_particles=4, num_steps=2)


def test_dead_ensemble_raises_naming_image_and_step():
    class NaNPrior:
        event_shape = (2,)
        schedule = afdps.VPSchedule()

        def score(self, x, t):
            s = -x.clone()
            s[1] = float("nan")  # every particle of image 1 breaks
            return s

    with pytest.raises(FloatingPointError, match=r"image 1 .*step 0"):
        afdps.sample(NaNPrior(), A2, Y2, 0.5, num_particles=4, num_steps=3, seed=0)


def test_profile_timings_and_progress(capsys):
    r = afdps.sample(_gm(), A2, Y2, 0.5, num_particles=8, num_steps=3, seed=0, profile=True, progress=True)
    assert set(r.timings) == {"stage1", "score", "operator", "update", "resample"}
    assert all(v >= 0 for v in r.timings.values())


def test_sample_prior_matches_a_gaussian():
    """Reverse SDE from N(0, I) on a 1-D Gaussian prior N(0.5, 0.3^2): 20000 draws, 200 steps; mean
    and std within 5 standard errors plus the Euler-Maruyama bias (measured below 0.01 at 200 steps)."""
    gm = GaussianMixture(torch.tensor([[0.5]]), torch.tensor([[[0.09]]]), torch.ones(1))
    x = afdps.sample_prior(gm, 20000, num_steps=200, seed=0).double()
    se = 0.3 / math.sqrt(20000)
    assert abs(float(x.mean()) - 0.5) < 5 * se + 0.01
    assert abs(float(x.std()) - 0.3) < 5 * se + 0.01


def test_numpy_measurements_give_numpy_results():
    import numpy as np

    y = Y2.numpy()
    r = afdps.sample(_gm(), A2, y, 0.5, num_particles=8, num_steps=4, seed=0)
    t = afdps.sample(_gm(), A2, Y2, 0.5, num_particles=8, num_steps=4, seed=0)
    for name in ("particles", "log_weights", "weights", "best", "mean", "std", "ess", "resampled"):
        got = getattr(r, name)
        assert isinstance(got, np.ndarray), name
        np.testing.assert_array_equal(got, getattr(t, name).numpy())
    with pytest.raises(TypeError, match="NumPy"):
        afdps.sample(_gm(), A2, [[0.3]], 0.5)


def test_ddpm_prior_sampler_on_a_gaussian():
    """DDPM ancestral sampling with the exact score of N(m, diag(s^2)) in 2-D.

    10,000 draws: the standard error of a mean is s / 100 (<= 0.008), so means must agree within
    4 standard errors. Standard deviations come out low by the discretisation (the point estimate of
    x0 drops its posterior spread): measured 0.772 / 0.469 for 0.8 / 0.5 at 100 steps, 0.796 / 0.496
    at 1000; the check allows 0.90 to 1.02 of the truth (the Monte-Carlo error is 0.7 %).
    """
    mean, std = torch.tensor([0.3, -0.2]), torch.tensor([0.8, 0.5])
    gm = GaussianMixture(mean[None], torch.diag(std ** 2)[None], [1.0])
    x = afdps.sample_prior(gm, 10000, num_steps=100, method="ddpm", seed=0, clip_denoised=False, dtype=torch.float64)
    assert x.shape == (10000, 2) and x.dtype == torch.float64
    assert ((x.mean(0) - mean.double()).abs() < 4 * std.double() / 100).all(), x.mean(0)
    ratio = x.std(0) / std.double()
    assert ((ratio > 0.90) & (ratio < 1.02)).all(), ratio
    # same seed, same draws; a custom grid is accepted and checked
    kw = dict(method="ddpm", seed=3, clip_denoised=False)
    torch.testing.assert_close(afdps.sample_prior(gm, 7, num_steps=5, **kw),
                               afdps.sample_prior(gm, 7, timesteps=gm.schedule.timesteps(5), **kw))
    # the noise is Philox per row: chunking the score calls does not change the draws
    torch.testing.assert_close(afdps.sample_prior(gm, 7, num_steps=5, batch_size=3, **kw), afdps.sample_prior(gm, 7, num_steps=5, **kw))
    with pytest.raises(ValueError, match="decreasing"):
        afdps.sample_prior(gm, 2, timesteps=[0.1, 0.5], method="ddpm")


@pytest.mark.parametrize("kw", [dict(method="sde", tempering="linear"), dict(method="ode", corrector_steps=2)])
def test_steppable_sampler_reproduces_sample(kw):
    """prepare / init / step / finish, looped by hand, give exactly what sample() gives, and the callback
    sees every step's state and info."""
    from afdps.engine import sampler as sm

    opts = dict(num_particles=8, num_steps=6, denoise=True, **kw)
    seen = []
    res = afdps.sample(_gm(), A2, Y2, 0.5, seed=3, callback=lambda k, st, info: seen.append((k, st, info)), **opts)
    assert [k for k, _, _ in seen] == list(range(6))
    for k, st, info in seen:
        assert st.k == k + 1 and st.x.shape == (3, 8, 2) and st.logw.shape == (3, 8)
        assert torch.equal(info.ess, res.ess[k]) and torch.equal(info.resampled, res.resampled[k])
    plan = sm.prepare(_gm(), A2, Y2, 0.5, seed=3, **opts)
    state = sm.init(plan)
    assert state.k == 0 and bool((state.logw == 0).all())
    while state.k < plan.num_steps:
        state, info = sm.step(state, plan)
    state, cause = sm.finish(state, plan)
    assert torch.equal(state.x, res.particles) and torch.equal(state.logw, res.log_weights)
    assert not bool(cause.any())


def test_callback_can_stop_a_run_and_must_be_callable():
    class Stop(Exception):
        pass

    def stop_at_two(k, state, info):
        if k == 2:
            raise Stop

    with pytest.raises(Stop):
        afdps.sample(_gm(), A2, Y2, 0.5, num_particles=4, num_steps=10, seed=0, callback=stop_at_two)
    with pytest.raises(TypeError, match="callback must be callable"):
        afdps.sample(_gm(), A2, Y2, 0.5, num_particles=4, num_steps=2, seed=0, callback=3)


def test_profile_reports_per_step_timings():
    infos = []
    afdps.sample(_gm(), A2, Y2, 0.5, num_particles=4, num_steps=3, seed=0, profile=True, potential="scaled",
                 callback=lambda k, st, info: infos.append(info))
    assert all(set(i.timings) >= {"score", "operator", "update", "resample"} for i in infos)
    assert all(v >= 0 for i in infos for v in i.timings.values())


# ---- adaptive tempering ---------------------------------------------------------------------------

def _ess_fraction(live, b, d):
    w = torch.where(live, torch.exp(-d * (b - b[live].min())), 0.0)
    return float(w.sum() ** 2 / (live.sum() * (w * w).sum()))


def test_adaptive_lam_is_the_largest_lam_the_ess_target_allows():
    """Against a grid search: the returned lam keeps the increment's ESS at the target (within the
    bisection's 2^-50) and 1e-6 more would not; dead particles do not count; lam_k is respected."""
    g = torch.Generator().manual_seed(0)
    b = torch.randn(4, 64, generator=g, dtype=torch.float64).abs() * torch.tensor([[5.0], [30.0], [1e3], [1e-3]],
                                                                                   dtype=torch.float64) + 5.0
    live = torch.ones(4, 64, dtype=torch.bool)
    live[1, :8] = False
    b[1, :8] = float("nan")  # a dead particle's value is ignored, whatever it is
    lam_k = torch.tensor([0.0, 0.2, 0.5, 0.0], dtype=torch.float64)
    lam_n = afdps.sampler.adaptive_lam(live, b, lam_k, 0.5)
    assert bool((lam_n >= lam_k).all()) and bool((lam_n <= 1).all())
    assert float(lam_n[3]) == 1.0  # b nearly constant: the whole way to lam = 1 keeps the ESS
    for i in range(3):
        d = float(lam_n[i] - lam_k[i])
        assert 0.0 < d < 1.0 - float(lam_k[i])
        assert abs(_ess_fraction(live[i], b[i], d) - 0.5) < 1e-9
        assert _ess_fraction(live[i], b[i], d + 1e-6) < 0.5
    assert float(lam_n[0] - lam_k[0]) > float(lam_n[1] - lam_k[1]) > float(lam_n[2] - lam_k[2])  # spread: smaller steps


def test_adaptive_tempering_per_image_lam_and_batch_independence():
    """Each image's lam path depends only on its own particles: the batch run equals the one-image runs,
    the paths differ between images, rise from 0 to 1, and Result.lam records them."""
    gm, A = _gm(), ops.Dense(torch.tensor([[4.0, 2.0], [0.5, -3.0]]))
    y = torch.tensor([[1.0, -2.0], [-4.0, 3.0], [6.0, 0.0]])
    kw = dict(num_particles=32, num_steps=12, seed=[3, 4, 5], method="sde", eta=0.5, potential="noisy",
              tempering="adaptive", tempering_ess=0.7)
    full = afdps.sample(gm, A, y, 0.1, **kw)
    lam = full.lam
    assert lam.shape == (3, 13) and bool((lam[:, 0] == 0).all()) and bool((lam[:, -1] == 1).all())
    assert bool((lam.diff(dim=1) >= 0).all())
    assert 0.0 < float(lam[0, 1]) < 1.0 and len({round(float(v), 9) for v in lam[:, 1]}) == 3  # its own lam each
    for b in range(3):
        alone = afdps.sample(gm, A, y[b:b + 1], 0.1, **{**kw, "seed": kw["seed"][b]})
        torch.testing.assert_close(alone.particles[0], full.particles[b], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(alone.lam[0], lam[b], rtol=1e-9, atol=1e-12)
    # the fused kernel (under the interpreter here) takes lam = 1 and the pre-scaled gradient: same run
    few = {**kw, "num_steps": 4, "num_particles": 8, "seed": [3, 4]}
    tri = afdps.sample(gm, A, y[:2], 0.1, **{**few, "backend": "triton"})
    ref = afdps.sample(gm, A, y[:2], 0.1, **{**few, "backend": "torch"})
    torch.testing.assert_close(tri.lam, ref.lam, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(tri.particles, ref.particles, rtol=1e-4, atol=1e-4)
    capped = afdps.sample(gm, A, y, 0.1, **{**kw, "tempering": "adaptive-linear"})
    linear = afdps.sample(gm, A, y, 0.1, **{**kw, "tempering": "linear"}).lam
    assert bool((capped.lam <= linear + 1e-12).all()) and bool((capped.lam[:, -1] == 1).all())
    assert bool((linear == linear[:1]).all())  # a fixed schedule: the same for every image


@pytest.mark.parametrize("kw, match", [
    (dict(tempering_ess=1.0), "tempering_ess must be in"),
    (dict(tempering_ess=0.0), "tempering_ess must be in"),
    (dict(weights=False), "weights=False"),
    (dict(method="ode", corrector="song"), "corrector='song'"),
])
def test_adaptive_tempering_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        afdps.sample(_gm(), A2, Y2, 0.5, num_particles=4, num_steps=3, tempering="adaptive", **kw)
    with pytest.raises(ValueError, match="chooses lam during the run"):
        afdps.tempering_schedule("adaptive", _gm().schedule, torch.linspace(1, 0.01, 4))


def test_corrector_schedule_pair_switches_at_half_the_steps():
    from afdps.engine.sampler import corrector_schedule
    assert corrector_schedule(0.1, 3) == (0.1, [0.1] * 3)
    assert corrector_schedule((0.1, 0.2), 5) == ((0.1, 0.2), [0.1, 0.1, 0.2, 0.2, 0.2])
    assert corrector_schedule([0.1, 0.2], 4) == ((0.1, 0.2), [0.1, 0.1, 0.2, 0.2])
    kw = dict(method="ode", num_particles=16, num_steps=10, seed=3, potential="scaled")
    # a pair of equal values is the constant r, bit for bit; a different late r changes only the second half
    const = afdps.sample(_gm(), A2, Y2, 0.5, corrector_snr=0.1, **kw)
    same = afdps.sample(_gm(), A2, Y2, 0.5, corrector_snr=(0.1, 0.1), **kw)
    assert torch.equal(const.particles, same.particles) and torch.equal(const.log_weights, same.log_weights)
    seen = []
    afdps.sample(_gm(), A2, Y2, 0.5, corrector_snr=(0.1, 0.3), callback=lambda k, st, info: seen.append(st.x.clone()),
                 **kw)
    ref = []
    afdps.sample(_gm(), A2, Y2, 0.5, corrector_snr=0.1, callback=lambda k, st, info: ref.append(st.x.clone()), **kw)
    assert all(torch.equal(a, b) for a, b in zip(seen[:5], ref[:5]))  # steps 0-4 use r_early = 0.1
    assert not torch.equal(seen[5], ref[5])  # step 5 is the first with r_late = 0.3


def test_cap_move_keeps_small_moves_bit_for_bit():
    """``_cap_move``: a particle whose move is within ``cap * max(1, RMS(before))`` keeps ``after`` exactly; a
    larger move is shortened along its direction to exactly that length; the returned ratios are the relative
    moves before the cap."""
    from afdps.engine.sampler import _cap_move

    g = torch.Generator().manual_seed(0)
    before = torch.randn(2, 3, 4, 5, generator=g) * torch.tensor([0.5, 1.0, 3.0]).view(1, 3, 1, 1)
    move = torch.randn(2, 3, 4, 5, generator=g)
    move[0, 0] *= 10.0  # RMS(before) 0.5 -> the reference is 1: relative move about 10
    move[1, 2] *= 0.1   # well inside the cap
    after = before + move
    capped, ratio = _cap_move(before, after, 1.0)
    rms = lambda t: t.flatten(2).square().mean(-1).sqrt()  # noqa: E731
    rel = rms(move) / rms(before).clamp(min=1.0)
    torch.testing.assert_close(ratio, rel, rtol=1e-6, atol=0)
    for b in range(2):
        for n in range(3):
            if rel[b, n] <= 1.0:
                assert torch.equal(capped[b, n], after[b, n])
            else:
                d = capped[b, n] - before[b, n]
                assert float(rms(d[None, None])) == pytest.approx(float(rms(before[b, n][None, None]).clamp(min=1.0)), rel=1e-5)
                cos = float((d * move[b, n]).sum() / (d.norm() * move[b, n].norm()))
                assert cos == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_tweedie_guidance_cap_on_a_coarse_grid(monkeypatch):
    """The default (FK, Tweedie potential) on the shipped MNIST prior, box inpainting of the first test digit, 4
    particles, 20 steps: without the cap the undamped guidance inside the box runs away (measured |x| about 1,000);
    with it the particles stay in the data range (|x| < 3 against images in [-1, 1]) and a RuntimeWarning says the cap
    bound hard (a move over WARN_MOVE). At 60 steps every move stays within the cap here (the sampler's warning names
    60 as measured): no warning. (The second test digit, here until 2026-12-06, made no larger move and took 40% of
    the time: largest move at 60 steps 0.38 with or without it.)"""
    import warnings

    import afdps
    from afdps.engine import sampler as S
    from afdps.engine.evaluate import make_operator

    x, _ = afdps.load_mnist_test(1)
    op = make_operator("box", (1, 28, 28))
    y = op.measure(x.double(), 0.05, torch.Generator().manual_seed(0)).float()
    prior = afdps.load_prior("mnist")
    kw = dict(num_particles=4, seed=0, progress=False)
    monkeypatch.setattr(S, "MAX_MOVE", float("inf"))
    with pytest.warns(RuntimeWarning, match="shortened to inf"):
        wild = afdps.sample(prior, op, y, 0.05, num_steps=20, **kw)
    assert float(wild.particles.abs().max()) > 100
    monkeypatch.setattr(S, "MAX_MOVE", 1.0)
    with pytest.warns(RuntimeWarning, match="guidance step would have moved particles"):
        tame = afdps.sample(prior, op, y, 0.05, num_steps=20, **kw)
    assert float(tame.particles.abs().max()) < 3 and tame.guidance_jump > S.WARN_MOVE
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fine = afdps.sample(prior, op, y, 0.05, num_steps=60, **kw)
    assert fine.guidance_jump < 1.0
