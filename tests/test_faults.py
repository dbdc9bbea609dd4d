"""Fault injection (issue 10): NaN/inf score rows at random steps and particles, for every method, both
backends, weights on and off, with and without resampling, denoise on and off.

The rule (engine/sampler.py, spec section 5): a particle whose state, score or log-weight increment is
not finite dies (log-weight -inf) in every mode; it never enters mean, std or best; an image whose
particles all die raises one error naming the image, the step and the cause. Each case checks what the
rule says: outputs finite where live particles remain, the number of dead particles, the error otherwise.
The outcome of every case is also written to docs/reliability.md (tests/test_reliability.py).
"""
import itertools
import random

import pytest
import torch

import afdps
from afdps import ops
from afdps.baselines import dps
from afdps.kernels._triton import HAS_TRITON
from afdps.priors import GaussianMixture

B, N, K = 2, 8, 6
A2 = ops.Dense(torch.tensor([[1.0, 0.5]]))
Y2 = torch.tensor([[0.3], [-1.0]])


class FaultyPrior:
    """A 2-D Gaussian mixture whose score is replaced by ``value`` at ``faults``: ``{call: [(b, i), ...]}``
    (``call`` counts score evaluations from 0; ``b, i`` an image and a particle)."""

    def __init__(self, faults, value=float("nan")):
        self.gm = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.5, 1.0]]),
                                  torch.stack([0.3 * torch.eye(2), 0.5 * torch.eye(2)]), torch.tensor([0.4, 0.6]))
        self.event_shape, self.schedule = self.gm.event_shape, self.gm.schedule
        self.faults, self.value, self.calls = faults, value, 0

    def score(self, x, t):
        s = self.gm.score(x, t)
        for b, i in self.faults.get(self.calls, ()):
            s[b, i] = self.value
        self.calls += 1
        return s


# One score call per step (two with the ODE's corrector): the potential is pinned to "scaled", since the
# default for eta = 0.5 (the Tweedie potential) calls the score twice per step.
METHODS = {"sde": dict(method="sde", eta=1.0, tempering="linear", potential="scaled"),
           "fk": dict(method="sde", eta=0.5, potential="scaled"), "ode": dict(method="ode", corrector_steps=1)}
BACKENDS = ["torch"] + (["triton"] if HAS_TRITON else [])
# Every combination on the reference backend; on the Triton kernels (under the interpreter on CPUs, seconds
# a case) every method x weights x resampling, with denoise on in half of them.
CASES = list(itertools.product(METHODS, ["torch"], [True, False], ["systematic", "none"], [False, True]))
CASES += [(m, "triton", w, r, w != (r == "none")) for m, w, r in
          itertools.product(METHODS, [True, False], ["systematic", "none"]) if "triton" in BACKENDS]


def _calls(method, denoise):
    return K * (2 if method == "ode" else 1) + int(denoise)


@pytest.mark.parametrize("method,backend,weights,resample,denoise", CASES)
def test_one_bad_row_kills_one_particle(method, backend, weights, resample, denoise):
    """A NaN or inf score row at a random call and particle of image 0: finite best/mean/std for both
    images; the particle is dead at the end unless a resampling after its death replaced it."""
    rng = random.Random(str((method, backend, weights, resample, denoise)))
    call, i = rng.randrange(_calls(method, denoise)), rng.randrange(N)
    value = rng.choice([float("nan"), float("inf"), -float("inf")])
    prior = FaultyPrior({call: [(0, i)]}, value)
    r = afdps.sample(prior, A2, Y2, 0.5, num_particles=N, num_steps=K, seed=3, weights=weights, resample=resample,
                     denoise=denoise, backend=backend, **METHODS[method])
    for field in (r.best, r.mean, r.std):
        assert torch.isfinite(field).all(), (call, i, value, field)
    assert int(r.dead[1]) == 0 and torch.isfinite(r.log_weights[1]).all()
    replaced = bool(r.resampled[min(call // (2 if method == "ode" else 1), K - 1):, 0].any())
    if not replaced:
        assert int(r.dead[0]) == 1 and r.log_weights[0, i] == -float("inf"), (call, i, r.log_weights[0])
    assert int(r.dead[0]) <= 1
    if not weights:  # the unweighted baseline: uniform weights over the live particles
        w = r.weights[0]
        live = torch.isfinite(r.log_weights[0])
        torch.testing.assert_close(w[live], torch.full_like(w[live], 1.0 / int(live.sum())))


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_particle_dead_raises_naming_image_step_and_cause(method, backend):
    step = 2
    call = step * (2 if method == "ode" else 1)
    prior = FaultyPrior({call: [(1, i) for i in range(N)]})
    with pytest.raises(FloatingPointError, match=rf"every particle of image 1 has died after step {step} "
                                                 r"\(tau=.*\): non-finite score: the prior's score returned NaN"):
        afdps.sample(prior, A2, Y2, 0.5, num_particles=N, num_steps=K, seed=0, backend=backend, **METHODS[method])


@pytest.mark.parametrize("weights", [True, False])
def test_nan_final_denoising_score_is_named(weights):
    prior = FaultyPrior({K: [(0, i) for i in range(N)]})
    with pytest.raises(FloatingPointError, match=r"image 0 has died in the final state \(the final denoising\): "
                                                 r"non-finite score"):
        afdps.sample(prior, A2, Y2, 0.5, num_particles=N, num_steps=K, seed=0, denoise=True, weights=weights,
                     potential="scaled")


def test_exploding_increments_are_named():
    """A stiff explicit guidance step (sigma_y 1e-6): the log-weight increments overflow."""
    op = ops.Dense(torch.tensor([[40.0, 20.0]]))
    with pytest.raises(FloatingPointError, match=r"image 0 has died after step 1 .*non-finite increment") as caught:
        afdps.sample(FaultyPrior({}), op, Y2, 1e-6, num_particles=4, num_steps=2, seed=0, eta=1.0, guidance="euler",
                     potential="noisy", tempering="none", time_power=1.0)
    # the hint names only what this run has not tried: its step count, exact guidance, tempering, and a sigma_y
    # below 8-bit quantisation
    assert ("(try more steps (it had 2), or guidance='exact', or tempering='linear', or a larger sigma_y: 1e-06 is "
            "below the noise of 8-bit quantisation") in str(caught.value)
    assert caught.value.image == 0 and "{image}" in caught.value.template
    from types import SimpleNamespace

    from afdps.engine.sampler import _death_hint
    tried = SimpleNamespace(num_steps=100, guidance="exact", op=op, tempering="linear", sigma_y=0.05)
    assert _death_hint(1, tried) == "the particles left the floating-point range (try more steps (it had 100))"


class _NaNGuidance(ops.Dense):
    """A dense operator whose exact guidance flow returns NaN for every particle of image 0 from its ``at``-th
    call: a state that is not finite while the step's score and log-weight increments are."""

    def __init__(self, matrix, at):
        super().__init__(matrix)
        self.at, self.calls = at, 0

    def exact_guidance_step(self, x, y, h, kappa, **kw):
        out = super().exact_guidance_step(x, y, h, kappa, **kw)
        self.calls += 1
        if self.calls > self.at:
            out = out.clone()
            out[0] = float("nan")
        return out


def test_non_finite_states_are_named():
    """The end-of-step state check: the guidance flow's NaN kills image 0's particles with the cause "non-finite
    state" (the score and the increments of that step were finite)."""
    op = _NaNGuidance(torch.tensor([[1.0, 0.5]]), at=0)  # lam is 0 at step 0: the first flow is step 1's
    with pytest.raises(FloatingPointError, match=r"image 0 has died after step 1 .*non-finite state"):
        afdps.sample(FaultyPrior({}), op, Y2, 0.5, num_particles=4, num_steps=3, seed=0, guidance="exact",
                     **METHODS["sde"])
    # the ODE with two corrector steps: the second scores the first's NaN state, and a NaN state's score is NaN for
    # any prior; the death is the state's, not the score's (a review of the corrector's score attribution)
    for steps in (1, 2):
        op = _NaNGuidance(torch.tensor([[1.0, 0.5]]), at=0)
        with pytest.raises(FloatingPointError, match=r"image 0 has died .*: non-finite state: "):
            afdps.sample(FaultyPrior({}), op, Y2, 0.5, num_particles=4, num_steps=3, seed=0, guidance="exact",
                         method="ode", corrector_steps=steps)


def test_demo_that_dies_fails_and_writes_nothing(tmp_path, capsys):
    """A demo whose particles all die (no tempering and sigma_y 1e-9: the first step's increments overflow) exits
    1 with one sentence and writes no image or metrics.json. (The issue's probe, `afdps demo --eta -1`, is now
    refused at the entry: eta must be >= 0.)"""
    from afdps import cli

    out = tmp_path / "d"
    rc = cli.main(["demo", "--eta", "1", "--tempering", "none", "--sigma-y", "1e-9", "--size", "64", "--particles", "2",
                   "--steps", "2", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "died after step 0 (tau=1 -> 0.2507): non-finite increment" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_a_prior_that_raises_mid_run_propagates():
    class Broken(FaultyPrior):
        def score(self, x, t):
            if self.calls == 3:
                raise RuntimeError("the network broke (simulated)")
            return super().score(x, t)

    with pytest.raises(RuntimeError, match="simulated"):
        afdps.sample(Broken({}), A2, Y2, 0.5, num_particles=N, num_steps=K, seed=0, potential="scaled")


class FaultyEps(torch.nn.Module):
    """A noise-prediction 'network' (the mixture's VP score) returning NaN for the rows in ``bad``."""

    def __init__(self, bad):
        super().__init__()
        self.gm, self.bad = FaultyPrior({}).gm, bad

    def forward(self, x, k):
        tau = (float(k[0]) + 1.0) / 1000.0
        eps = -float(self.gm.schedule.sigma(tau)) * self.gm.score(x, tau)
        return torch.where(self.bad[: x.shape[0], None], float("nan"), eps)


def test_dps_one_nan_row_dies_all_nan_rows_raise():
    bad = torch.tensor([False, True, False, False])  # image 0 sample 1 (2 samples per image)
    prior = afdps.priors.EpsilonModel(FaultyEps(bad), event_shape=(2,))
    r = dps(prior, A2, Y2, 0.5, num_steps=5, zeta=0.5, num_samples=2, seed=0)
    assert r.dead.tolist() == [1, 0] and torch.isfinite(r.best).all() and torch.isfinite(r.mean).all()
    prior = afdps.priors.EpsilonModel(FaultyEps(torch.tensor([False, False, True, True])), event_shape=(2,))
    with pytest.raises(FloatingPointError, match=r"every DPS sample of image 1 has died at step 0 .*network returned NaN"):
        dps(prior, A2, Y2, 0.5, num_steps=5, zeta=0.5, num_samples=2, seed=0)
