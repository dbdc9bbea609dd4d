"""AFDPS against exact posteriors (spec section 8): Gaussian-mixture priors with dense operators.

How the tolerances are set. Each configuration runs R independent replicates (the batch holds R copies
of the measurement with R different seeds). Per replicate we compute the weighted mean, covariance and
posterior mode weights; across replicates we take their average and its standard error
SE = std / sqrt(R). A quantity passes when |average - exact| <= Z * SE with Z = 5 (for R = 10,
Student's t with 9 degrees of freedom exceeds 5 with probability 7.4e-4 per quantity). The file checks about
2,000 quantities (a 16-D run 155: 16 means, 136 covariance entries, 3 mode weights; 12 such runs and 13 2-D runs
of 8), so with fresh seeds one or two would be expected beyond 5 SE by chance alone: this is a per-quantity rule,
not a family-wise one. The seeds are fixed, so the suite is deterministic; no case was widened to pass. There is no
allowance for time-discretisation bias: the step counts below were chosen so that it is below the Monte-Carlo
resolution (measured: every quantity within 4.75 SE, most within 3). Each test also requires SE <= MAX_SE (power:
a noisy method cannot pass by being vague, since the rule divides by an SE the run itself estimates): 0.05, except
eta = 1 without tempering (0.1: its weights have by far the largest variance, as the spec notes; at its measured SE,
0.06 on means and 0.08 on covariance entries, this case resolves biases above about 0.3 to 0.4 only) and the 16-D
tempered eta = 1 case (0.02 with the potentials "noisy" and "inflated", about twice their measured 0.010 and
0.009; "scaled", with half the particles, measured 0.034 and keeps 0.05).

The target is the posterior under the prior diffused to tau_min (what the sampler targets exactly).
"""
import math

import pytest
import torch

import afdps
from afdps import ops
from afdps.priors import GaussianMixture

pytestmark = pytest.mark.slow

R = 10
Z = 5.0


def _mixture_2d():
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]])
    covs = torch.stack([0.3 * torch.eye(2), torch.tensor([[0.5, 0.2], [0.2, 0.3]]), 0.2 * torch.eye(2)])
    return GaussianMixture(means, covs, torch.tensor([0.3, 0.5, 0.2]))


def _mixture_16d():
    g = torch.Generator().manual_seed(16)
    d, K = 16, 3
    means = 0.4 * torch.randn(K, d, generator=g, dtype=torch.float64)
    L = 0.3 * torch.randn(K, d, d, generator=g, dtype=torch.float64)
    covs = L @ L.transpose(-1, -2) / d + 0.1 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(means, covs, torch.tensor([0.25, 0.4, 0.35])), torch.randn(8, d, generator=g, dtype=torch.float64) / math.sqrt(d)


def _replicate_stats(result, post):
    w = result.weights  # (R, N)
    p = result.particles.double()
    m = (w[..., None] * p).sum(1)
    dev = p - m[:, None]
    cov = torch.einsum("rn,rni,rnj->rij", w, dev, dev)
    resp = post.component_probabilities(p)  # (R, N, K)
    modes = (w[..., None] * resp).sum(1)
    return m, cov, modes


def _check(result, post, max_se, what):
    m, cov, modes = _replicate_stats(result, post)
    exact = (post.mean(), post.covariance(), post.weights)
    iu = torch.triu_indices(cov.shape[-1], cov.shape[-1])
    for name, est, ex in (("mean", m, exact[0]), ("cov", cov[:, iu[0], iu[1]], exact[1][iu[0], iu[1]]),
                          ("mode weight", modes, exact[2])):
        avg, se = est.mean(0), est.std(0) / math.sqrt(est.shape[0])
        err = (avg - ex).abs()
        worst = int(torch.argmax(err - Z * se))
        assert bool((err <= Z * se + 1e-9).all()), (  # 1e-9: float64 round-off where SE is 0
            f"{what}: {name}[{worst}] = {float(avg[worst]):.4f} vs exact {float(ex[worst]):.4f} "
            f"(SE {float(se[worst]):.4f}, allowed {Z} SE)")
        assert float(se.max()) <= max_se, f"{what}: {name} standard error {float(se.max()):.4f} > {max_se}"


# The settings these cases were measured with, pinned (the defaults of afdps.sample are tuned for learned
# priors and may change): the paper's potential, no tempering, a uniform time grid, unless a case says so.
PINNED = dict(potential="noisy", tempering="none", time_power=1.0, method="sde", eta=1.0)


def _run(prior, op, y, sigma_y, N, K, **kw):
    ys = y.expand(R, *y.shape[1:]).contiguous()
    return afdps.sample(prior, op, ys, sigma_y, num_particles=N, num_steps=K, seed=list(range(100, 100 + R)),
                        dtype=torch.float64, **{**PINNED, **kw})


A2 = ops.Dense(torch.tensor([[1.0, 0.5]]))
Y2 = torch.tensor([[0.3]])


# (options, sigma_y, steps, MAX_SE).
CASES_2D = {
    # The paper's method. Its log-weight increments carry the stiff term 0.5 V^2 |grad mu|^2, whose
    # left-point discretisation error grows like (h beta ||A||^2 / sigma_y^2)^2 per step: at sigma_y = 0.5
    # and 800 steps we measured a bias of 0.15 in a posterior mean; at sigma_y = 1 (N = 4000) a bias of
    # 0.13 in a covariance entry (exact 1.27) at 400 and 800 steps, 0.06 (within 1 SE) at 1600 steps.
    # More steps also mean more resampling events, hence the larger SE allowed. Tempering (below)
    # removes most of the bias at sigma_y = 0.5 with 400 steps.
    "afdps-sde eta=1": (dict(method="sde", eta=1.0), 1.0, 1600, 0.1),
    "fk-corrector eta=0.5": (dict(method="sde", eta=0.5), 0.5, 200, 0.05),
    "afdps-ode + corrector": (dict(method="ode", corrector_steps=1, corrector_snr=0.1), 0.5, 200, 0.05),
    # r 0.1 for the first half of the steps, 0.2 for the rest (the default; docs/quality.md). A constant r = 0.3, or 0.1
    # then 0.3, fails this case (mean[1] -0.5051 and -0.5062 against the exact -0.5332, 6 SE): the
    # unadjusted corrector's bias grows with its step, and a large step late is what biases the end.
    "afdps-ode + corrector r 0.1 then 0.2": (dict(method="ode", corrector_snr=(0.1, 0.2)), 0.5, 200, 0.05),
    "afdps-sde eta=1 tempered": (dict(method="sde", eta=1.0, tempering="linear"), 0.5, 400, 0.05),
    "eta=0.5 euler guidance": (dict(method="sde", eta=0.5, guidance="euler"), 0.5, 200, 0.05),
}


@pytest.mark.parametrize("case", list(CASES_2D))
def test_2d_mixture_posterior(case):
    opts, sy, K, max_se = CASES_2D[case]
    gm = _mixture_2d()
    post = gm.diffused(gm.schedule.tau_min).posterior(A2, Y2[0], sy)
    # eta = 1 without tempering needs more particles (its weights have by far the largest variance).
    N = 4000 if case == "afdps-sde eta=1" else 2000
    r = _run(gm, A2, Y2, sy, N=N, K=K, **opts)
    _check(r, post, max_se, what=case)


CASES_16D = {
    "fk-corrector eta=0.5": (dict(method="sde", eta=0.5), 1.0, 200, 0.05),
    "afdps-ode + corrector": (dict(method="ode", corrector_snr=0.1), 1.0, 200, 0.05),
    "afdps-ode + corrector r 0.1 then 0.2": (dict(method="ode", corrector_snr=(0.1, 0.2)), 1.0, 200, 0.05),
    "afdps-sde eta=1 tempered": (dict(method="sde", eta=1.0, tempering="linear"), 1.0, 200, 0.02),
}


@pytest.mark.parametrize("case", list(CASES_16D))
def test_16d_mixture_posterior_dense_operator(case):
    opts, sy, K, max_se = CASES_16D[case]
    gm, M = _mixture_16d()
    A = ops.Dense(M)
    x0 = 0.5 * (gm.means[0] + gm.means[1])[None]  # between two modes: a multimodal posterior
    y = A.measure(x0, sy, torch.Generator().manual_seed(4))
    post = gm.diffused(gm.schedule.tau_min).posterior(A, y[0], sy)
    r = _run(gm, A, y, sy, N=1000, K=K, **opts)
    _check(r, post, max_se, what=case)


# Spec section 9: every potential family ends at mu, so the weights stay exact. Each new family against
# the same exact posteriors, with the same settings and tolerances as its method's "noisy" case above,
# except the step count of "scaled": its potential lam mu(x / alpha) is 1 / alpha^2 times stiffer at high
# noise (alpha(T) = 0.0066), and with the noisy case's steps its time-discretisation bias exceeded the
# Monte-Carlo resolution (measured on the 2-D case: FK covariance entry off by 0.076 at 200 steps, 0.039
# at 800; ODE mean standard error 0.19 at 200 steps from weight degeneracy, 0.015 at 800). So "scaled"
# runs STEPS_FACTOR times the steps.
# The ODE runs here with its default corrector, r 0.1 then 0.2, whose first half is the constant r = 0.1 of the
# "noisy" cases above (until 2026-12-06 the constant r = 0.1 ran here too: 51 s of the suite for no code path the
# schedule does not take).
STEPS_FACTOR = {"scaled": 4, "inflated": 1}
POTENTIAL_METHODS = {
    "afdps-sde eta=1 tempered": ("afdps-sde eta=1 tempered", "afdps-sde eta=1 tempered"),
    "fk-corrector eta=0.5": ("fk-corrector eta=0.5", "fk-corrector eta=0.5"),
    "afdps-ode + corrector r 0.1 then 0.2": ("afdps-ode + corrector r 0.1 then 0.2",
                                             "afdps-ode + corrector r 0.1 then 0.2"),
}


@pytest.mark.parametrize("potential", ["scaled", "inflated"])
@pytest.mark.parametrize("case", list(POTENTIAL_METHODS))
def test_2d_mixture_posterior_each_potential(case, potential):
    opts, sy, K, max_se = CASES_2D[POTENTIAL_METHODS[case][0]]
    gm = _mixture_2d()
    post = gm.diffused(gm.schedule.tau_min).posterior(A2, Y2[0], sy)
    # "scaled" runs 4x the steps, with half the particles where its standard errors stay below MAX_SE
    # (measured: at N = 1000 the eta = 1 case's mean standard error was 0.065 > 0.05)
    N = 1000 if potential == "scaled" and opts.get("eta") != 1.0 else 2000
    r = _run(gm, A2, Y2, sy, N=N, K=K * STEPS_FACTOR[potential], potential=potential, **opts)
    _check(r, post, max_se, what=f"{case}, potential={potential}")


@pytest.mark.parametrize("potential", ["scaled", "inflated"])
@pytest.mark.parametrize("case", list(POTENTIAL_METHODS))
def test_16d_mixture_posterior_each_potential(case, potential):
    opts, sy, K, max_se = CASES_16D[POTENTIAL_METHODS[case][1]]
    gm, M = _mixture_16d()
    A = ops.Dense(M)
    x0 = 0.5 * (gm.means[0] + gm.means[1])[None]
    y = A.measure(x0, sy, torch.Generator().manual_seed(4))
    post = gm.diffused(gm.schedule.tau_min).posterior(A, y[0], sy)
    N = 500 if potential == "scaled" else 1000
    if potential == "scaled":  # half the particles: about sqrt(2) times the SE (measured 0.034 on the eta = 1 case)
        max_se = max(max_se, 0.05)
    r = _run(gm, A, y, sy, N=N, K=K * STEPS_FACTOR[potential], potential=potential, **opts)
    _check(r, post, max_se, what=f"{case}, potential={potential}")


def test_tweedie_potential_exact_posteriors():
    """The Tweedie potential lam mu(x0_hat(x)) (spec section 9; gradient through the mixture's score by
    autograd) with eta = 0.5 and linear tempering: the 2-D and 16-D posteriors within the same tolerances as
    the FK case (measured passing at the FK case's 200 steps)."""
    gm = _mixture_2d()
    post = gm.diffused(gm.schedule.tau_min).posterior(A2, Y2[0], 0.5)
    r = _run(gm, A2, Y2, 0.5, N=2000, K=200, potential="tweedie", method="sde", eta=0.5, tempering="linear")
    _check(r, post, 0.05, what="tweedie 2-D")
    gm16, M = _mixture_16d()
    A = ops.Dense(M)
    y = A.measure(0.5 * (gm16.means[0] + gm16.means[1])[None], 1.0, torch.Generator().manual_seed(4))
    post = gm16.diffused(gm16.schedule.tau_min).posterior(A, y[0], 1.0)
    r = _run(gm16, A, y, 1.0, N=1000, K=200, potential="tweedie", method="sde", eta=0.5, tempering="linear")
    _check(r, post, 0.05, what="tweedie 16-D")


def test_adaptive_tempering_exact_posterior_16d():
    """tempering="adaptive" (each replicate's lam chosen from its own particles by the ESS rule; measured:
    lam about 0.32 after the first step and 1 from the third, a little different per replicate, so the
    per-image guidance path runs) with FK eta = 0.5: the 16-D posterior within the FK case's tolerances."""
    gm, M = _mixture_16d()
    A = ops.Dense(M)
    y = A.measure(0.5 * (gm.means[0] + gm.means[1])[None], 1.0, torch.Generator().manual_seed(4))
    post = gm.diffused(gm.schedule.tau_min).posterior(A, y[0], 1.0)
    r = _run(gm, A, y, 1.0, N=1000, K=200, method="sde", eta=0.5, tempering="adaptive")
    assert 0.0 < float(r.lam[:, 1].min()) < 1.0 and len(set(r.lam[:, 1].tolist())) > 1
    _check(r, post, 0.05, what="adaptive tempering 16-D")
