"""Noising SDEs ``dX = f(tau) X dtau + g(tau) dW`` and their marginals ``X_tau = alpha X_0 + sigma Z``.

Every method takes and returns tensors (python floats are accepted and returned as 0-d float64
tensors), so the same formulas serve scalar step coefficients and per-sample times.
"""
from __future__ import annotations

import math

import torch

__all__ = ["Schedule", "VPSchedule", "VESchedule", "ancestral_step", "check_schedule"]


def _t(t) -> torch.Tensor:
    return t if torch.is_tensor(t) else torch.tensor(float(t), dtype=torch.float64)


class Schedule:
    """Interface: ``alpha``, ``sigma``, ``f``, ``g2`` on tensors; ``T``, ``tau_min``, ``rho``."""

    T: float
    tau_min: float
    rho: float  # standard deviation of the (Gaussian) marginal at tau = T

    def alpha(self, t):
        raise NotImplementedError

    def sigma(self, t):
        raise NotImplementedError

    def f(self, t):
        raise NotImplementedError

    def g2(self, t):
        raise NotImplementedError

    def timesteps(self, num_steps: int, power: float = 1.0) -> torch.Tensor:
        """``num_steps + 1`` times from ``T`` down to ``tau_min`` (float64):
        ``tau_k = tau_min + (T - tau_min) (1 - k / K)^power``. ``power = 1`` is uniform; ``power = 2``
        shortens the steps near the data end, where the prior drift of fine image detail is stiff."""
        if not (power >= 1.0 and math.isfinite(power)):
            raise ValueError(f"time grid power must be a finite number >= 1, got {power!r}")
        u = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64) ** power
        return self.tau_min + (self.T - self.tau_min) * u


class VPSchedule(Schedule):
    """Variance preserving: ``beta(tau) = beta_min + tau (beta_max - beta_min)`` on ``[0, 1]``.

    ``f = -beta / 2``, ``g^2 = beta``, ``alpha = exp(-int_0^tau beta / 2)``, ``sigma^2 = 1 - alpha^2``.
    The defaults are the continuous limit of the 1000-step DDPM linear schedule (beta 1e-4 to 0.02).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, tau_min: float = 1e-3):
        if not (0 < beta_min <= beta_max) or not math.isfinite(beta_max):
            raise ValueError(f"VPSchedule needs 0 < beta_min <= beta_max < inf, got beta_min={beta_min}, beta_max={beta_max}")
        if not (0 < tau_min < 1):
            raise ValueError(f"VPSchedule tau_min must be in (0, 1), got {tau_min}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.T, self.tau_min, self.rho = 1.0, float(tau_min), 1.0

    def beta(self, t):
        return self.beta_min + _t(t) * (self.beta_max - self.beta_min)

    def _log_alpha(self, t):
        t = _t(t)
        return -0.5 * (self.beta_min * t + 0.5 * t * t * (self.beta_max - self.beta_min))

    def alpha(self, t):
        return torch.exp(self._log_alpha(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(2.0 * self._log_alpha(t)))

    def f(self, t):
        return -0.5 * self.beta(t)

    def g2(self, t):
        return self.beta(t)

    def time_of_alpha(self, alpha: float) -> float:
        """The time ``tau`` at which ``alpha(tau) = alpha`` (inverse of the closed form: ``beta_min tau +
        (beta_max - beta_min) tau^2 / 2 = -2 log alpha``)."""
        L = -2.0 * math.log(float(alpha))
        db = self.beta_max - self.beta_min
        if db == 0.0:
            return L / self.beta_min
        return (-self.beta_min + math.sqrt(self.beta_min ** 2 + 2.0 * db * L)) / db

    def __repr__(self):
        return f"VPSchedule(beta_min={self.beta_min}, beta_max={self.beta_max})"


class VESchedule(Schedule):
    """Variance exploding (EDM): ``f = 0``, ``sigma(tau) = tau``, ``g^2 = 2 tau``, ``tau`` in ``[tau_min, sigma_max]``.

    Time grid (``timesteps``): ``grid="geometric"`` (log-uniform in ``sigma``) or ``grid="edm"`` (Karras et
    al. 2022: ``sigma_i = (sigma_max^(1/r) + i / K (tau_min^(1/r) - sigma_max^(1/r)))^r``, ``r = grid_rho``,
    7 by default). A VP-trained network runs in these coordinates through
    :class:`afdps.engine.priors.EpsilonModel` (EDM's convention ``x_vp = x_ve / sqrt(1 + sigma^2)``).
    """

    def __init__(self, sigma_max: float = 80.0, tau_min: float = 2e-3, grid: str = "geometric",
                 grid_rho: float = 7.0):
        if not (0 < tau_min < sigma_max < math.inf):
            raise ValueError(f"VESchedule needs 0 < tau_min < sigma_max < inf, got tau_min={tau_min}, sigma_max={sigma_max}")
        if grid not in ("geometric", "edm"):
            raise ValueError(f"VESchedule grid={grid!r} is not one of 'geometric', 'edm'")
        if not (float(grid_rho) > 0 and math.isfinite(float(grid_rho))):
            raise ValueError(f"VESchedule grid_rho must be positive and finite, got {grid_rho!r}")
        self.sigma_max = float(sigma_max)
        self.grid, self.grid_rho = grid, float(grid_rho)
        self.T, self.tau_min, self.rho = float(sigma_max), float(tau_min), float(sigma_max)

    def alpha(self, t):
        return torch.ones_like(_t(t))

    def sigma(self, t):
        return _t(t).clone()

    def f(self, t):
        return torch.zeros_like(_t(t))

    def g2(self, t):
        return 2.0 * _t(t)

    def timesteps(self, num_steps: int, power: float = 1.0) -> torch.Tensor:
        """Geometric in ``sigma``, or the EDM grid (``power`` is not used: both are already dense near the
        data end)."""
        if self.grid == "edm":
            r = self.grid_rho
            u = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
            return (self.T ** (1 / r) + u * (self.tau_min ** (1 / r) - self.T ** (1 / r))) ** r
        return torch.logspace(math.log10(self.T), math.log10(self.tau_min), num_steps + 1, dtype=torch.float64)

    def __repr__(self):
        extra = f", grid='edm', grid_rho={self.grid_rho}" if self.grid == "edm" else ""
        return f"VESchedule(sigma_max={self.sigma_max}, tau_min={self.tau_min}{extra})"


def ancestral_step(schedule: Schedule, x: torch.Tensor, x0: torch.Tensor, t: float, s: float,
                   noise: torch.Tensor | None) -> torch.Tensor:
    """One DDPM ancestral step (Ho et al., 2020) from time ``t`` to ``s < t`` given the estimate ``x0``.

    Draws ``x_s ~ q(x_s | x_t, x0)``: mean ``(a sigma_s^2 x_t + alpha_s sigma_{t|s}^2 x0) / sigma_t^2`` and
    variance ``sigma_{t|s}^2 sigma_s^2 / sigma_t^2``, with ``a = alpha_t / alpha_s`` and
    ``sigma_{t|s}^2 = sigma_t^2 - a^2 sigma_s^2``. ``noise`` (standard normal, the shape of ``x``) may be
    ``None`` for the posterior mean.
    """
    a_t, s_t = float(schedule.alpha(t)), float(schedule.sigma(t))
    a_s, s_s = float(schedule.alpha(s)), float(schedule.sigma(s))
    a = a_t / a_s
    var_ts = s_t ** 2 - a ** 2 * s_s ** 2
    mean = (a * s_s ** 2 * x + a_s * var_ts * x0) / s_t ** 2
    if noise is None:
        return mean
    return mean + math.sqrt(max(var_ts * s_s ** 2 / s_t ** 2, 0.0)) * noise


def check_schedule(schedule):
    """``schedule`` if it is ``None`` or a :class:`Schedule` (a text such as ``"vp"`` was taken and failed later)."""
    if schedule is not None and not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a VPSchedule or VESchedule, got {type(schedule).__name__}")
    return schedule
