"""The potential family of spec section 9 (engine/potentials.py) against dense linear algebra and autograd.

For a small dense operator every quantity has a closed form: ``nu = lam u^T W u / 2`` with ``u = A x - a y``
and ``W = (c I + d A A^T)^-1``; its gradient, Laplacian ``tr(A^T W A)``, the exact guidance flow
``x(h) = x* + expm(-h kappa F)(x - x*)`` of ``dx/dt = -kappa grad nu`` and the Stage-I Gaussian. Float64
throughout; tolerances are round-off sized (1e-9 relative), except the Stage-I moments, which are
Monte-Carlo (tolerance stated there).
"""
import math

import pytest
import torch

import afdps
from afdps import ops
from afdps.engine import potentials as pot

G = torch.Generator().manual_seed(5)
M = torch.randn(3, 4, generator=G, dtype=torch.float64)
OP = ops.Dense(M)
MEMBERS = [pot.Member(1.0, 0.5, 0.0), pot.Member(0.6, 0.3, 0.0), pot.Member(0.6, 0.3, 0.64)]


def _W(m):
    return torch.linalg.inv(m.c * torch.eye(3, dtype=torch.float64) + m.d * M @ M.T)


def _nu_over_lam(x, y, m):
    u = x @ M.T - m.a * y
    return 0.5 * ((u @ _W(m)) * u).sum(-1)


@pytest.mark.parametrize("m", MEMBERS, ids=["noisy", "scaled", "inflated"])
def test_gradient_value_and_laplacian(m):
    x = torch.randn(2, 5, 4, generator=G, dtype=torch.float64).requires_grad_(True)
    y = torch.randn(2, 1, 3, generator=G, dtype=torch.float64)
    nu = _nu_over_lam(x, y, m)
    (grad,) = torch.autograd.grad(nu.sum(), x)
    g, raw = pot.gradient(OP, x.detach(), y, m, with_value=True)
    torch.testing.assert_close(g, grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(pot.half_value(m, raw), nu.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(pot.value_from_Ax(OP, x.detach() @ M.T, y, m), nu.detach(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(pot.tempering_change(m, raw, 0.25), 0.25 * nu.detach(), rtol=1e-9, atol=1e-12)
    F = M.T @ _W(m) @ M
    assert pot.laplacian(OP, m) == pytest.approx(float(torch.trace(F)), rel=1e-10)


@pytest.mark.parametrize("op", [OP, ops.Blur(ops.gaussian_kernel(3, 0.8), (2, 5, 6)),
                                ops.Inpaint(ops.box_mask((5, 6), 2), (2, 5, 6))], ids=["dense", "blur", "inpaint"])
def test_gradient_gives_the_next_members_value_too(op):
    """``also=``: the potential of a step's other grid time (another ``a`` and ``s``) at the same particles, from the
    gradient's pass, equals :func:`value_from_Ax` at that member (the sampler's weights use both)."""
    m, m2 = MEMBERS[1], pot.Member(0.8, 0.4, 0.0)
    x = torch.randn(2, 5, *op.input_shape, generator=G, dtype=torch.float64)
    y = torch.randn(2, 1, *op.output_shape, generator=G, dtype=torch.float64)
    g, raw = pot.gradient(op, x, y, m, with_value=True, also=m2)
    g0, _ = pot.gradient(op, x, y, m)
    torch.testing.assert_close(g, g0, rtol=1e-12, atol=1e-12)
    ax = op.A(x)
    torch.testing.assert_close(pot.half_value(m, raw[0]), pot.value_from_Ax(op, ax, y, m), rtol=1e-10, atol=0)
    torch.testing.assert_close(pot.half_value(m2, raw[1]), pot.value_from_Ax(op, ax, y, m2), rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="also= takes a member with d = 0"):
        pot.gradient(op, x, y, m, with_value=True, also=MEMBERS[2])


@pytest.mark.parametrize("m", MEMBERS, ids=["noisy", "scaled", "inflated"])
def test_exact_guidance_step_is_the_flow(m):
    x = torch.randn(3, 4, generator=G, dtype=torch.float64)
    y = torch.randn(1, 3, generator=G, dtype=torch.float64)
    h, kappa = 0.7, 3.0
    F = M.T @ _W(m) @ M
    b = (M.T @ _W(m) @ (m.a * y[0]))
    # dx/dt = -kappa (F x - b): x(h) = x_p + expm(-h kappa F)(x - x_p) on range(F), x_p any solution
    E = torch.linalg.matrix_exp(-h * kappa * F)
    x_p = torch.linalg.lstsq(F, b[:, None]).solution[:, 0]
    want = x_p + (x - x_p) @ E.T
    torch.testing.assert_close(pot.guidance_step(OP, x, y, m, h, kappa), want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("m", MEMBERS[1:], ids=["scaled", "inflated"])
def test_stage1_sample_moments(m):
    """N(0, rho^2 I) exp(-lam nu): 20000 draws; every mean and covariance entry within 5 of its standard errors
    (:func:`_five_se`)."""
    lam, rho, n = 0.8, 1.3, 20000
    y = torch.randn(1, 1, 3, generator=G, dtype=torch.float64)
    F = M.T @ _W(m) @ M
    P = torch.eye(4, dtype=torch.float64) / rho**2 + lam * F
    C = torch.linalg.inv(P)
    mean = C @ (lam * M.T @ _W(m) @ (m.a * y[0, 0]))
    noise = torch.randn(1, n, 4, generator=G, dtype=torch.float64)
    _five_se(pot.stage1_sample(OP, y, m, lam, rho, noise)[0], mean, C)


def _five_se(x, mean, C):
    """Draws ``x (n, d)`` of N(mean, C): each mean entry within 5 standard errors ``sqrt(C_ii / n)``, each covariance
    entry within 5 of ``sqrt((C_ii C_jj + C_ij^2) / n)`` (Gaussian fourth moments). Per entry P(|z| > 5) = 5.7e-7,
    so over the 14 entries of a 4-D case a false alarm has odds below 1e-5 (the draws' seeds are fixed)."""
    n = x.shape[0]
    var = C.diagonal()
    assert bool(((x.mean(0) - mean).abs() <= 5 * torch.sqrt(var / n)).all()), (x.mean(0), mean)
    se = torch.sqrt((var[:, None] * var[None, :] + C.square()) / n)
    assert bool(((torch.cov(x.T) - C).abs() <= 5 * se + 1e-12).all()), (torch.cov(x.T), C)


@pytest.mark.parametrize("potential", ["noisy", "scaled", "inflated"])
def test_the_samplers_stage1_is_q_t_of_its_potential(potential):
    """``sampler.init`` draws Q_T of the run's own potential at its first grid time T (spec sections 3 and 9):
    N(0, rho^2 I) exp(-lam(T) nu_T) with y_T and Sigma_T from the spec's table, built here from the schedule's alpha
    and sigma, not from the code's members. The end-to-end posterior tests cannot see this: near tau = T the
    dynamics forget their start (a run begun from N(0, I) instead passed all of them). Untempered (lam(T) = 1),
    so the likelihood shapes Q_T; sigma_y = 0.5, 20000 particles of one image, the 5-SE rule of :func:`_five_se`."""
    from afdps.engine import sampler as sm
    from afdps.priors import GaussianMixture

    gm = GaussianMixture(torch.tensor([[-1.0, 0.0, 0.5, 0.2], [1.5, 1.0, 0.0, -0.3]], dtype=torch.float64),
                         torch.stack([0.3 * torch.eye(4), 0.5 * torch.eye(4)]).double(), torch.tensor([0.4, 0.6]))
    sy, n = 0.5, 20000
    y = torch.randn(1, 3, generator=G, dtype=torch.float64)
    plan = sm.prepare(gm, OP, y, sy, method="sde", eta=1.0, potential=potential, tempering="none", num_particles=n,
                      num_steps=10, seed=3, dtype=torch.float64)
    T = plan.times[0]
    alpha, sigma = float(gm.schedule.alpha(T)), float(gm.schedule.sigma(T))
    a, S = {"noisy": (1.0, sy**2 * torch.eye(3, dtype=torch.float64)),
            "scaled": (alpha, (alpha * sy) ** 2 * torch.eye(3, dtype=torch.float64)),
            "inflated": (alpha, (alpha * sy) ** 2 * torch.eye(3, dtype=torch.float64) + sigma**2 * M @ M.T)}[potential]
    Si = torch.linalg.inv(S)
    rho = gm.schedule.rho
    C = torch.linalg.inv(torch.eye(4, dtype=torch.float64) / rho**2 + M.T @ Si @ M)  # lam(T) = 1
    mean = C @ (M.T @ Si @ (a * y[0]))
    assert plan.lam[0] == 1.0 and T == pytest.approx(float(gm.schedule.T))
    _five_se(sm.init(plan).x[0], mean, C)


def test_members_end_at_mu_and_follow_the_schedule():
    sched = afdps.VPSchedule()
    times = sched.timesteps(5).tolist()
    for kind in pot.POTENTIALS:
        path = pot.members(kind, sched, times, 0.1)
        assert len(path) == 6 and path[-1] == pot.Member(1.0, 0.1, 0.0)
    t = times[2]
    alpha, sigma = float(sched.alpha(t)), float(sched.sigma(t))
    assert pot.members("scaled", sched, times, 0.1)[2] == pot.Member(alpha, alpha * 0.1, 0.0)
    assert pot.members("inflated", sched, times, 0.1)[2] == pot.Member(alpha, alpha * 0.1, sigma**2)
    assert set(pot.members("noisy", sched, times, 0.1)) == {pot.Member(1.0, 0.1, 0.0)}


def test_potential_is_validated_and_needs_a_diagonalisable_operator():
    gm = afdps.priors.GaussianMixture(torch.zeros(1, 4), torch.eye(4)[None], torch.ones(1))
    y = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="potential='bent' is not one of 'noisy', 'scaled', 'inflated'"):
        afdps.sample(gm, OP, y, 0.1, potential="bent", num_steps=2, num_particles=2)

    class Opaque(ops.LinearOperator):
        input_shape, output_shape = (4,), (3,)

        def A(self, x):
            return x @ M.T

        def A_adjoint(self, v):
            return v @ M

        def frobenius_sq(self):
            return float(M.square().sum())

    with pytest.raises(ValueError, match="potential='inflated' weights the residual by a function of A A"):
        afdps.sample(gm, Opaque(), y, 0.1, potential="inflated", guidance="euler", num_steps=2, num_particles=2)


def test_tweedie_terms_against_autograd():
    """g = grad(mu(x0_hat(x, t))) by autograd on a mixture prior, and the two potential values (the second
    at the next time, or mu itself at the last step)."""
    gm = afdps.priors.GaussianMixture(torch.zeros(1, 4, dtype=torch.float64),
                                      (0.5 * torch.eye(4, dtype=torch.float64))[None], torch.ones(1))
    sched = gm.schedule
    x = torch.randn(2, 3, 4, generator=G, dtype=torch.float64)
    y = torch.randn(2, 1, 3, generator=G, dtype=torch.float64)
    t, tn, sy = 0.6, 0.5, 0.2

    def half(z, tau):
        x0 = (z + float(sched.sigma(tau)) ** 2 * gm.score(z, tau)) / float(sched.alpha(tau))
        return ((x0 @ M.T - y) ** 2).sum(-1) / (2 * sy**2)

    xg = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(half(xg, t).sum(), xg)
    s, g, hk, hn, bad = pot.tweedie_terms(gm, OP, x, y, t, tn, sy, last=False)
    assert not bad.any()
    torch.testing.assert_close(s, gm.score(x, t))
    torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hk, half(x, t).detach())
    torch.testing.assert_close(hn, half(x, tn).detach())
    _, _, _, h_last, _ = pot.tweedie_terms(gm, OP, x, y, t, tn, sy, last=True)
    torch.testing.assert_close(h_last, ((x @ M.T - y) ** 2).sum(-1) / (2 * sy**2))
    # the damped step is Euler for small steps and bounded for huge ones
    step = pot.damped_guidance_step(OP, x, g, 1e-9, 1.0, sy**2)
    torch.testing.assert_close((x - step) / 1e-9, g, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(pot.damped_guidance_step(OP, x, g, 1e9, 1.0, sy**2)).all()
