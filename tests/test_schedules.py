"""Schedules (engine/schedules.py): closed forms against autograd, time grids, the DDPM ancestral step."""
import math

import pytest
import torch

import afdps
from afdps.engine.schedules import ancestral_step


def test_vp_schedule_closed_forms():
    s = afdps.VPSchedule()
    t = torch.tensor([1e-3, 0.3, 1.0], dtype=torch.float64)
    integral = 0.1 * t + 0.5 * t**2 * 19.9
    torch.testing.assert_close(s.alpha(t), torch.exp(-0.5 * integral))
    torch.testing.assert_close(s.alpha(t) ** 2 + s.sigma(t) ** 2, torch.ones(3, dtype=torch.float64))
    # d/dt log alpha = f
    tt = t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.log(s.alpha(tt)).sum(), tt)
    torch.testing.assert_close(g, s.f(t))
    torch.testing.assert_close(s.g2(t), 0.1 + 19.9 * t)
    # d sigma^2/dt = 2 f sigma^2 + g^2 (the variance ODE of the noising SDE)
    (v,) = torch.autograd.grad((s.sigma(tt) ** 2).sum(), tt)
    torch.testing.assert_close(v, 2 * s.f(t) * s.sigma(t) ** 2 + s.g2(t))
    ts = s.timesteps(10)
    assert ts[0] == 1.0 and ts[-1] == pytest.approx(1e-3) and len(ts) == 11


def test_ve_schedule():
    s = afdps.VESchedule(sigma_max=80.0)
    t = torch.tensor([0.5, 10.0], dtype=torch.float64)
    torch.testing.assert_close(s.sigma(t), t)
    torch.testing.assert_close(s.g2(t), 2 * t)  # d sigma^2 / dt
    ts = s.timesteps(5)
    assert ts[0] == pytest.approx(80.0) and ts[-1] == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="sigma_max"):
        afdps.VESchedule(sigma_max=-1)


def test_time_grid_power_and_validation():
    s = afdps.VPSchedule()
    u, p2 = s.timesteps(8), s.timesteps(8, 2.0)
    assert torch.all(u[1:] < u[:-1]) and torch.all(p2[1:] < p2[:-1])
    assert float(p2[-2] - p2[-1]) < float(u[-2] - u[-1])  # power 2: shorter steps at the data end
    with pytest.raises(ValueError, match="power must be a finite number >= 1"):
        s.timesteps(8, 0.5)


def test_ancestral_step_is_the_gaussian_posterior_q():
    """q(x_s | x_t, x0) of the VP process, checked against Bayes' rule for the scalar Gaussian chain
    x_s = alpha_s x0 + sigma_s e1, x_t = (alpha_t / alpha_s) x_s + sigma_{t|s} e2 in float64."""
    sched = afdps.VPSchedule()
    t, s = 0.7, 0.4
    a_t, s_t, a_s, s_s = (float(v) for v in (sched.alpha(t), sched.sigma(t), sched.alpha(s), sched.sigma(s)))
    a = a_t / a_s
    var_ts = s_t ** 2 - a ** 2 * s_s ** 2
    x0, xt = torch.tensor([0.3], dtype=torch.float64), torch.tensor([-0.8], dtype=torch.float64)
    # Bayes: prior x_s ~ N(a_s x0, s_s^2), likelihood x_t | x_s ~ N(a x_s, var_ts)
    prec = 1 / s_s ** 2 + a ** 2 / var_ts
    mean = (a_s * x0 / s_s ** 2 + a * xt / var_ts) / prec
    torch.testing.assert_close(ancestral_step(sched, xt, x0, t, s, None), mean, rtol=1e-12, atol=1e-14)
    z = torch.tensor([1.5], dtype=torch.float64)
    torch.testing.assert_close(ancestral_step(sched, xt, x0, t, s, z), mean + math.sqrt(1 / prec) * z,
                               rtol=1e-12, atol=1e-14)
