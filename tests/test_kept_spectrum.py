"""The sampler's operator work per step with a circular blur (issue 12: the time outside the network).

Two savings, each against an independent path:

- the potential at a step's two grid times ("scaled": the measurement scales with alpha) comes from the gradient's
  own pass over the spectrum (Parseval), instead of a separate ``A x`` and two pixel norms;
- the guidance step's result spectrum is kept for the next step's gradient (``ParticleState.spectrum``), so a
  step transforms the particles once instead of twice (three times before both).

The reference path is :class:`_PixelBlur`: the same blur through the base class's generic code (residual and both
norms in pixels, nothing kept). In float64 the two runs agree to rounding (tolerance 1e-9 on particles and
log-weights: the paths differ by a few FFT round-offs of 1e-16 per step, amplified by at most the 1/sigma_y^2 = 1e2
of the potential over 8 steps; a wrong norm, a stale spectrum or a missed gather moves them by O(1)).
"""
import dataclasses

import pytest
import torch
from tolerances import DEVICE

import afdps
from afdps import ops
from afdps.engine import sampler as sm
from afdps.kernels._triton import HAS_TRITON
from afdps.priors import SpectralGaussian

SHAPE = (3, 8, 8)


def _prior():
    C, H, W = SHAPE
    power = torch.linspace(1.0, 0.01, H * (W // 2 + 1)).reshape(1, H, W // 2 + 1).expand(C, -1, -1).clone()
    return SpectralGaussian(torch.zeros(C), SpectralGaussian.symmetric(power, W), W)


class _PixelBlur(ops.LinearOperator):
    """A :class:`Blur` through the base class's generic paths: the residual and its norms in pixels, no kept
    spectrum, the guidance step from ``spectral_apply``."""

    def __init__(self, blur):
        super().__init__()
        self.b = blur
        self.input_shape = self.output_shape = blur.input_shape

    def A(self, x):
        return self.b.A(x)

    def A_adjoint(self, y):
        return self.b.A_adjoint(y)

    def frobenius_sq(self):
        return self.b.frobenius_sq()

    def spectral_apply(self, v, fn):
        return self.b.spectral_apply(v, fn)

    def spectral_trace(self, fn):
        return self.b.spectral_trace(fn)

    def output_spectral_apply(self, u, fn):
        return self.b.output_spectral_apply(u, fn)


def _blur():
    return ops.Blur(ops.gaussian_kernel(5, 1.0), SHAPE)


def _y(op, B=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(5)
    return op.measure(torch.randn(B, *SHAPE, generator=g, dtype=dtype) * 0.5, 0.1, g).to(DEVICE)


@pytest.mark.parametrize("kw, keeps", [
    (dict(potential="scaled"), True),
    (dict(potential="noisy", eta=1.0), True),
    (dict(method="ode", potential="scaled"), True),
    (dict(potential="inflated"), False),  # d != 0: the weighted residual is not the kernel's
    (dict(potential="tweedie"), False),
    (dict(potential="scaled", tempering="adaptive-linear"), False),  # a lam per image: guidance per image
    (dict(potential="scaled", guidance="implicit"), False),
    (dict(potential="scaled", guidance="euler"), False),
])
def test_plan_keeps_the_spectrum_where_it_can(kw, keeps):
    op = _blur()
    assert sm.prepare(_prior(), op, _y(op), 0.1, num_particles=4, num_steps=3, seed=0, **kw).keep_spectrum is keeps
    assert not sm.prepare(_prior(), _PixelBlur(op), _y(op), 0.1, num_particles=4, num_steps=3, seed=0,
                          **kw).keep_spectrum
    # (the valid-boundary blur has no exact guidance flow, so no plan could keep its spectrum; its flag says so too)
    assert not ops.Blur(ops.gaussian_kernel(3, 1.0), SHAPE, boundary="valid").keeps_spectrum


def _count_transforms(monkeypatch, N):
    """Count rfft2 / irfft2 of particle-shaped tensors (B, N, ...) by the blur (the measurements are (B, 1, ...))."""
    counts = {"fft": 0, "ifft": 0}
    fft, ifft = ops.Blur._fft, ops.Blur._ifft

    def counted(name, fn):
        def wrapper(self, t):
            if t.dim() == 5 and t.shape[1] == N:
                counts[name] += 1
            return fn(self, t)
        return wrapper

    monkeypatch.setattr(ops.Blur, "_fft", counted("fft", fft))
    monkeypatch.setattr(ops.Blur, "_ifft", counted("ifft", ifft))
    return counts


@pytest.mark.parametrize("kw, guided", [(dict(potential="scaled", eta=1.0), 4), (dict(potential="noisy", eta=0.5), 4),
                                        (dict(method="ode", potential="scaled"), 5)], ids=["sde-scaled", "fk-noisy", "ode"])
def test_one_forward_transform_per_step(monkeypatch, kw, guided):
    """A step transforms the particles once forward (for its guidance flow) and twice back (gradient, flow): the
    gradient reads the spectrum the previous step's flow kept, and the potential's two values come from the
    gradient's pass. Of K = 5 steps, ``guided`` run a flow (the SDE's first has lam = 0: no flow, nothing kept;
    the ODE's corrector flows at lam_1 > 0 from the first step)."""
    N, K = 4, 5
    op = _blur()

    def run():
        plan = sm.prepare(_prior(), op, _y(op, dtype=torch.float32), 0.1, num_particles=N, num_steps=K, seed=0,
                          dtype=torch.float32, **kw)
        state = sm.init(plan)
        counts.update(fft=0, ifft=0)
        while state.k < K:
            state, _ = sm.step(state, plan)
        return dict(counts)

    counts = _count_transforms(monkeypatch, N)
    gradients_transformed = K - (guided - 1)  # the flows run through the last step; each earlier one feeds a gradient
    assert run() == {"fft": guided + gradients_transformed, "ifft": K + guided}
    # without keeping the spectrum every gradient transforms (before this change A x took one more pair per step)
    object.__setattr__(op, "keeps_spectrum", False)
    assert run() == {"fft": K + guided, "ifft": K + guided}


BACKENDS = ["torch"] + (["triton"] if HAS_TRITON else [])


CASES = [("torch", dict(potential="scaled", eta=1.0)), ("torch", dict(potential="scaled", eta=0.5)),
         ("torch", dict(potential="noisy", eta=1.0)), ("torch", dict(method="ode", potential="scaled")),
         ("torch", dict(method="ode", potential="scaled", corrector="song")),
         # (nothing kept with d != 0: the blur's own spectral paths against the generic ones, and the gradient
         # without a value, which the inflated members' steps take)
         ("torch", dict(potential="inflated", eta=1.0)), ("torch", dict(method="ode", potential="inflated",
                                                                         corrector="song"))]
IDS = ["sde-scaled", "fk-scaled", "sde-noisy", "ode", "ode-song", "sde-inflated", "ode-song-inflated"]
if HAS_TRITON:  # the kernels under the interpreter take 5-6 s a run here (4 particles): the two that differ most
    CASES += [("triton", dict(potential="scaled", eta=1.0)), ("triton", dict(method="ode", potential="scaled"))]
    IDS += ["sde-scaled-triton", "ode-triton"]


@pytest.mark.interpreter
@pytest.mark.parametrize("backend, kw", CASES, ids=IDS)
def test_fast_blur_path_equals_the_generic_path(backend, kw):
    """The blur's path (spectral norms, kept spectra, moved with the particles at resampling) against the generic
    pixel path on the same problem, seeds and keys, float64; resampling at most steps (threshold 0.9)."""
    op = _blur()
    y = _y(op)
    n = 4 if backend == "triton" else 8  # the interpreter's time grows with the rows (8 particles: 18-23 s a case)
    opts = dict(num_particles=n, num_steps=8, seed=3, dtype=torch.float64, ess_threshold=0.9, backend=backend, **kw)
    fast = afdps.sample(_prior(), op, y, 0.1, **opts)
    slow = afdps.sample(_prior(), _PixelBlur(op), y, 0.1, **opts)
    assert bool(fast.resampled.any()), "no resampling: the gather of the kept spectra would go untested"
    assert torch.equal(fast.resampled, slow.resampled)
    torch.testing.assert_close(fast.particles, slow.particles, rtol=0, atol=1e-9)
    torch.testing.assert_close(fast.log_weights, slow.log_weights, rtol=0, atol=1e-9)


@pytest.mark.interpreter
@pytest.mark.parametrize("backend", BACKENDS)
def test_kept_spectrum_is_the_particles_spectrum_after_resampling(backend):
    """After every step (resampling included) the kept transform is rfft2 of the particles, row by row."""
    op = _blur()
    plan = sm.prepare(_prior(), op, _y(op), 0.1, num_particles=8, num_steps=6, seed=1, dtype=torch.float64,
                      potential="scaled", eta=1.0, ess_threshold=1.0, backend=backend)
    state = sm.init(plan)
    assert state.spectrum is None
    moved = False
    while state.k < plan.num_steps:
        state, info = sm.step(state, plan)
        moved |= bool(info.resampled.any())
        if state.k == 1:  # lam_0 = 0: the first step has no guidance flow, so nothing to keep
            assert state.spectrum is None
            continue
        assert state.spectrum is not None and state.spectrum.valid_for(state.x)
        torch.testing.assert_close(state.spectrum.X, torch.fft.rfft2(state.x, norm="ortho"), rtol=0, atol=1e-12)
    assert moved


def test_a_changed_state_is_transformed_again():
    """A caller who writes the particles in place, or replaces them, gets a step from the new particles: the
    kept spectrum of the old ones is not used (the same step as from a state without one, bit for bit)."""
    op = _blur()
    plan = sm.prepare(_prior(), op, _y(op), 0.1, num_particles=4, num_steps=4, seed=2, dtype=torch.float64,
                      potential="scaled", eta=1.0)
    state, _ = sm.step(sm.step(sm.init(plan), plan)[0], plan)  # (the first step, at lam = 0, keeps none)
    assert state.spectrum is not None
    for change in ("in place", "replaced"):
        st = dataclasses.replace(state, x=state.x.clone())
        st = dataclasses.replace(st, spectrum=sm._Kept.of_state(torch.fft.rfft2(st.x, norm="ortho"), st.x))
        if change == "in place":
            st.x.mul_(0.5)
        else:
            st = dataclasses.replace(st, x=st.x * 0.5)
        assert not st.spectrum.valid_for(st.x)
        got, _ = sm.step(st, plan)
        want, _ = sm.step(dataclasses.replace(st, x=st.x.clone(), spectrum=None), plan)
        assert torch.equal(got.x, want.x) and torch.equal(got.logw, want.logw)
    # and an unchanged state uses its spectrum: the same step to rounding
    got, _ = sm.step(state, plan)
    want, _ = sm.step(dataclasses.replace(state, spectrum=None), plan)
    torch.testing.assert_close(got.x, want.x, rtol=0, atol=1e-12)


def test_inference_mode_keeps_nothing_and_gives_the_same_run():
    """Under torch.inference_mode the particles have no version counter to show an in-place write, so nothing is
    kept (every gradient transforms again); the run equals the usual one to rounding (float64, 1e-9 as above)."""
    op = _blur()
    y = _y(op)
    opts = dict(num_particles=4, num_steps=5, seed=4, dtype=torch.float64, potential="scaled", eta=1.0)
    want = afdps.sample(_prior(), op, y, 0.1, **opts)
    with torch.inference_mode():
        got = afdps.sample(_prior(), op, y, 0.1, **opts)
        plan = sm.prepare(_prior(), op, y, 0.1, **opts)
        state, _ = sm.step(sm.step(sm.init(plan), plan)[0], plan)
    assert plan.keep_spectrum and state.spectrum is None
    torch.testing.assert_close(got.particles, want.particles, rtol=0, atol=1e-9)
    torch.testing.assert_close(got.log_weights, want.log_weights, rtol=0, atol=1e-9)
