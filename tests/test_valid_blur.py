"""Blur with a real boundary (``Blur(..., boundary="valid")``): the operator against ``conv2d`` and dense
linear algebra, its conjugate-gradient guidance step and perturbation-optimisation Stage I against dense
solves, and the sampler with it against an exact posterior."""
import math

import pytest
import torch
import torch.nn.functional as F

import afdps
from afdps import ops
from afdps.engine.ops import CGError, solve_cg
from afdps.priors import GaussianMixture

from test_sampler_exact import R, _check, _mixture_16d


def _kernel(kh=3, kw=5, seed=0):
    k = torch.rand(kh, kw, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return k / k.sum()


def test_valid_blur_is_conv2d_without_padding():
    k = _kernel()
    op = ops.Blur(k, (2, 9, 10), boundary="valid")
    assert isinstance(op, ops.ValidBlur) and isinstance(op, ops.Blur) and not op.supports_exact
    assert op.output_shape == (2, 7, 6)
    x = torch.randn(4, 2, 9, 10, dtype=torch.float64)
    ref = F.conv2d(x.reshape(-1, 1, 9, 10), k[None, None]).reshape(4, 2, 7, 6)
    torch.testing.assert_close(op.A(x), ref, rtol=0, atol=1e-13)
    # a smaller window is the centred crop of the valid part
    small = ops.Blur(k, (2, 9, 10), boundary="valid", output_size=(5, 4))
    torch.testing.assert_close(small.A(x), ref[..., 1:6, 1:5], rtol=0, atol=1e-13)


def test_valid_blur_adjoint_and_trace_against_its_matrix():
    op = ops.Blur(_kernel(), (1, 8, 9), boundary="valid", output_size=(5, 4))
    A = op.to_matrix()
    y = torch.randn(3, 1, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(op.A_adjoint(y).reshape(3, -1), y.reshape(3, -1) @ A, rtol=0, atol=1e-13)
    x = torch.randn(3, 1, 8, 9, dtype=torch.float64)
    torch.testing.assert_close(op.AtA(x).reshape(3, -1), x.reshape(3, -1) @ (A.T @ A), rtol=0, atol=1e-12)
    assert op.frobenius_sq() == pytest.approx(float(A.square().sum()), rel=1e-12)


def test_valid_blur_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="measures at most 7x6"):
        ops.Blur(_kernel(), (1, 9, 10), boundary="valid", output_size=(8, 6))
    with pytest.raises(ValueError, match="boundary must be 'circular' or 'valid', got 'reflect'"):
        ops.Blur(_kernel(), (1, 9, 10), boundary="reflect")
    with pytest.raises(ValueError, match="output_size is for boundary='valid'"):
        ops.Blur(_kernel(), (1, 9, 10), output_size=(5, 5))
    op = ops.Blur(_kernel(), (1, 9, 10), boundary="valid")
    with pytest.raises(NotImplementedError, match="cannot diagonalise"):
        op.spectral_apply(torch.zeros(1, 9, 10), lambda e: e)
    prior = afdps.priors.SpectralGaussian(torch.zeros(1), torch.ones(1, 9, 6), 10)
    with pytest.raises(TypeError, match="closed form of a circular blur"):
        prior.posterior_blur(op, torch.zeros(1, 9, 10), 0.1)


def _dense_implicit(A, x, y, c):
    M = torch.eye(A.shape[1], dtype=torch.float64) + c * A.T @ A
    return torch.linalg.solve(M, (x + c * y @ A).T).T


@pytest.mark.parametrize("c", [0.3, 40.0, 2000.0])
def test_implicit_guidance_step_against_a_dense_solve(c):
    """Both forms (the measurement-space solve of ValidBlur and the scene-space one of the base class)
    against ``(I + c A^T A)^-1 (x + c A^T y)``. Error bound: the systems have eigenvalues >= 1, so the
    solution error is at most the residual, ``tol * ||b||``."""
    op = ops.Blur(_kernel(5, 5, seed=1), (1, 12, 11), boundary="valid")
    A = op.to_matrix()
    x = torch.randn(3, 1, 12, 11, dtype=torch.float64)
    y = op.A(torch.randn(3, 1, 12, 11, dtype=torch.float64)) + 0.1 * torch.randn(3, *op.output_shape, dtype=torch.float64)
    exact = _dense_implicit(A, x.reshape(3, -1), y.reshape(3, -1), c)
    b = c * (op.A(x) - y)
    bound = op.cg_tol(torch.float64) * float(b.flatten(1).norm(dim=1).max()) * max(1.0, math.sqrt(float(
        torch.linalg.eigvalsh(A @ A.T).max())))
    got = op.implicit_guidance_step(x, y, 1.0, c).reshape(3, -1)
    assert float((got - exact).norm(dim=1).max()) <= bound + 1e-12
    scene = ops.LinearOperator.implicit_guidance_step(op, x, y, 1.0, c).reshape(3, -1)
    b_scene = c * op.A_adjoint(op.A(x) - y)
    assert float((scene - exact).norm(dim=1).max()) <= op.cg_tol(torch.float64) * float(b_scene.flatten(1).norm(dim=1).max()) + 1e-12


def test_implicit_steps_on_circular_operators_converge_at_once_and_match_dense():
    """Where A^T A is diagonal the preconditioner is the exact inverse: one iteration, the dense answer."""
    op = ops.Blur(_kernel(3, 3), (1, 6, 7))
    A = op.to_matrix()
    x = torch.randn(2, 1, 6, 7, dtype=torch.float64)
    y = torch.randn(2, 1, 6, 7, dtype=torch.float64)
    calls = []
    orig = op.AtA
    op.AtA = lambda v: calls.append(1) or orig(v)
    got = op.implicit_guidance_step(x, y, 0.5, 8.0)
    torch.testing.assert_close(got.reshape(2, -1), _dense_implicit(A, x.reshape(2, -1), y.reshape(2, -1), 4.0),
                               rtol=0, atol=1e-10)
    assert len(calls) == 1


def test_implicit_damped_step_against_dense():
    op = ops.Blur(_kernel(3, 3, seed=2), (1, 8, 8), boundary="valid")
    A = op.to_matrix()
    x, g = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, dtype=torch.float64)
    h, kappa, scale = 0.1, 30.0, 0.02
    got = afdps.engine.potentials.implicit_damped_step(op, x, g, h, kappa, scale).reshape(2, -1)
    M = torch.eye(64, dtype=torch.float64) + h * kappa / scale * A.T @ A
    exact = x.reshape(2, -1) - h * kappa * torch.linalg.solve(M, g.reshape(2, -1).T).T
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-8)


def test_perturbation_optimisation_stage1_is_the_exact_gaussian():
    """The sample is a linear map of white noise plus a mean: ``x = L z + m``. Against dense algebra:
    ``m = P^-1 b A^T y`` and ``L L^T = P^-1`` (the exact covariance, no Monte Carlo), with ``P = I / rho^2 + b
    A^T A``; L is read off column by column from unit noise vectors."""
    op = ops.Blur(_kernel(3, 3, seed=3), (1, 6, 6), boundary="valid")
    A = op.to_matrix()
    D, Dy = 36, 16
    assert op.stage1_noise_numel == D + Dy
    sigma_y, lam, rho = 0.2, 0.7, 1.5
    y = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    b = lam / sigma_y ** 2
    P = torch.eye(D, dtype=torch.float64) / rho ** 2 + b * A.T @ A
    mean = op.stage1_sample(y, sigma_y, lam, rho, torch.zeros(1, D + Dy, dtype=torch.float64)).reshape(-1)
    torch.testing.assert_close(mean, torch.linalg.solve(P, b * A.T @ y.reshape(-1)), rtol=0, atol=1e-9)
    eye = torch.eye(D + Dy, dtype=torch.float64)
    cols = op.stage1_sample(y, sigma_y, lam, rho, eye).reshape(D + Dy, D) - mean
    # each column is a CG solve: error <= ||P^-1|| tol ||rhs|| = rho^2 * 1e-10 * (about 10 here) ~ 2e-9
    torch.testing.assert_close(cols.T @ cols, torch.linalg.inv(P), rtol=0, atol=1e-8)
    # lam = 0: the prior's N(0, rho^2 I) from the first D entries, no solve
    z = torch.randn(2, D + Dy, dtype=torch.float64)
    torch.testing.assert_close(op.stage1_sample(y, sigma_y, 0.0, rho, z).reshape(2, D), rho * z[:, :D])


def test_solve_cg_raises_when_it_cannot_converge():
    M = torch.diag(torch.logspace(0, 4, 50, dtype=torch.float64))
    b = torch.ones(2, 50, dtype=torch.float64)
    with pytest.raises(CGError, match=r"after 3 iterations, not 1e-10 \(raise the operator's cg_maxiter\)"):
        solve_cg(lambda v: v @ M, b, 1, maxiter=3)
    with pytest.raises(CGError, match=r"\(raise the operator's cg_maxiter, or run in float64, dtype=torch.float64 "
                                      r"from Python: a float32"):
        solve_cg(lambda v: v @ M.float(), b.float(), 1, maxiter=3)  # (float32: the hint that helps when it stalls)
    x = solve_cg(lambda v: v @ M, b, 1, maxiter=500)
    torch.testing.assert_close(x @ M, b, rtol=0, atol=1e-6)
    # a non-finite row is left alone (the sampler kills its particle), the others still converge
    b[0, 0] = float("nan")
    x = solve_cg(lambda v: v @ M, b, 1, maxiter=500)
    assert not torch.isfinite(x[0]).all() and torch.allclose(x[1] @ M, b[1], atol=1e-6)


class _AsImage:
    """A mixture on R^(C H W) seen as a prior on (C, H, W) images."""

    def __init__(self, gm, shape):
        self.gm, self.event_shape, self.schedule = gm, tuple(shape), gm.schedule

    def score(self, x, t):
        return self.gm.score(x.reshape(*x.shape[:-3], -1), t).reshape(x.shape)


class _Flat:
    """A result whose particles are seen as vectors (what test_sampler_exact's checks take)."""

    def __init__(self, r):
        self.weights, self.particles = r.weights, r.particles.flatten(2)


@pytest.mark.slow
@pytest.mark.parametrize("opts", [dict(method="sde", eta=0.5, tempering="none"),
                                  dict(method="ode", corrector="split", tempering="linear")],
                         ids=["fk-untempered", "ode-split-corrector"])
def test_sampler_with_a_valid_blur_recovers_the_exact_posterior(opts):
    """test_sampler_exact's 16-D mixture on 1x4x4 scenes, a 3x3 valid blur (2x2 measurements: the border is
    seen only through the blur of its neighbours), guidance="implicit" (the default for this operator). The
    untempered case starts Stage I at lam = 1, so perturbation-optimisation is used; the ODE's split corrector
    integrates its likelihood flow implicitly too. Tolerances: those of test_sampler_exact (5 SE over R
    replicates, SE <= 0.05), measured passing at 200 steps: largest deviations 3.4 SE (FK, 1000 particles) and
    3.1 SE (ODE), the same as with the operator's dense matrix and guidance="exact". FK runs 500 particles
    (measured: 3.0 SE, standard errors <= 0.015); the ODE keeps 1000 (at 500 its largest deviation was 4.4 SE)."""
    gm, _ = _mixture_16d()
    op = ops.Blur(ops.gaussian_kernel(3, 0.8), (1, 4, 4), boundary="valid")
    sigma_y = 0.5
    y = op.measure((0.5 * (gm.means[0] + gm.means[1])).reshape(1, 1, 4, 4), sigma_y, torch.Generator().manual_seed(7))
    post = gm.diffused(gm.schedule.tau_min).posterior(op, y[0], sigma_y)
    ys = y.expand(R, *y.shape[1:]).contiguous()
    N = 500 if opts["method"] == "sde" else 1000
    r = afdps.sample(_AsImage(gm, (1, 4, 4)), op, ys, sigma_y, num_particles=N, num_steps=200,
                     seed=list(range(300, 300 + R)), dtype=torch.float64, potential="noisy", time_power=1.0, **opts)
    _check(_Flat(r), post, 0.05, what=f"valid blur {opts}")


def test_sampler_defaults_to_implicit_guidance_for_a_valid_blur_and_refuses_what_needs_a_spectrum():
    gm = GaussianMixture(torch.zeros(1, 16), torch.eye(16)[None], torch.ones(1))
    prior = _AsImage(gm, (1, 4, 4))
    op = ops.Blur(ops.gaussian_kernel(3, 0.8), (1, 4, 4), boundary="valid")
    y = torch.zeros(1, 1, 2, 2)
    assert afdps.sampler.prepare(prior, op, y, 0.1).guidance == "implicit"
    r = afdps.sample(prior, op, y, 0.1, num_particles=4, num_steps=3, seed=0, potential="scaled")
    assert r.particles.shape == (1, 4, 1, 4, 4) and torch.isfinite(r.particles).all()
    with pytest.raises(ValueError, match="guidance='exact' needs an operator that diagonalises"):
        afdps.sample(prior, op, y, 0.1, num_steps=3, guidance="exact", potential="scaled")
    with pytest.raises(ValueError, match="potential='inflated'"):
        afdps.sample(prior, op, y, 0.1, num_steps=3, potential="inflated")
    with pytest.raises(ValueError, match="with guidance='euler' use corrector='song'"):
        afdps.sample(prior, op, y, 0.1, num_steps=3, method="ode", guidance="euler", potential="scaled")
    # an operator with an exact flow keeps the split corrector under Euler guidance (as before guidance="implicit")
    circ = ops.Blur(ops.gaussian_kernel(3, 0.8), (1, 4, 4))
    r = afdps.sample(prior, circ, torch.zeros(1, 1, 4, 4), 0.1, num_particles=4, num_steps=3, seed=0, method="ode",
                     guidance="euler", potential="scaled")
    assert torch.isfinite(r.particles).all()


class _Opaque(ops.LinearOperator):
    """An operator known only through A and A^T (no spectral decomposition): a dense matrix kept hidden."""

    def __init__(self, M):
        super().__init__()
        self.M = M
        self.output_shape, self.input_shape = (M.shape[0],), (M.shape[1],)

    def A(self, x):
        return x @ self.M.T.to(x.dtype)

    def A_adjoint(self, y):
        return y @ self.M.to(y.dtype)

    def frobenius_sq(self):
        return float(self.M.square().sum())


def test_any_operator_without_a_spectrum_gets_implicit_guidance_and_an_exact_stage1():
    """An operator that offers only A and A^T: the sampler picks guidance="implicit", and Stage I is the
    perturbation-optimisation sample (mean and covariance against dense algebra, as for ValidBlur)."""
    M = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    op = _Opaque(M)
    assert not op.supports_exact and op.stage1_noise_numel == 8
    sigma_y, lam, rho = 0.3, 0.5, 2.0
    y = torch.randn(1, 3, dtype=torch.float64)
    b = lam / sigma_y ** 2
    P = torch.eye(5, dtype=torch.float64) / rho ** 2 + b * M.T @ M
    mean = op.stage1_sample(y, sigma_y, lam, rho, torch.zeros(1, 8, dtype=torch.float64)).reshape(-1)
    torch.testing.assert_close(mean, torch.linalg.solve(P, b * M.T @ y.reshape(-1)), rtol=0, atol=1e-9)
    cols = op.stage1_sample(y, sigma_y, lam, rho, torch.eye(8, dtype=torch.float64)) - mean
    torch.testing.assert_close(cols.T @ cols, torch.linalg.inv(P), rtol=0, atol=1e-8)
    gm = GaussianMixture(torch.zeros(1, 5), torch.eye(5)[None], torch.ones(1))
    assert afdps.sampler.prepare(gm, op, y, sigma_y).guidance == "implicit"
    r = afdps.sample(gm, op, y, sigma_y, num_particles=8, num_steps=4, seed=0, potential="noisy", tempering="none")
    assert torch.isfinite(r.particles).all()
