"""Bad arguments of the public API refused at the entry with one sentence naming the argument, and
``seed=None`` drawing its seed from torch's global generator (a user audit)."""
import re
import numpy as np
import pytest
import torch

import afdps
from afdps import ops
from afdps.priors import GaussianMixture, SpectralGaussian

GM = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.5, 1.0]]), torch.stack([0.3 * torch.eye(2), 0.5 * torch.eye(2)]),
                     torch.tensor([0.4, 0.6]))
A2 = ops.Dense(torch.tensor([[1.0, 0.5]]))
Y2 = torch.tensor([[0.3], [-1.0]])


def _sample(**kw):
    opts = dict(num_particles=4, num_steps=2, seed=0)
    opts.update(kw)
    return afdps.sample(GM, A2, Y2, 0.5, **opts)


@pytest.mark.parametrize("kw", [dict(eta=-1), dict(eta=-0.3, method="ode"), dict(eta=-1.0, potential="scaled")])
def test_negative_eta_is_refused(kw):
    with pytest.raises(ValueError, match=r"^eta must be a finite number >= 0, got -"):
        _sample(**kw)


def test_eta_zero_is_the_unguided_prior_sde():
    assert torch.isfinite(_sample(eta=0.0).mean).all()


def test_negative_eta_is_refused_by_prepare():
    from afdps.engine.sampler import prepare

    with pytest.raises(ValueError, match=r"^eta must be a finite number >= 0, got -1"):
        prepare(GM, A2, Y2, 0.5, eta=-1, num_particles=4, num_steps=2, seed=0)


@pytest.mark.parametrize("name,value", [("weights", "no"), ("weights", 0), ("weights", None), ("denoise", "x"),
                                        ("denoise", 1), ("denoise", "False")])
def test_flags_must_be_bools(name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be True or False, got {value!r}$"):
        _sample(**{name: value})


def test_numpy_bool_flags_equal_python_bools():
    a = _sample(weights=np.False_, denoise=np.True_)
    b = _sample(weights=False, denoise=True)
    assert torch.equal(a.particles, b.particles) and torch.equal(a.log_weights, b.log_weights) and a.nfe == b.nfe


@pytest.mark.parametrize("size", [63.5, 0, -1, "64", True])
def test_load_photo_size(size):
    with pytest.raises(ValueError, match=rf"^size must be an integer >= 1, got {size!r}$"):
        afdps.load_photo("astronaut", size)


def test_load_photo_unhashable_name():
    with pytest.raises(ValueError, match=r"^unknown bundled photo \[\]; available: astronaut"):
        afdps.load_photo([], 64)


def test_load_photo_integral_float_size():
    assert torch.equal(afdps.load_photo("astronaut", 16.0), afdps.load_photo("astronaut", 16))


PHOTO = torch.linspace(-1, 1, 3 * 12 * 12, dtype=torch.float64).reshape(3, 12, 12).sin()


@pytest.mark.parametrize("size", [(0, 0), (8, -1), (8.5, 8), (8,), (8, 8, 8), 8, "ab"])
def test_spectral_fit_size(size):
    with pytest.raises(ValueError, match=r"^size must be a pair \(H, W\) of integers >= 1, got "):
        SpectralGaussian.fit([PHOTO], size)


@pytest.mark.parametrize("kw,msg", [(dict(num_crops=0), "num_crops must be an integer >= 1, got 0"),
                                    (dict(floor=-1.0), "floor must be a finite number >= 0, got -1.0")])
def test_spectral_fit_other_args(kw, msg):
    with pytest.raises(ValueError, match="^" + msg):
        SpectralGaussian.fit([PHOTO], (8, 8), **kw)


def test_spectral_fit_valid_sizes_unchanged():
    a = SpectralGaussian.fit([PHOTO], (8, 6), num_crops=4)
    b = SpectralGaussian.fit([PHOTO], torch.Size([8, 6]), num_crops=4)
    assert a.event_shape == (3, 8, 6) and torch.equal(a.power, b.power)


@pytest.mark.parametrize("op", [A2, ops.Inpaint(torch.ones(2, 2), (1, 2, 2))], ids=["dense", "inpaint"])
@pytest.mark.parametrize("sigma_y", [-1.0, float("nan"), float("inf"), "0.1"])
def test_measure_noise_level(op, sigma_y):
    x = torch.zeros(1, *op.input_shape)
    with pytest.raises(ValueError, match=r"^sigma_y must be a finite number >= 0, got "):
        op.measure(x, sigma_y, torch.Generator().manual_seed(0))


def test_measure_noise_free_is_allowed():
    x = torch.ones(1, 2)
    assert torch.equal(A2.measure(x, 0.0, torch.Generator().manual_seed(0)), A2.A(x))


def _run_none(manual_seed):
    torch.manual_seed(manual_seed)
    return afdps.sample(GM, A2, Y2, 0.5, num_particles=4, num_steps=3, seed=None)


def test_seed_none_follows_torch_manual_seed():
    a, b, c = _run_none(1), _run_none(1), _run_none(2)
    assert a.seeds == b.seeds and torch.equal(a.particles, b.particles) and torch.equal(a.log_weights, b.log_weights)
    assert a.seeds != c.seeds and not torch.equal(a.particles, c.particles)
    # the drawn seed is an ordinary seed: passing it back gives the same run
    d = afdps.sample(GM, A2, Y2, 0.5, num_particles=4, num_steps=3, seed=a.seeds)
    assert torch.equal(a.particles, d.particles)


def test_sample_prior_seed_none_follows_torch_manual_seed():
    def run(s):
        torch.manual_seed(s)
        return afdps.sample_prior(GM, 4, num_steps=3, seed=None)

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


def test_numpy_integers_and_numpy_results():
    """``load_mnist_test`` takes NumPy integers; a NumPy ``y`` makes every array field NumPy, ``dead`` too."""
    assert afdps.load_mnist_test(np.int64(3))[0].shape == (3, 1, 28, 28)
    r = afdps.sample(GM, A2, Y2.numpy(), 0.5, num_particles=4, num_steps=2, seed=0)
    assert isinstance(r.dead, np.ndarray) and isinstance(r.mean, np.ndarray) and r.dead.tolist() == [0, 0]


# ---- a user's own operator (a third audit): refused before any work, in one sentence naming the method ----------
M2 = torch.tensor([[1.0, 0.5]])


class _Mine(ops.LinearOperator):
    """A user's 1x2 operator with only the two methods every run needs."""
    input_shape, output_shape = (2,), (1,)

    def A(self, x):
        return x @ M2.to(x).T

    def A_adjoint(self, v):
        return v @ M2.to(v)


class _WithTrace(_Mine):
    def frobenius_sq(self):
        return float(M2.square().sum())


def test_own_operator_with_A_and_its_adjoint_runs_the_default_and_matches_dense():
    """A and A_adjoint alone run the default (FK, the Tweedie potential, conjugate-gradient guidance); with
    frobenius_sq the SDE with "scaled" runs too. Same seeds, implicit guidance: the user's operator and Dense give
    the same particles (the same arithmetic up to float32 rounding)."""
    for op, kw in ((_Mine(), {}), (_WithTrace(), dict(eta=1.0, potential="scaled"))):
        mine = afdps.sample(GM, op, Y2, 0.5, num_particles=4, num_steps=2, seed=0, guidance="implicit", **kw)
        dense = afdps.sample(GM, A2, Y2, 0.5, num_particles=4, num_steps=2, seed=0, guidance="implicit", **kw)
        torch.testing.assert_close(mine.particles, dense.particles, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op,kw,exc,msg", [
    (object(), {}, TypeError, "op must have A, A_adjoint"),  # check_problem's attribute test comes first
    (type("Duck", (), {"A": lambda s, x: x, "A_adjoint": lambda s, y: y, "input_shape": (2,), "output_shape": (2,)})(),
     {}, TypeError, "op must be an afdps.ops.LinearOperator: subclass it"),
    (type("NoAdjoint", (ops.LinearOperator,), {"input_shape": (2,), "output_shape": (1,),
                                               "A": _Mine.A})(),
     {}, TypeError, "NoAdjoint does not implement A_adjoint, which every run needs"),
    (_Mine(), dict(eta=1.0, potential="scaled"), TypeError, "_Mine does not implement frobenius_sq, which "
                                                             "potential='scaled' needs"),
    (type("Wide", (_Mine,), {"A": lambda s, x: torch.cat([x @ M2.to(x).T] * 2, -1)})(), {}, ValueError,
     r"Wide.A returned \(2, 1, 2\) for one particle of each image; \(B, 1, \*output_shape\) = \(2, 1, 1\) is "
     "needed"),
    (type("Off", (_Mine,), {"A_adjoint": lambda s, v: 1.01 * (v @ M2.to(v))})(), {}, ValueError,
     r"Off.A_adjoint is not the adjoint of Off.A: for random x and y, <A x, y> and <x, A_adjoint\(y\)> differ by "
     r"0.01 of the first \(root mean square over 8 pairs; at most 0.005 is allowed\)"),
    (type("F64", (_Mine,), {"A": lambda s, x: x @ M2.double().T})(), {}, ValueError,
     "F64.A failed on a float32 batch of shape \\(2, 1, 2\\) on cpu \\(RuntimeError"),
    # another dtype back: a float32 run's particles promoted to float64, or a float64 run computed in float32
    (type("Up", (_Mine,), {"A": lambda s, x: x.double() @ M2.double().T})(), {}, ValueError,
     "Up.A returned float64 on cpu for float32 particles on cpu; an operator returns its input's dtype and device"),
    (type("Down", (_Mine,), {"A_adjoint": lambda s, v: v.float() @ M2})(), dict(dtype=torch.float64), ValueError,
     "Down.A_adjoint returned float32 on cpu for float64 particles on cpu; an operator returns its input's dtype"),
])
def test_own_operator_faults_are_named(op, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        afdps.sample(GM, op, Y2 if tuple(getattr(op, "output_shape", (1,))) == (1,) else torch.zeros(2, 2), 0.5,
                     num_particles=4, num_steps=2, seed=0, **kw)


def test_an_autograd_adjoint_and_per_image_operators_pass_the_check():
    """The check runs in the caller's grad mode, so an adjoint computed by autograd (a common way to write one)
    passes, as it runs in the sampler; an operator holding one buffer per image (shape (B, 1, ...)) gets a probe of
    one particle per image, as the sampler's batches are."""
    class Autograd(_Mine):
        def A_adjoint(self, v):
            x = torch.zeros(*v.shape[:-1], 2, dtype=v.dtype, requires_grad=True)
            return torch.autograd.grad(self.A(x), x, v)[0]

    class PerImage(_Mine):  # image b's measurement weighted by w[b]
        w = torch.tensor([1.0, 2.0]).reshape(2, 1, 1)

        def A(self, x):
            return self.w.to(x) * super().A(x)

        def A_adjoint(self, v):
            return super().A_adjoint(self.w.to(v) * v)

    for op in (Autograd(), PerImage()):
        assert torch.isfinite(afdps.sample(GM, op, Y2, 0.5, num_particles=4, num_steps=2, seed=0).mean).all()


def test_inflated_names_the_spectral_method_it_lacks():
    class Spectral(_WithTrace):  # diagonalises A^T A but lacks the trace and the output-side function
        def spectral_apply(self, v, fn):
            return A2.spectral_apply(v, fn)

    with pytest.raises(TypeError, match="Spectral does not implement spectral_trace, which potential='inflated'"):
        afdps.sample(GM, Spectral(), Y2, 0.5, num_particles=4, num_steps=2, seed=0, potential="inflated", eta=1.0)
    assert ops.LinearOperator.frobenius_sq is not _WithTrace.frobenius_sq
    assert A2.frobenius_sq() == pytest.approx(1.25)


def test_stepping_past_the_end_or_with_another_plan_is_refused():
    from afdps.engine.sampler import init, prepare, step

    plan = prepare(GM, A2, Y2, 0.5, num_particles=4, num_steps=2, seed=0)
    state = init(plan)
    for _ in range(2):
        state, _ = step(state, plan)
    with pytest.raises(ValueError, match="the state has taken 2 of the plan's 2 steps; a finished run goes to finish"):
        step(state, plan)
    other = prepare(GM, A2, Y2, 0.5, num_particles=8, num_steps=2, seed=0)
    with pytest.raises(ValueError, match=r"the state's particles have shape \(2, 4, 2\), the plan's are \(2, 8, 2\)"):
        step(init(plan), other)
    # a plan of the same shape with another y, sigma_y, seed and method ran the state silently (a user audit)
    same_shape = prepare(GM, A2, Y2 + 3, 0.1, num_particles=4, num_steps=2, seed=1, method="ode")
    with pytest.raises(ValueError, match=r"^the state comes from another plan"):
        step(init(plan), same_shape)
    from afdps.engine.sampler import ParticleState, finish
    with pytest.raises(ValueError, match=r"^the state comes from another plan"):
        finish(init(plan), same_shape)
    mine = init(plan)  # a state built by hand (a warm start) is taken as it is
    step(ParticleState(x=mine.x, logw=mine.logw), same_shape)
    # finish() of Stage I's start gave it back as the final ensemble, and a second finish() denoised again; a NaN
    # log-weight (written by a callback) was taken for the best particle by argmax
    with pytest.raises(ValueError, match=r"finish takes the state after the plan's last step \(k = 2\); this one has "
                                         r"taken 0: step it on first"):
        finish(init(plan), plan)
    done, _ = finish(state, plan)
    with pytest.raises(ValueError, match=r"the state is finish\(\)'s result already"):
        finish(done, plan)
    with pytest.raises(ValueError, match=r"the state is finish\(\)'s result: the run is over"):  # (step sent it
        step(done, plan)  # to finish, which refused it)
    nan = state.logw.clone()
    nan[:, 0] = float("nan")
    done, _ = finish(ParticleState(x=state.x, logw=nan, k=2), plan)
    assert bool(torch.isneginf(done.logw[:, 0]).all()) and bool(torch.isfinite(done.logw[:, 1:]).all())


def test_a_y_with_an_autograd_graph_is_detached():
    """The run is not differentiable; a y that required grad made every step's tensors part of one growing graph
    (peak memory 10 MiB -> 729 MiB at 240 steps in a user audit), results with requires_grad, and torch's warning."""
    import warnings

    y = Y2.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "Converting a tensor with requires_grad=True to a scalar"
        r = afdps.sample(GM, A2, y, 0.5, num_particles=4, num_steps=3, seed=0, eta=1.0)
    assert not r.particles.requires_grad and not r.log_weights.requires_grad
    ref = afdps.sample(GM, A2, Y2, 0.5, num_particles=4, num_steps=3, seed=0, eta=1.0)
    assert torch.equal(r.particles, ref.particles)


class _NumpyScore:
    event_shape, schedule = GM.event_shape, GM.schedule

    def score(self, x, t):
        return GM.score(x, t).detach().numpy()


class _StrSchedule:
    event_shape, schedule = GM.event_shape, "vp"

    def score(self, x, t):
        return GM.score(x, t)


@pytest.mark.parametrize("prior, kw, exc, msg", [
    (_NumpyScore(), {}, TypeError, r"score\(x, t\) returned ndarray \(1, 4, 2\) for particles.*must return a torch tensor"),
    (_NumpyScore(), {"eta": 1.0, "potential": "noisy"}, TypeError,
     r"^the prior's score\(x, t\) returned a ndarray at step 0 .*must return a torch tensor"),
    (_StrSchedule(), {}, TypeError, r"^prior.schedule must be a diffusion schedule .* a str lacks timesteps"),
])
def test_a_prior_that_breaks_the_interface_is_named(prior, kw, exc, msg):
    """A score returning a NumPy array was an AttributeError ('no attribute requires_grad') or a TypeError from
    torch.isfinite; a schedule given as text an AttributeError ('no attribute timesteps')."""
    with pytest.raises(exc, match=msg):
        afdps.sample(prior, A2, Y2[:1], 0.5, num_particles=4, num_steps=2, seed=0, **kw)


def test_y_on_the_meta_device_is_named():
    with pytest.raises(ValueError, match="^y is on the meta device"):
        afdps.sample(GM, A2, torch.empty(2, 1, device="meta"), 0.5, num_particles=4, num_steps=2, seed=0)


class _NanLate:
    """The mixture's score, NaN below tau = 0.05: only the ODE's corrector (at each step's new time) and the Tweedie
    potential's next-time evaluation meet it before the last step."""
    event_shape, schedule = GM.event_shape, GM.schedule

    def score(self, x, t):
        s = GM.score(x, t)
        return torch.full_like(s, float("nan")) if t < 0.05 else s


@pytest.mark.parametrize("kw", [dict(method="ode"), dict(method="sde", eta=0.5, potential="tweedie")],
                         ids=["ode-corrector", "tweedie"])
def test_a_non_finite_score_is_named_as_such_wherever_it_is_taken(kw):
    """It was reported as a non-finite state (ODE corrector) or increment (Tweedie), with hints to take more steps."""
    with pytest.raises(FloatingPointError, match="non-finite score: the prior's score returned NaN or inf"):
        afdps.sample(_NanLate(), A2, Y2[:1], 0.5, num_particles=4, num_steps=5, seed=0, **kw)


@pytest.mark.parametrize("name,value", [("profile", "no"), ("progress", "yes"), ("cuda_graph", 0)])
def test_more_flags_must_be_bools(name, value):
    with pytest.raises(ValueError, match=f"^{name} must be True or False, got"):
        _sample(**{name: value})


def test_zero_d_tensors_are_numbers_and_seeds_have_64_bits():
    plain = _sample()
    same = afdps.sample(GM, A2, Y2, torch.tensor(0.5), num_particles=np.array(4), num_steps=torch.tensor(2),
                        seed=torch.tensor(0))
    assert torch.equal(plain.particles, same.particles)
    for bad in (2**64, -1, [0, 2**70]):
        with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\), got"):
            _sample(seed=bad)
    with pytest.raises(ValueError, match="sigma_y must be a positive finite number"):
        afdps.sample(GM, A2, Y2, torch.tensor(True))


@pytest.mark.parametrize("kw, text", [
    (dict(method="ode", eta=1.0), "eta=1.0 changes nothing with method='ode'"),
    (dict(method="sde", corrector_steps=3, corrector="song"),
     "corrector_steps=3, corrector='song' change nothing with method='sde'"),
    (dict(method="sde", corrector_snr=0.3), "corrector_snr=0.3 changes nothing with method='sde'"),
    (dict(tempering="linear", tempering_ess=0.9), "tempering_ess=0.9 changes nothing with tempering='linear'"),
    (dict(ess_threshold=0.0, resample="multinomial"), "resample='multinomial' changes nothing with ess_threshold=0"),
    (dict(weights=False, resample="multinomial", ess_threshold=0.9),
     "resample='multinomial', ess_threshold=0.9 change nothing with weights=False"),
    (dict(resample="none", ess_threshold=0.9), "ess_threshold=0.9 changes nothing with resample='none'"),
    (dict(method="ode", corrector_steps=0, corrector="song", corrector_snr=0.5),
     "corrector='song', corrector_snr=0.5 change nothing with corrector_steps=0"),
    (dict(method="sde", corrector_snr=np.float64(0.3)), "corrector_snr=0.3 changes nothing with method='sde'"),
])
def test_an_option_the_run_does_not_use_is_named(kw, text):
    """Options of another method (the ODE's corrector with the SDE, eta with the ODE), the adaptive temperings'
    target with a fixed tempering, and a resampling scheme that never runs were taken without a word: a user who
    tuned them believed they did something."""
    with pytest.warns(UserWarning, match=re.escape(text)):
        _sample(**kw)


def test_the_defaults_and_the_options_in_use_warn_of_nothing():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        for kw in (dict(), dict(method="ode", corrector_steps=2, corrector_snr=[0.1, 0.2]), dict(eta=1.0),
                   dict(tempering="adaptive", tempering_ess=0.7), dict(ess_threshold=0.0, resample="systematic"),
                   dict(method="ode", corrector_snr=np.float64(0.3)), dict(corrector_snr=np.array([0.1, 0.2])[0] + 0.0,
                                                                          method="ode"),
                   dict(weights=False), dict(resample="none")):
            _sample(**kw)


@pytest.mark.parametrize("kw, text", [
    (dict(method="ode", eta=0.7, potential="tweedie"), "potential='tweedie' has no closed-form Laplacian"),
    (dict(seed=-1, corrector_snr=0.3), r"seed must be in \[0, 2\*\*64\)"),
    (dict(tempering="none", tempering_ess=0.3, potential="tweedie"), "potential='tweedie' starts from lam = 0"),
])
def test_a_refused_run_does_not_warn_first(kw, text):
    """A run that is refused says why, and nothing else: the notes on options it would not have used came first."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(ValueError, match=text):
            afdps.sample(GM, A2, Y2, 0.5, num_particles=4, num_steps=2, **kw)


@pytest.mark.parametrize("kw, text", [
    (dict(tempering_ess="abc"), "tempering_ess must be a"),
    (dict(tempering_ess=None), "tempering_ess must be a"),
    (dict(tempering_ess=np.array([0.3])), "tempering_ess must be a"),
    (dict(corrector_snr="abc"), "corrector_snr must be"),
])
def test_bad_numbers_are_refused_by_name(kw, text):
    """They were compared with their defaults before they were checked: a raw float() error, or NumPy's "truth
    value of an array is ambiguous" for a NumPy number as corrector_snr."""
    with pytest.raises(ValueError, match=text):
        _sample(**kw)


def test_no_tempering_takes_the_scaled_potential_by_default():
    """potential=None meant "tweedie" for the default SDE whatever the tempering, and the Tweedie potential refused
    tempering="none" (it starts from lam = 0): the default refused a documented option."""
    res = _sample(tempering="none", eta=0.5)
    assert res.potential == "scaled"
    assert _sample(eta=0.5).potential == "tweedie"
    from afdps.engine.sampler import default_potential
    assert default_potential("sde", 0.5, tempering="none") == "scaled"


def test_implicit_guidance_with_the_inflated_potential_is_refused_before_the_run():
    with pytest.raises(ValueError, match="guidance='implicit' has no step for potential='inflated'.*use guidance='exact'"):
        afdps.sample(GM, A2, Y2, 0.5, num_particles=4, num_steps=1, method="ode", guidance="implicit",
                     potential="inflated")


def test_seeds_dtypes_and_y_as_a_user_audit_found_them():
    """A tensor of seeds was refused where an array passed; sample_prior's seed message spoke of images and it took
    float16, which sample refuses; a float64 y beyond float32's range became inf in the run and was reported as an
    ensemble that died of overflow; the plan shared a float32 y with the caller, so changing it later changed the
    run (a float64 y was copied)."""
    from afdps.engine.sampler import init, prepare, step
    kw = dict(num_particles=4, num_steps=3, progress=False)
    a = afdps.sample(GM, A2, Y2, 0.5, seed=torch.tensor([1, 2]), **kw)
    b = afdps.sample(GM, A2, Y2, 0.5, seed=[1, 2], **kw)
    assert torch.equal(a.particles, b.particles)
    with pytest.raises(ValueError, match="got a torch.float32 tensor"):
        afdps.sample(GM, A2, Y2, 0.5, seed=torch.tensor([1.0, 2.0]), **kw)
    with pytest.raises(ValueError, match=r"got a tensor of shape \(2, 1\)"):  # (as an array of that shape is)
        afdps.sample(GM, A2, Y2, 0.5, seed=torch.tensor([[1], [2]]), **kw)
    with pytest.raises(ValueError, match=r"seed must be an int or None \(one stream draws all 2 samples\)"):
        afdps.sample_prior(GM, 2, num_steps=3, seed=[1, 2])
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64, got torch.float16"):
        afdps.sample_prior(GM, 2, num_steps=3, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"y has values beyond float32's range \(the largest magnitude is 1e\+39\)"):
        afdps.sample(GM, A2, torch.full((1, 1), 1e39, dtype=torch.float64), 0.5, **kw)
    y = Y2.clone()
    plan = prepare(GM, A2, y, 0.5, num_particles=4, num_steps=2, seed=0)
    y.zero_()
    assert torch.equal(plan.y[:, 0], Y2)
    state = init(plan)
    state, _ = step(state, plan)  # (runs on the plan's own y)
