"""Priors: anything with ``score(x, t)`` (``x`` of shape ``(..., *event_shape)``) and ``schedule``.

- :class:`GaussianMixture`: exact diffused score and exact posteriors under dense linear operators
  (the test oracle of the spec, section 8).
- :class:`SpectralGaussian`: a stationary Gaussian image prior, diagonal in the Fourier basis, fitted
  to real photos; exact diffused score and exact circular-blur posterior at full image size.
- :class:`EpsilonModel`: wraps a noise-prediction network into a score, ``s = -eps_hat / sigma``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .ops import solve_cg
from .schedules import Schedule, VESchedule, VPSchedule, check_schedule
from .validation import check_int, check_real

__all__ = ["score_with_graph", "Prior", "GaussianMixture", "SpectralGaussian", "EpsilonModel"]

LOG_2PI = math.log(2 * math.pi)


def check_score_input(prior, x, t) -> None:
    """What a score of ``prior`` takes: floating-point ``x`` whose trailing dims are ``prior.event_shape`` (a wrong
    shape was reshaped or broadcast into a score of another shape, an integer ``x`` scored in integers) and a time
    ``t`` in ``(0, T]`` of its schedule (a NaN or negative ``t`` gave NaN, or a network step outside its training).
    A tensor ``t`` (one time per sample) is left to the caller: reading it would synchronise with the device."""
    event = tuple(prior.event_shape)
    name = type(prior).__name__
    if isinstance(x, torch.Tensor):
        if not x.dtype.is_floating_point:
            raise TypeError(f"{name}.score takes floating-point x, got {x.dtype}")
        if x.dim() < len(event) or tuple(x.shape[x.dim() - len(event):]) != event:
            raise ValueError(f"{name}.score takes x of shape (..., {', '.join(map(str, event))}), got {tuple(x.shape)}")
    if t is not None and not isinstance(t, torch.Tensor):
        T = float(prior.schedule.T)
        value = t.item() if isinstance(t, np.ndarray) and t.ndim == 0 else t
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not (math.isfinite(value) and 0 < value <= T * (1 + 1e-12)):
            raise ValueError(f"{name}.score takes a time t in (0, {T:g}] (its schedule's), got {t!r}")


class Prior:
    """Interface of a diffusion prior."""

    event_shape: tuple
    schedule: Schedule

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        raise NotImplementedError


class GaussianMixture(Prior):
    """``sum_k w_k N(m_k, S_k)`` in ``R^d``, diffused exactly: ``N(alpha m_k, alpha^2 S_k + sigma^2 I)``.

    Parameters
    ----------
    means : (K, d); covs : (K, d, d) symmetric (to 1e-6 relative, float32 rounding; their symmetric part is
    kept) positive semi-definite (a singular one is a degenerate Gaussian: its diffused scores exist, its density
    at ``t=None`` does not); weights : (K,) positive (normalised here); schedule : the noising SDE (default
    :class:`VPSchedule`).
    All arithmetic is float64; :meth:`score` returns the input's dtype.
    """

    def __init__(self, means, covs, weights, schedule: Schedule | None = None):
        self.means = torch.as_tensor(np.asarray(means), dtype=torch.float64)
        self.covs = torch.as_tensor(np.asarray(covs), dtype=torch.float64)
        w = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        check_schedule(schedule)
        if self.means.dim() != 2:
            raise ValueError(f"means must be (K, d), got shape {tuple(self.means.shape)}")
        K, d = self.means.shape
        if tuple(self.covs.shape) != (K, d, d):
            raise ValueError(f"covs must be (K, d, d) = {(K, d, d)}, got {tuple(self.covs.shape)}")
        if K < 1 or d < 1:
            raise ValueError(f"means must hold at least one component of at least one dimension, got shape {(K, d)}")
        if not (bool(torch.isfinite(self.means).all()) and bool(torch.isfinite(self.covs).all())):
            raise ValueError("means and covs must be finite")
        if tuple(w.shape) != (K,) or not bool((w > 0).all()) or not bool(torch.isfinite(w).all()):
            raise ValueError(f"weights must be {K} positive finite number{'s' if K != 1 else ''}, got {w.tolist()}")
        # symmetric to float32 rounding (a float32 Q diag(l) Q^T is off by about 3e-8), kept as its symmetric part
        scale = self.covs.abs().amax(dim=(1, 2)).clamp_min(torch.finfo(torch.float64).tiny)
        asym = (self.covs - self.covs.transpose(1, 2)).abs().amax(dim=(1, 2)) / scale
        if bool((asym > 1e-6).any()):
            k = int(asym.argmax())
            raise ValueError(f"covs[{k}] is not symmetric (|S - S^T| / |S| = {float(asym[k]):.3g}); a covariance is "
                             "symmetric")
        self.covs = 0.5 * (self.covs + self.covs.transpose(1, 2))
        # positive semi-definite (a singular one is a degenerate Gaussian: a noise-free posterior, say)
        low = torch.linalg.eigvalsh(self.covs)[:, 0]
        if bool((low < -1e-10 * scale).any()):
            k = int(torch.nonzero(low < -1e-10 * scale)[0])
            raise ValueError(f"covs[{k}] is not positive semi-definite (smallest eigenvalue {float(low[k]):.3g}); a "
                             "covariance has no negative eigenvalues")
        self.weights = w / w.sum()
        self.schedule = schedule if schedule is not None else VPSchedule()
        self.event_shape = (d,)
        self._chol = {}

    @property
    def dim(self) -> int:
        return self.event_shape[0]

    def _factor(self, t):
        key = None if t is None else float(t)
        if key not in self._chol:
            if t is None:
                a, s2 = 1.0, 0.0
            else:
                a, s2 = float(self.schedule.alpha(t)), float(self.schedule.sigma(t)) ** 2
            C = a * a * self.covs + s2 * torch.eye(self.dim, dtype=torch.float64)
            L, info = torch.linalg.cholesky_ex(C)
            if bool((info != 0).any()):  # only at t=None: a singular covariance (alpha^2 S + sigma^2 I is PD at t > 0)
                raise ValueError(f"covs[{int(torch.nonzero(info)[0])}] is singular: the mixture has no density at the "
                                 "data end (t=None); its diffused scores (t > 0) exist")
            eye = torch.eye(self.dim, dtype=torch.float64).expand_as(L)
            Linv = torch.linalg.solve_triangular(L, eye, upper=False)
            logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
            self._chol[key] = (a * self.means, L, Linv, logdet)
            if len(self._chol) > 4096:
                self._chol.clear()
        return self._chol[key]

    def _log_components(self, x: torch.Tensor, t):
        """Components first, so every reduction over them is elementwise across ``K`` contiguous rows
        (a reduction over a last dimension of 2 or 3 was most of a step's time on the CPU: 4x slower for
        40000 points in 2-D): ``log w_k N(x; alpha m_k, C_k)`` as ``(K, M)``, the whitened residuals
        ``z_k = L_k^{-1} (x - alpha m_k)`` as ``(K, M, d)`` (batched matrix products) and ``L^{-1}``."""
        m, _, Linv, logdet = self._factor(t)
        flat = x.reshape(-1, self.dim).to(torch.float64)
        d = self.dim
        # flat expanded to (K, M, d) explicitly: a broadcast matmul folds the components into one product whose
        # backward sums over them inside a GEMM, and its rounding then depended on M (the Tweedie potential's
        # VJP differed by 1 ulp between a 2- and a 3-rank particle-parallel run); this way it sums over dim 0
        z = torch.matmul(flat.expand(len(m), *flat.shape).contiguous(), Linv.transpose(-1, -2))
        z = z - torch.einsum("kij,kj->ki", Linv, m)[:, None]
        sq = torch.matmul(z * z, torch.ones(d, 1, dtype=torch.float64)).squeeze(-1)
        const = torch.log(self.weights) - 0.5 * logdet - 0.5 * d * LOG_2PI
        return const[:, None] - 0.5 * sq, z, Linv

    @staticmethod
    def _responsibilities(lw: torch.Tensor) -> torch.Tensor:
        e = (lw - lw.amax(0)).exp_()
        return e / e.sum(0)

    def log_prob(self, x: torch.Tensor, t=None) -> torch.Tensor:
        """Log-density of the mixture (diffused to time ``t``; ``None`` = clean) at ``x (..., d)``."""
        lw, _, _ = self._log_components(x, t)
        return torch.logsumexp(lw, dim=0).reshape(x.shape[:-1])

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """``grad_x log p_t(x) = -sum_k r_k C_k^{-1} (x - alpha m_k)``: responsibilities times component scores."""
        check_score_input(self, x, t)
        lw, z, Linv = self._log_components(x, t)
        r = self._responsibilities(lw)
        return (-torch.matmul(r.unsqueeze(-1) * z, Linv).sum(0)).reshape(x.shape).to(x.dtype)

    def component_probabilities(self, x: torch.Tensor, t=None) -> torch.Tensor:
        """Responsibilities ``(..., K)`` of the components at ``x``."""
        lw, _, _ = self._log_components(x, t)
        return self._responsibilities(lw).t().reshape(*x.shape[:-1], -1)

    def diffused(self, t) -> "GaussianMixture":
        """The marginal at time ``t`` as a (clean) mixture."""
        a, s = float(self.schedule.alpha(t)), float(self.schedule.sigma(t))
        covs = a * a * self.covs + s * s * torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(a * self.means, covs, self.weights, self.schedule)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact draws, ``(n, d)`` float64."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        L = self._factor(None)[1]
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.means[comp] + (L[comp] @ z.unsqueeze(-1)).squeeze(-1)

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> torch.Tensor:
        mu = self.mean()
        dm = self.means - mu
        return (self.weights[:, None, None] * (self.covs + dm[:, :, None] * dm[:, None, :])).sum(0)

    def posterior(self, op, y, sigma_y: float) -> "GaussianMixture":
        """Exact posterior given ``y = A x + sigma_y n`` (``op`` linear; its matrix is formed densely).

        Component ``k``: covariance ``(S^-1 + A^T A / sigma_y^2)^-1``, mean ``m + S A^T (A S A^T +
        sigma_y^2 I)^-1 (y - A m)``, weight ``w_k N(y; A m_k, A S_k A^T + sigma_y^2 I)``.
        """
        sigma_y = check_real("sigma_y", sigma_y, positive=True)  # (-1 gave the posterior of +1)
        A = op.to_matrix(torch.float64) if hasattr(op, "to_matrix") else torch.as_tensor(op, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if A.shape != (y.shape[0], self.dim):
            raise ValueError(f"operator matrix {tuple(A.shape)} does not map R^{self.dim} to the {y.shape[0]} entries of y")
        s2 = float(sigma_y) ** 2
        Ik = torch.eye(A.shape[0], dtype=torch.float64)
        means, covs, logw = [], [], []
        for k in range(self.means.shape[0]):
            S, m = self.covs[k], self.means[k]
            Sy = A @ S @ A.T + s2 * Ik
            Ly = torch.linalg.cholesky(Sy)
            gain = torch.cholesky_solve(A @ S, Ly).T  # S A^T Sy^-1
            resid = y - A @ m
            means.append(m + gain @ resid)
            cov = S - gain @ A @ S
            covs.append(0.5 * (cov + cov.T))
            z = torch.linalg.solve_triangular(Ly, resid[:, None], upper=False).squeeze(-1)
            logw.append(torch.log(self.weights[k]) - 0.5 * z.square().sum() - torch.log(torch.diagonal(Ly)).sum())
        logw = torch.stack(logw)
        return GaussianMixture(torch.stack(means), torch.stack(covs), torch.softmax(logw, 0), self.schedule)


def _self_conjugate_columns(width: int) -> list[int]:
    """The ``rfft`` columns whose coefficients pair up with their own column's (``kx = 0``, and ``W / 2`` for even W)."""
    return [0] + ([width // 2] if width % 2 == 0 and width > 1 else [])


class SpectralGaussian(Prior):
    """Stationary Gaussian image prior: per channel ``c``, ``x_c = m_c + z_c`` with ``z_c`` a circular
    stationary field whose orthonormal 2-D Fourier coefficients have variance ``P_c(k)``.

    Diffused to time ``t`` the spectrum becomes ``alpha^2 P + sigma^2`` and the mean ``alpha m``, so the
    score is one filter between an ``rfft2`` and an ``irfft2``.

    Parameters
    ----------
    mean : (C,) per-channel mean, on the [-1, 1] image scale.
    power : (C, H, W // 2 + 1) positive per-frequency variances (orthonormal ``rfft2``). On column 0 (and W / 2
        for an even W) the coefficients at ``ky`` and ``-ky`` are one real field's conjugate pair, so they have one
        variance: ``P[c, ky, 0] = P[c, -ky, 0]``, as every fitted spectrum has. A power that is not is refused
        (:meth:`symmetric` averages each pair): :meth:`sample` drew from one Gaussian and :meth:`score` averaged
        the pair's precisions at each time, which no one Gaussian diffuses to (a user audit, 2026-12-07, measured
        16% between them).
    width : W (the ``rfft`` half spectrum cannot tell an even W from W + 1).
    """

    def __init__(self, mean, power, width: int, schedule: Schedule | None = None):
        self.mean_c = torch.as_tensor(np.asarray(mean), dtype=torch.float64).reshape(-1)
        self.power = torch.as_tensor(np.asarray(power), dtype=torch.float64)
        if self.power.dim() != 3:
            raise ValueError(f"power must be (C, H, W // 2 + 1), got shape {tuple(self.power.shape)}")
        C, Hh, Wr = self.power.shape
        width = check_int("width", width, 1)  # (4.7 was read as 4)
        check_schedule(schedule)
        if Wr != width // 2 + 1 or self.mean_c.shape[0] != C:
            raise ValueError(f"power {tuple(self.power.shape)} does not match width {width} and {self.mean_c.shape[0]} channel means")
        if not bool(torch.isfinite(self.mean_c).all()):
            raise ValueError(f"mean must be finite, got {self.mean_c.tolist()}")
        if not bool((self.power > 0).all()) or not bool(torch.isfinite(self.power).all()):
            raise ValueError("power must be positive and finite at every frequency")
        for col in _self_conjugate_columns(width):
            p = self.power[:, :, col]
            q = p[:, (-torch.arange(Hh)) % Hh]  # the variance declared for each coefficient's conjugate
            off = ~torch.isclose(p, q, rtol=1e-5, atol=0.0)  # (a float32 periodogram's rounding passes, and is evened)
            if bool(off.any()):
                c, ky = (int(v) for v in off.nonzero()[0])
                raise ValueError(
                    f"power is not symmetric in ky on column {col}: P[{c}, {ky}, {col}] = {float(p[c, ky]):.9g} but "
                    f"P[{c}, {(-ky) % Hh}, {col}] = {float(q[c, ky]):.9g}, the variance of the same real field's "
                    "conjugate coefficient; SpectralGaussian.symmetric(power, width) averages each such pair")
        self.power = SpectralGaussian.symmetric(self.power, width)  # (exactly: rounding aside, one variance a pair)
        self.event_shape = (C, Hh, width)
        self.schedule = schedule if schedule is not None else VPSchedule()
        mean_spec = torch.zeros(C, Hh, Wr, dtype=torch.complex128)
        mean_spec[:, 0, 0] = self.mean_c * math.sqrt(Hh * width)
        self.mean_spectrum = mean_spec
        self._cache = {}

    # -- construction ----------------------------------------------------------------------------
    @staticmethod
    def symmetric(power, width: int) -> torch.Tensor:
        """``power (C, H, W // 2 + 1)`` with each conjugate pair of its self-conjugate columns (``kx = 0``, and
        ``W / 2`` for an even ``width``) set to the mean of the pair's two variances; other entries unchanged."""
        power = torch.as_tensor(np.asarray(power), dtype=torch.float64).clone()
        if power.dim() != 3:
            raise ValueError(f"power must be (C, H, W // 2 + 1), got shape {tuple(power.shape)}")
        width = check_int("width", width, 1)
        H = power.shape[1]
        for col in _self_conjugate_columns(width):
            if col < power.shape[2]:
                p = power[:, :, col]
                power[:, :, col] = 0.5 * (p + p[:, (-torch.arange(H)) % H])
        return power

    @classmethod
    def fit(cls, images, size: Sequence[int], num_crops: int = 64, seed: int = 0, floor: float = 1e-6,
            schedule: Schedule | None = None) -> "SpectralGaussian":
        """Fit to photos: per-channel mean, and the periodogram of random ``size`` crops averaged over
        crops and over rings of equal spatial frequency (an isotropic spectrum).

        Parameters
        ----------
        images : sequence of (C, H_i, W_i) arrays on the [-1, 1] scale (each at least ``size``).
        size : (H, W) of the prior's images, integers >= 1.
        num_crops : crops averaged, an integer >= 1.
        floor : lower bound on the fitted variances, a finite number >= 0.
        """
        try:
            Hh, Ww = (check_int("size", s.item() if isinstance(s, torch.Tensor) else s, 1) for s in size)
        except (TypeError, ValueError):
            raise ValueError(f"size must be a pair (H, W) of integers >= 1, got {size!r}") from None
        check_int("num_crops", num_crops, 1)
        check_real("floor", floor, low=0.0)
        imgs = [torch.as_tensor(np.asarray(im), dtype=torch.float64) for im in images]
        if not imgs:
            raise ValueError("fit needs at least one image")
        C = imgs[0].shape[0] if imgs[0].dim() == 3 else None
        for i, im in enumerate(imgs):
            if im.dim() != 3 or im.shape[0] != C or im.shape[1] < Hh or im.shape[2] < Ww:
                raise ValueError(f"every image must be (C, H, W) with the first's C and H >= {Hh}, W >= {Ww}; image {i} "
                                 f"is {tuple(im.shape)}" + (" (channels last? pass im.permute(2, 0, 1))"
                                                            if im.dim() == 3 and im.shape[-1] in (1, 3) else ""))
            if not bool(torch.isfinite(im).all()):
                raise ValueError(f"image {i} has non-finite values (NaN or inf)")
        rng = np.random.default_rng(seed)
        mean = torch.stack([im.mean(dim=(1, 2)) for im in imgs]).mean(0)
        acc = torch.zeros(C, Hh, Ww // 2 + 1, dtype=torch.float64)
        for n in range(num_crops):
            im = imgs[n % len(imgs)]
            r = int(rng.integers(0, im.shape[1] - Hh + 1))
            c = int(rng.integers(0, im.shape[2] - Ww + 1))
            crop = im[:, r:r + Hh, c:c + Ww] - mean[:, None, None]
            X = torch.fft.rfft2(crop, norm="ortho")
            acc += X.real.square() + X.imag.square()
        acc /= num_crops
        # Average over rings of equal |k| (in cycles per image side scaled to a unit square).
        ky = torch.fft.fftfreq(Hh, dtype=torch.float64)[:, None]
        kx = torch.fft.rfftfreq(Ww, dtype=torch.float64)[None, :]
        radius = torch.sqrt(ky.square() + kx.square())
        ring = torch.round(radius * max(Hh, Ww)).long()
        nr = int(ring.max()) + 1
        counts = torch.zeros(nr, dtype=torch.float64).index_add_(0, ring.reshape(-1), torch.ones(ring.numel(), dtype=torch.float64))
        power = torch.empty_like(acc)
        for ch in range(C):
            sums = torch.zeros(nr, dtype=torch.float64).index_add_(0, ring.reshape(-1), acc[ch].reshape(-1))
            power[ch] = (sums / counts)[ring]
        # The DC term of a crop is dominated by crop-to-crop brightness; keep its own estimate.
        power[:, 0, 0] = acc[:, 0, 0]
        return cls(mean, power.clamp_min(floor), Ww, schedule)

    # -- the prior ---------------------------------------------------------------------------------
    def _fft(self, x):
        return torch.fft.rfft2(x, norm="ortho")

    def _ifft(self, X):
        return torch.fft.irfft2(X, s=self.event_shape[-2:], norm="ortho")

    def _filters(self, t, device, dtype):
        key = (float(t), device, dtype)
        if key not in self._cache:
            a, s = float(self.schedule.alpha(t)), float(self.schedule.sigma(t))
            inv = 1.0 / (a * a * self.power + s * s)
            cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
            self._cache[key] = (inv.to(device=device, dtype=dtype), (a * self.mean_spectrum * inv).to(device=device, dtype=cdt))
            if len(self._cache) > 4096:
                self._cache.clear()
        return self._cache[key]

    def score(self, x, t):
        """``-F^*[(X - alpha M) / (alpha^2 P + sigma^2)]``."""
        check_score_input(self, x, t)
        inv, m = self._filters(t, x.device, x.dtype)
        return self._ifft(m - self._fft(x) * inv)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact draws ``(n, C, H, W)`` float64."""
        z = torch.randn(n, *self.event_shape, dtype=torch.float64, generator=generator)
        return self._ifft(self._fft(z) * self.power.sqrt() + self.mean_spectrum)

    def posterior_blur(self, op, y, sigma_y: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior for a circular :class:`~afdps.ops.Blur` (or :class:`~afdps.ops.Identity`).

        Per frequency: variance ``V = 1 / (1/P + |H|^2 / sigma_y^2)`` and mean ``V (M / P + conj(H) Y /
        sigma_y^2)``. Returns the mean image ``(C, H, W)`` and ``V`` ``(C, H, W // 2 + 1)``, both float64.
        """
        sigma_y = check_real("sigma_y", sigma_y, positive=True)  # (0 gave a NaN mean)
        y = torch.as_tensor(y, dtype=torch.float64)
        if tuple(y.shape) != self.event_shape:
            raise ValueError(f"y must have the prior's shape {self.event_shape}, got {tuple(y.shape)}")
        if getattr(op, "boundary", "circular") != "circular":
            raise TypeError(f"posterior_blur is the closed form of a circular blur; {op!r} is not diagonal in the "
                            "Fourier basis")
        if hasattr(op, "transfer"):
            Hf = op.transfer.to(torch.complex128)
        elif type(op).__name__ == "Identity":
            Hf = torch.ones(self.power.shape[-2:], dtype=torch.complex128)
        else:
            raise TypeError(f"posterior_blur needs a Blur or Identity operator, got {type(op).__name__}")
        s2 = float(sigma_y) ** 2
        V = 1.0 / (1.0 / self.power + (Hf.real.square() + Hf.imag.square()) / s2)
        Mpost = V * (self.mean_spectrum / self.power + torch.conj(Hf) * self._fft(y) / s2)
        return self._ifft(Mpost), V


    def posterior_mean(self, op, y, sigma_y: float, *, tol: float = 1e-8, maxiter: int = 5000) -> torch.Tensor:
        """The exact posterior mean ``(C, H, W)`` float64 for a blur of either boundary: the closed form of
        :meth:`posterior_blur` for a circular one; for ``Blur(boundary="valid")`` the solution of ``(P^-1 +
        A^T A / sigma_y^2) x = P^-1 m + A^T y / sigma_y^2`` by conjugate gradients to relative residual ``tol``
        (float64), preconditioned by the circular blur's system, which is diagonal in the prior's Fourier basis
        (the prior's spectrum spans decades, so this takes hundreds to thousands of iterations on photos)."""
        sigma_y = check_real("sigma_y", sigma_y, positive=True)
        if getattr(op, "boundary", "circular") == "circular":
            return self.posterior_blur(op, y, sigma_y)[0]
        if tuple(op.input_shape) != self.event_shape:
            raise ValueError(f"the operator's scene {op.input_shape} is not the prior's shape {self.event_shape}")
        s2 = float(sigma_y) ** 2
        y = torch.as_tensor(y, dtype=torch.float64)
        inv_power = 1.0 / self.power
        rhs = self._ifft(self.mean_spectrum * inv_power) + op.A_adjoint(y) / s2
        pre = 1.0 / (inv_power + op.eigenvalues / s2)  # the circular part's eigenvalues, same Fourier basis
        return solve_cg(lambda v: self._ifft(self._fft(v) * inv_power) + op.AtA(v) / s2, rhs[None], 3,
                        precondition=lambda v: self._ifft(self._fft(v) * pre), tol=tol, maxiter=maxiter,
                        what="the valid blur's posterior mean")[0]


class EpsilonModel(Prior):
    """Score of a noise-prediction network: ``s(x, tau) = -eps_hat(x, k(tau)) / sigma(tau)``.

    Parameters
    ----------
    net : ``torch.nn.Module`` called as ``net(x, timesteps)`` with ``timesteps`` a float tensor of
        shape ``(batch,)``, returning floats of ``x``'s batch and spatial shape. It is switched to eval mode
        (``net.eval()``, as :func:`~afdps.load_prior` leaves its networks), and a call after ``net.train()`` is
        refused: dropout and batch-norm statistics would make a run depend on more than its seed.
    schedule : the continuous schedule the network's discrete one maps onto (VP by default).
    event_shape : (C, H, W) of the network's images.
    num_train_steps : DDPM steps the network was trained with; ``k = num_train_steps * tau - 1`` is fed
        as a float (never rounded: ADM networks embed fractional steps).
    learned_sigma : the network also outputs variances in its second half of channels (ADM's
        ``learn_sigma``): keep the first ``C`` channels. ``None``: decide from the output's channels
        (``2C`` means learned sigma, ``C`` means plain; anything else raises).
    batch_size : at most this many images per network call (memory bound for large ensembles), or
        ``"auto"``: as many as fit in half the device's free memory by :meth:`activation_bytes_per_image` (by
        :meth:`graph_bytes_per_image` for the Tweedie potential, whose network calls keep their graph). It bounds
        the Tweedie potential's gradient passes too, which take the particles a slice at a time.
    train_schedule : the VP schedule the network was trained on (default ``VPSchedule()``, the limit of the
        1000-step DDPM linear betas). Used when ``schedule`` is a :class:`VESchedule`: the sampler then works
        in VE (EDM) coordinates and the VP network is called as EDM does, on ``x_vp = x / sqrt(1 + sigma^2)``
        at the VP time whose ``alpha`` is ``1 / sqrt(1 + sigma^2)``; the score is ``-eps_hat / sigma``.
    cuda_graph : capture each network call shape in a CUDA graph once and replay it (the network on a CUDA
        device; calls that need gradients run eagerly). Saves the launch overhead of the network's
        hundreds of kernels per call: on an H200 the FFHQ ADM with ``to_inference`` at batch 16 runs 711 images/s
        replayed against 307 eager, at batch 64 747 against 721; a whole N = 256 restoration 1% faster
        (``docs/network.md``).
    """

    def __init__(self, net: torch.nn.Module, schedule: Schedule | None = None, event_shape=None,
                 num_train_steps: int = 1000, learned_sigma: bool | None = None, batch_size: int | None = None,
                 autocast_dtype: torch.dtype | None = None, train_schedule: VPSchedule | None = None,
                 cuda_graph: bool = False):
        if event_shape is None:
            raise ValueError("EpsilonModel needs event_shape=(C, H, W)")
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"net must be a torch.nn.Module called as net(x, timesteps) (the noise-prediction "
                            f"network); got {type(net).__name__}")
        for name, value, kind in (("schedule", schedule, Schedule), ("train_schedule", train_schedule, VPSchedule)):
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{name} must be an afdps {kind.__name__} (e.g. afdps.VPSchedule() or "
                                f"afdps.VESchedule(80.0)), got {value!r}")
        if isinstance(event_shape, (str, bytes)) or not hasattr(event_shape, "__iter__"):
            raise ValueError(f"event_shape must be a tuple of positive integers, (C, H, W) for images, got "
                             f"{event_shape!r}")
        event_shape = tuple(check_int("event_shape entries", v, 1) for v in event_shape)
        num_train_steps = check_int("num_train_steps", num_train_steps, 1)
        if learned_sigma not in (None, True, False):
            raise ValueError(f"learned_sigma must be True, False or None (decided from the output), got "
                             f"{learned_sigma!r}")
        if autocast_dtype is not None and not isinstance(autocast_dtype, torch.dtype):
            raise TypeError(f"autocast_dtype must be a torch.dtype (torch.bfloat16) or None, got {autocast_dtype!r}")
        if not isinstance(cuda_graph, bool):
            raise TypeError(f"cuda_graph must be True or False, got {cuda_graph!r}")
        net.eval()  # sampling runs the network in eval mode, as load_prior leaves it (dropout off, norms frozen)
        self.net = net
        self.schedule = schedule if schedule is not None else VPSchedule()
        self.train_schedule = train_schedule if train_schedule is not None else VPSchedule()
        if isinstance(self.schedule, VESchedule):
            top = math.sqrt(1.0 / float(self.train_schedule.alpha(self.train_schedule.T)) ** 2 - 1.0)
            if self.schedule.sigma_max > top:
                raise ValueError(f"VESchedule(sigma_max={self.schedule.sigma_max:g}) goes beyond the noise the VP network "
                                 f"was trained on (sigma / alpha at its T: {top:.4g})")
        self.event_shape = event_shape
        self.num_train_steps = num_train_steps
        self.learned_sigma = learned_sigma
        if batch_size is not None and batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(
                batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, 'auto' or None, got {batch_size!r}")
        self.batch_size = batch_size
        self.auto_batch = None  # the batch "auto" chose (network_batch)
        self._activation_bytes = None
        self._graph_bytes = None
        self.autocast_dtype = autocast_dtype
        self.calls = 0
        self.cuda_graph = bool(cuda_graph)
        self._graphs: dict = {}  # (shape, dtype, device) -> (graph, static input, static timesteps, static output)

    def activation_bytes_per_image(self) -> int:
        """An upper bound on the network's activation memory per image in a forward pass without gradients.

        On a CUDA device it is measured: half the peak the allocator saw above its starting point during one
        forward of 2 images (the peak is ``F + 2 s`` for fixed workspace ``F`` and ``s`` per image, so
        ``b (F / 2 + s)`` bounds any batch ``b >= 2``); this resets the device's peak-memory statistics once.
        Elsewhere it is counted: the bytes of every leaf module's output for one image on fake tensors
        (nothing computed). The count misses what a network computes outside modules (the fused kernels of
        ``ADMUNet.to_inference``: 0.1 MB counted per FFHQ image), which the measurement sees. Measured on the
        shipped MNIST prior (this project's CPU): 7.4 MB counted, 1.6-1.9 MB of actual peak per image at
        batches of 1024 and 256."""
        if self._activation_bytes is None:
            params = list(self.net.parameters())
            device = params[0].device if params else torch.device("cpu")
            if device.type == "cuda":
                self._activation_bytes = self._measured_bytes_per_image(device)
            else:
                self._activation_bytes = self._counted_bytes_per_image(device)
        return self._activation_bytes

    def _measured_bytes_per_image(self, device) -> int:
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.no_grad():
            x = torch.zeros(2, *self.event_shape, device=device)
            out = self.net(x, torch.full((2,), self.num_train_steps / 2.0, device=device))
            del out, x
        torch.cuda.synchronize(device)
        return max(1, int(torch.cuda.max_memory_allocated(device) - base) // 2)

    def _counted_bytes_per_image(self, device, grad: bool = False) -> int:
        """Every leaf module's output bytes for one image, on fake tensors; with ``grad`` in a pass that builds a
        graph (a network may take other paths then: an ADM network's fused kernels have no backward)."""
        from torch._subclasses.fake_tensor import FakeTensorMode  # a torch internal, needed only here

        total = [0]

        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor):
                total[0] += output.numel() * output.element_size()

        leaves = [m for m in self.net.modules() if not list(m.children())]
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            with FakeTensorMode(allow_non_fake_inputs=True), torch.set_grad_enabled(grad):
                x = torch.zeros(1, *self.event_shape, device=device).requires_grad_(grad)
                self.net(x, torch.zeros(1, device=device))
        finally:
            for h in handles:
                h.remove()
        return int(total[0])

    def graph_bytes_per_image(self) -> int:
        """An upper bound on the memory per image of a forward pass that keeps its autograd graph (the Tweedie
        potential's VJP): every leaf module's output in such a pass counted (a graph keeps about that much: on the
        shipped MNIST network 7.39 MB counted against 7.38 MB of tensors autograd saves; a fused ADM network
        counts its modules here, which its differentiating passes take), or the no-grad peak where that is
        larger."""
        if self._graph_bytes is None:
            params = list(self.net.parameters())
            device = params[0].device if params else torch.device("cpu")
            self._graph_bytes = max(self.activation_bytes_per_image(),
                                    self._counted_bytes_per_image(device, grad=True))
        return self._graph_bytes

    def network_batch(self, rows: int, free_bytes: int | None, grad: bool = False) -> int:
        """Images per network call for ``rows`` images: ``batch_size``, or with ``"auto"`` as many as fit in
        half of ``free_bytes`` (all of them when the free memory is unknown) at :meth:`activation_bytes_per_image`
        each (:meth:`graph_bytes_per_image` with ``grad``: calls that keep their graph), kept as
        :attr:`auto_batch` for the following calls."""
        if self.batch_size == "auto":
            per = self.graph_bytes_per_image() if grad else self.activation_bytes_per_image()
            rows = rows if free_bytes is None else max(1, min(rows, int(0.5 * free_bytes // max(per, 1))))
            self.auto_batch = rows
            return rows
        return min(rows, self.batch_size) if self.batch_size else rows

    def graph_rows(self, rows: int) -> int:
        """Images per slice of a gradient through the network (the Tweedie potential): one network call's (a slice
        holds one particle of every image at least, so more where the images outnumber it)."""
        chunk = self.auto_batch if self.batch_size == "auto" else self.batch_size
        return min(rows, chunk) if chunk else rows

    def _vp_time(self, t) -> float:
        """The VP (training) time of sampler time ``t``: ``t`` itself, or for a VE schedule the time with
        ``alpha = 1 / sqrt(1 + sigma^2)``."""
        if isinstance(self.schedule, VESchedule):
            return self.train_schedule.time_of_alpha(1.0 / math.sqrt(1.0 + float(t) ** 2))
        return float(t)

    def _vp_scale(self, t) -> float:
        """``x_vp = scale * x``: 1, or ``1 / sqrt(1 + sigma^2)`` for a VE schedule."""
        return 1.0 / math.sqrt(1.0 + float(t) ** 2) if isinstance(self.schedule, VESchedule) else 1.0

    def timestep(self, t) -> float:
        """Network input for continuous time ``t``: ``num_train_steps * tau - 1``, ``tau`` the VP time."""
        return self.num_train_steps * self._vp_time(t) - 1.0

    def epsilon(self, x: torch.Tensor, t, *, grad: bool = False) -> torch.Tensor:
        """The network's noise prediction for ``x`` at continuous time ``t``.

        ``grad=True`` keeps the autograd graph through the network (for DPS-style guidance, which
        differentiates through the denoiser); by default no graph is built.
        """
        check_score_input(self, x, t)
        with torch.set_grad_enabled(grad):
            return self._epsilon(x, t)

    def _epsilon(self, x: torch.Tensor, t) -> torch.Tensor:
        if self.net.training:
            raise ValueError("the network is in training mode (net.train() was called after EpsilonModel was made): "
                             "dropout and batch norm would make the run depend on more than its seed; call "
                             "net.eval()")
        p = next(self.net.parameters(), None)
        if p is not None and p.device != x.device:
            raise ValueError(f"the network's parameters are on {p.device}, the particles on {x.device}: move one of "
                             f"them (net.to(device), or the measurement y to {p.device})")
        lead = x.shape[: x.dim() - len(self.event_shape)]
        flat = x.reshape(-1, *self.event_shape)
        scale = self._vp_scale(t)
        if scale != 1.0:
            flat = flat * scale
        C = self.event_shape[0]
        chunk = self.auto_batch if self.batch_size == "auto" else self.batch_size
        chunk = chunk or flat.shape[0]
        outs = []
        for i in range(0, flat.shape[0], chunk):
            xb = flat[i:i + chunk]
            ts = torch.full((xb.shape[0],), self.timestep(t), device=xb.device, dtype=torch.float32)
            if self.cuda_graph and not (torch.is_grad_enabled() and xb.requires_grad):
                out = self._graphed(xb, ts)
            else:
                out = self._forward(xb, ts)
            self.calls += 1
            if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.dim() != xb.dim() or \
                    out.shape[0] != xb.shape[0] or tuple(out.shape[2:]) != tuple(xb.shape[2:]):
                got = (f"{str(out.dtype)[6:]} of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor)
                       else type(out).__name__)
                raise ValueError(f"the network returned {got} for a batch of shape {tuple(xb.shape)}; it must return "
                                 f"floats of shape {(xb.shape[0], 'C or 2C', *xb.shape[2:])} (noise, and "
                                 "learned variances if any)")
            if out.shape[1] == C and self.learned_sigma is not True:
                eps = out
            elif out.shape[1] == 2 * C and self.learned_sigma is not False:
                eps = out[:, :C]
            else:
                raise ValueError(f"network returned {out.shape[1]} channels for {C}-channel images "
                                 f"(learned_sigma={self.learned_sigma})")
            outs.append(eps.to(x.dtype))
        return torch.cat(outs).reshape(*lead, *self.event_shape)

    def score(self, x, t, *, grad: bool = False):
        return -self.epsilon(x, t, grad=grad) / float(self.schedule.sigma(t))

    def _forward(self, xb, ts):
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=xb.device.type, dtype=self.autocast_dtype):
                return self.net(xb, ts)
        return self.net(xb, ts)

    GRAPH_SHAPES = 4
    """Most network-call shapes kept captured by ``cuda_graph=True`` (the least recently used goes first)."""

    def _graphed(self, xb, ts):
        """The network call replayed from a CUDA graph captured once per input shape (``cuda_graph=True``):
        the inputs are copied into the graph's static buffers, its output copied out. Inside a capture already
        running (``sample(..., cuda_graph=True)`` records the whole run, network included) it is a plain call.
        Calls that need gradients (the Tweedie potential's VJP) never use the graphs."""
        if xb.device.type != "cuda":
            raise ValueError(f"EpsilonModel(cuda_graph=True) captures CUDA graphs; the network input is on {xb.device} "
                             "(move the prior to a CUDA device or pass cuda_graph=False)")
        if torch.cuda.is_current_stream_capturing():
            return self._forward(xb, ts)
        key = (tuple(xb.shape), xb.dtype, xb.device)
        if key in self._graphs:
            self._graphs[key] = self._graphs.pop(key)  # most recently used last
        else:
            while len(self._graphs) >= self.GRAPH_SHAPES:  # each graph holds its own memory pool
                self._graphs.pop(next(iter(self._graphs)))
            sx, st = xb.clone(), ts.clone()
            side = torch.cuda.Stream(device=xb.device)
            side.wait_stream(torch.cuda.current_stream(xb.device))
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(2):  # warm-up: cuDNN's algorithm choice and Triton's compilation happen here
                    self._forward(sx, st)
            torch.cuda.current_stream(xb.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.no_grad():
                so = self._forward(sx, st)
            self._graphs[key] = (graph, sx, st, so)
        graph, sx, st, so = self._graphs[key]
        sx.copy_(xb)
        st.copy_(ts)
        graph.replay()
        return so.clone()


def score_with_graph(prior, x: torch.Tensor, t, what: str = "this method") -> torch.Tensor:
    """``prior.score(x, t)`` with its autograd graph to ``x`` (through the network of an
    :class:`EpsilonModel`, or through any prior whose score is written in torch operations)."""
    if isinstance(prior, EpsilonModel):
        return prior.score(x, t, grad=True)
    with torch.enable_grad():
        s = prior.score(x, t)
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"{type(prior).__name__}.score(x, t) returned {type(s).__name__} "
                        f"{tuple(getattr(s, 'shape', ()))} for particles of shape {tuple(x.shape)}; it must return a "
                        "torch tensor of the shape of x")
    if not s.requires_grad:
        raise TypeError(f"{what} differentiates through the prior's score, but {type(prior).__name__}.score returned "
                        "a tensor without an autograd graph")
    return s
