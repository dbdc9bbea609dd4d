"""The intermediate potentials of spec section 9: where the likelihood is evaluated along the path.

The target at grid time ``tau_k`` is ``Q_k(x) ∝ p_tau(x) exp(-nu_k(x))`` with

    nu_k(x) = lam_k (A x - a_k y)^T (c_k I + d_k A A^T)^-1 (A x - a_k y) / 2,

one :class:`Member` ``(a, s, d)`` per grid time (``c = s^2``; ``alpha``, ``sigma`` at ``tau``, and
``alpha = 1`` in VE coordinates):

- ``"noisy"``: ``(1, sigma_y, 0)``, ``nu = lam mu(x)``: spec section 2, the paper's equations;
- ``"scaled"``: ``(alpha, alpha sigma_y, 0)``, ``nu = lam mu(x / alpha)``: the authors' code (VE);
- ``"inflated"``: ``(alpha, alpha sigma_y, sigma^2)``: the likelihood of ``y`` if ``x0 = x / alpha +
  (sigma / alpha) eps``, wide at high noise and ``sigma_y`` at the data end;

and the last member (``tau_min``) is ``mu`` itself, ``(1, sigma_y, 0)``, so the final target is the
posterior whatever the family. Every quantity the sampler needs is a spectral function of ``A^T A``
(``W = (c + d A A^T)^-1`` and ``A^T W = f(A^T A) A^T`` with ``f(e) = 1 / (c + d e)``):

- gradient (before ``lam``): ``A^T W (A x - a y) = f(A^T A) A^T (A x - a y)``;
- Laplacian (before ``lam``): ``tr F``, ``F = A^T W A = g(A^T A)``, ``g(e) = e f(e)``;
- exact guidance over a step: ``x - h phi(h kappa g) kappa f (A^T (A x - a y))`` in the eigenbasis;
- Stage I: precision ``I / rho^2 + lam F``, mean ``Cov lam f(A^T A) A^T (a y)``.

With ``d = 0`` these are the familiar ``sigma_y``-scaled forms with ``y -> a y``, and use the operators'
fused paths (:meth:`normal_residual`, :meth:`exact_guidance_step`, :meth:`stage1_sample`) unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.fourier import phi
from .priors import score_with_graph

__all__ = ["POTENTIALS", "Member", "members", "gradient", "laplacian", "half_value", "tempering_change", "value_from_Ax",
           "guidance_step", "implicit_guidance_step", "stage1_sample", "tweedie_terms", "damped_guidance_step",
           "implicit_damped_step"]

POTENTIALS = ("noisy", "scaled", "inflated", "tweedie")


@dataclass(frozen=True)
class Member:
    """``nu = lam (A x - a y)^T (s^2 I + d A A^T)^-1 (A x - a y) / 2`` (before ``lam``: ``lam`` is the
    tempering schedule's)."""

    a: float
    s: float
    d: float = 0.0

    @property
    def c(self) -> float:
        return self.s ** 2

    def f(self, e: torch.Tensor) -> torch.Tensor:
        """The weight ``1 / (c + d e)`` as a function of an eigenvalue ``e`` of ``A^T A`` (or ``A A^T``)."""
        return 1.0 / (self.c + self.d * e)

    def g(self, e: torch.Tensor) -> torch.Tensor:
        """``e f(e)``: the eigenvalues of ``F = A^T W A``."""
        return e / (self.c + self.d * e)


def members(potential: str, schedule, times, sigma_y: float) -> list[Member]:
    """The member of each grid time (``len(times)`` of them), the last one ``mu`` exactly. (For
    ``"tweedie"`` the members are the noisy ones; :func:`tweedie_terms` evaluates the potential.)"""
    sigma_y = float(sigma_y)
    mu = Member(1.0, sigma_y, 0.0)
    if potential in ("noisy", "tweedie"):
        return [mu] * len(times)
    out = []
    for t in list(times)[:-1]:
        alpha, sigma = float(schedule.alpha(t)), float(schedule.sigma(t))
        out.append(Member(alpha, alpha * sigma_y, sigma ** 2 if potential == "inflated" else 0.0))
    return out + [mu]


def _scaled(y: torch.Tensor, m: Member) -> torch.Tensor:
    return y if m.a == 1.0 else m.a * y


def gradient(op, x, y, m: Member, *, with_value: bool = False, use_triton=None, spectrum=None,
             also: Member | None = None):
    """``(A^T W (A x - a y), raw)`` for particles ``x`` and measurements ``y`` broadcasting against them;
    ``raw`` (float64, per particle, only ``with_value``) is what :func:`half_value` turns into
    ``nu / lam``. With ``also`` (another member; both with ``d = 0``), ``raw`` is ``(2, ...)``: ``m``'s and
    ``also``'s at the same ``x``, from the same pass (the potential at a step's two grid times).
    ``spectrum``: ``x``'s transform kept by :func:`guidance_step` (``keep_spectrum=True``; ``d = 0``)."""
    if m.d == 0.0:  # W = I / c: the operator's residual with the scale 1 / c folded in
        extra = {} if spectrum is None else {"spectrum": spectrum}
        if also is not None:
            if also.d != 0.0 or not with_value:
                raise ValueError("also= takes a member with d = 0 and needs with_value=True")
            extra["second"] = also.a / m.a  # A x - (a' / a)(a y)
        return op.normal_residual(x, _scaled(y, m), with_norm=with_value, use_triton=use_triton, scale=1.0 / m.c,
                                  **extra)
    if spectrum is not None or also is not None:
        raise ValueError("spectrum= and also= serve the potentials with d = 0 ('noisy', 'scaled')")
    r, _ = op.normal_residual(x, _scaled(y, m), use_triton=use_triton)
    g, raw = op.spectral_apply(r, m.f), None
    if with_value:
        raw = _weighted_norm(op, op.A(x) - _scaled(y, m), m)
    return g, raw


def _weighted_norm(op, u, m: Member) -> torch.Tensor:
    """``u^T W u`` over the measurement dims, float64."""
    dims = tuple(range(-len(op.output_shape), 0))
    return (u.to(torch.float64) * op.output_spectral_apply(u, m.f).to(torch.float64)).sum(dim=dims)


def half_value(m: Member, raw: torch.Tensor) -> torch.Tensor:
    """``nu / lam`` from the ``raw`` of :func:`gradient` (``||A x - a y||^2`` when ``d = 0``)."""
    return raw / (2.0 * m.c) if m.d == 0.0 else 0.5 * raw


def tempering_change(m: Member, raw: torch.Tensor, dlam: float) -> torch.Tensor:
    """``dlam * nu / lam``: the potential's change when only ``lam`` moves by ``dlam`` (``raw`` of
    :func:`gradient`)."""
    return dlam * raw / (2.0 * m.c) if m.d == 0.0 else 0.5 * dlam * raw


def value_from_Ax(op, Ax, y, m: Member) -> torch.Tensor:
    """``nu / lam`` at particles whose ``A x`` is given (float64, per particle)."""
    u = Ax - _scaled(y, m)
    if m.d == 0.0:
        dims = tuple(range(-len(op.output_shape), 0))
        return half_value(m, u.square().sum(dim=dims, dtype=torch.float64))
    return 0.5 * _weighted_norm(op, u, m)


def laplacian(op, m: Member) -> float:
    """``tr F`` (before ``lam``); ``||A||_F^2 / sigma^2`` when ``d = 0``."""
    if m.d == 0.0:
        return op.frobenius_sq() / m.c
    return op.spectral_trace(m.g)


def guidance_step(op, x, y, m: Member, h: float, kappa: float, use_triton=None, keep_spectrum: bool = False):
    """The guidance flow ``dx/dt = -kappa grad nu`` (before ``lam``: ``kappa = eta V^2 lam``) integrated
    exactly over a step of length ``h`` (spec sections 4 and 9). ``keep_spectrum`` (``d = 0``, an operator that
    :attr:`keeps_spectrum`): ``(x_new, its transform)`` for :func:`gradient`'s ``spectrum``."""
    if m.d == 0.0:
        extra = {"keep_spectrum": True} if keep_spectrum else {}
        return op.exact_guidance_step(x, _scaled(y, m), h, kappa / m.c, use_triton=use_triton, **extra)
    if keep_spectrum:
        raise ValueError("a kept spectrum serves the potentials with d = 0 ('noisy', 'scaled')")
    r, _ = op.normal_residual(x, _scaled(y, m), use_triton=use_triton)
    hk = float(h) * float(kappa)
    return x - op.spectral_apply(r, lambda e: hk * m.f(e) * phi(hk * m.g(e)))


def implicit_guidance_step(op, x, y, m: Member, h: float, kappa: float, use_triton=None) -> torch.Tensor:
    """The guidance flow of :func:`guidance_step` over a step of length ``h`` by backward Euler, solved by
    conjugate gradients (``guidance="implicit"``, for operators that cannot diagonalise ``A^T A``; the
    potentials with ``d = 0``)."""
    if m.d != 0.0:
        raise ValueError("the implicit guidance step is for the potentials 'noisy', 'scaled' and 'tweedie'")
    return op.implicit_guidance_step(x, _scaled(y, m), h, kappa / m.c)


def stage1_sample(op, y, m: Member, lam: float, rho: float, noise: torch.Tensor) -> torch.Tensor:
    """Exact sample of ``N(0, rho^2 I) exp(-lam nu)`` (spec sections 3 and 9); ``noise`` white of the
    output's shape, ``y`` broadcasting against it."""
    if m.d == 0.0:
        return op.stage1_sample(_scaled(y, m), m.s, lam, rho, noise)
    a, lam = 1.0 / float(rho) ** 2, float(lam)
    out = op.spectral_apply(noise, lambda e: torch.rsqrt(a + lam * m.g(e)))
    if lam > 0:
        out = out + op.spectral_apply(op.A_adjoint(_scaled(y, m)), lambda e: lam * m.f(e) / (a + lam * m.g(e)))
    return out


# ---- the Tweedie potential -------------------------------------------------------------------------
#
# nu_k(x) = lam_k mu(x0_hat(x, tau_k)), x0_hat = (x + sigma^2 s(x, tau)) / alpha (DPS's guidance, with
# weights: the twisted-SMC idea of TDS; spec section 9), and nu_K = mu at the last grid time. Its gradient
# needs the network's vector-Jacobian product; its Laplacian does not exist in closed form, so it runs with
# eta = 0.5, where the Laplacian and |grad nu|^2 terms of the rate cancel.


def score_like(s, x: torch.Tensor, tau: float, at: str = "") -> torch.Tensor:
    """The prior's score ``s`` at ``x``, refused unless it is a torch tensor of ``x``'s shape (a narrower one would
    broadcast in ``x0_hat``); ``at`` says where in the run (``"at step 3"``)."""
    where = f"{at} " if at else ""
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"the prior's score(x, t) returned a {type(s).__name__} {where}(tau={tau:.4g}); it must return "
                        "a torch tensor of the shape of x")
    if tuple(s.shape) != tuple(x.shape):
        raise ValueError(f"the prior's score has shape {tuple(s.shape)} for particles of shape {tuple(x.shape)} "
                         f"{where}(tau={tau:.4g}); score(x, t) must return the shape of x")
    return s


def tweedie_terms(prior, op, x, y, t: float, tn: float, sigma_y: float, last: bool):
    """``(s, g, half_k, half_n, next_bad)`` at particles ``x`` for a step ``t -> tn``: the score ``s(x, t)``
    (detached), ``g = grad (nu_k / lam_k)``, ``nu / lam`` of the members at ``t`` and ``tn`` at the same ``x`` (the
    one at ``tn`` is ``mu(x)`` when ``last``), and ``(B, N)`` where the score at ``tn`` is not finite (the cause of a
    non-finite ``half_n`` there). Costs one network call with its VJP (a slice of the particles at a
    time, each slice at most the prior's network batch), and one more call at
    ``tn`` unless ``last``."""
    sched = prior.schedule
    dims = tuple(range(-len(op.output_shape), 0))
    two_s2 = 2.0 * float(sigma_y) ** 2

    def x0_hat(z, s, tau):
        return (z + float(sched.sigma(tau)) ** 2 * s) / float(sched.alpha(tau))

    # each particle's potential depends on that particle only, so its gradient is taken a slice of particles at a
    # time: the network's autograd graph then holds one network batch of images (the prior's batch_size; one
    # particle of every image where the images outnumber it), not all B x N particles (a 128-particle run of a
    # small net at batch_size=1 peaked 5 MiB above its start against 225 MiB before)
    rows = getattr(prior, "graph_rows", lambda n: n)(x.shape[0] * x.shape[1])
    step = max(1, rows // x.shape[0])  # particles per slice; every image in each (per-image operator buffers)
    ss, qs, grads = [], [], []
    for i in range(0, x.shape[1], step):
        with torch.enable_grad():
            xg = x[:, i:i + step].detach().requires_grad_(True)
            s = score_like(score_with_graph(prior, xg, t, "potential='tweedie' (the default with eta=0.5; pass "
                                                           "potential='scaled' for a prior without autograd)"), xg, t)
            q = (op.A(x0_hat(xg, s, t)) - y).square().sum(dim=dims, dtype=torch.float64)
            (grad,) = torch.autograd.grad(q.sum(), xg)
        ss.append(s.detach())
        qs.append(q.detach())
        grads.append(grad)
    s, q, grad = (torch.cat(v, dim=1) if len(v) > 1 else v[0] for v in (ss, qs, grads))
    next_bad = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
    if last:
        qn = (op.A(x) - y).square().sum(dim=dims, dtype=torch.float64)
    else:
        with torch.no_grad():
            sn = score_like(prior.score(x, tn), x, tn)
            next_bad = ~torch.isfinite(sn).reshape(*x.shape[:2], -1).all(-1)
            qn = (op.A(x0_hat(x, sn, tn)) - y).square().sum(dim=dims, dtype=torch.float64)
    return s, grad / two_s2, q / two_s2, qn / two_s2, next_bad


def damped_guidance_step(op, x, g, h: float, kappa: float, scale: float) -> torch.Tensor:
    """``x - h kappa phi(h kappa F) g`` with ``F = A^T A / scale``: the explicit guidance step of a
    non-quadratic potential whose Hessian is about ``F`` (``scale = alpha^2 sigma_y^2`` for the Tweedie
    potential), damped where the step would be stiff; equal to Euler for small ``h``."""
    hk = float(h) * float(kappa)
    return x - op.spectral_apply(g, lambda e: hk * phi(hk * e / scale))


def implicit_damped_step(op, x, g, h: float, kappa: float, scale: float) -> torch.Tensor:
    """``x - h kappa (I + h kappa F)^-1 g`` with ``F = A^T A / scale``: :func:`damped_guidance_step` with
    ``phi(z)`` replaced by ``1 / (1 + z)`` (backward Euler), solved by conjugate gradients."""
    c = float(h) * float(kappa) / float(scale)
    return x - op.implicit_damped_step(g, c) * float(scale)
