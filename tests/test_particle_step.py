"""Fused particle step (kernels/particle_step.py): the Triton kernel against the PyTorch reference (spec
section 2), element by element, with the noise drawn in-kernel from the same Philox stream.

Tolerances: tests/tolerances.py. Shapes: R = B * N in {1, 7, 257} and D in {1, 3, 129, 3*61*61},
combined so that the file stays under a minute under the interpreter (the 257-row and the 11163-pixel
cases are not crossed). Block sizes are forced small in a few cases so that several blocks per row,
and so the float64 combination of the block partials, are exercised under the interpreter too.
"""
import math

import pytest
import torch
from kernel_inputs import particle_rows as _inputs
from tolerances import DEVICE, TOL, assert_bf16_rule, assert_close_elementwise, assert_close_reduction

from afdps.kernels import langevin as lv
from afdps.kernels import particle_step as ps
from afdps.kernels._triton import HAS_TRITON
from afdps.kernels.philox import randn_rows

pytestmark = [pytest.mark.interpreter, pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")]

BASE = dict(f=-0.35, g2=1.7, h=0.013, lam=0.8, lap_mu=41.0)


def _kw(N, *, eta=1.0, sde=True, euler=True):
    return dict(num_particles=N, eta=eta, v2=BASE["g2"] if sde else 0.0, euler=euler, **BASE)


def _rate_scale(x, s, g, kw):
    """Per row: h times the sum of |terms| that the rate adds (float64)."""
    xf, sf, gm = x.double(), s.double(), kw["lam"] * g.double()
    c = -kw["f"] * xf + 0.5 * (kw["g2"] + kw["v2"]) * sf
    v2, eta = abs(kw["v2"]), kw["eta"]
    L = abs(kw["lam"] * kw["lap_mu"])
    terms = (c * gm).abs().sum(-1) + v2 * (1.5 + abs(1 - eta)) * ((gm * gm).sum(-1) + (sf * gm).abs().sum(-1) + L)
    return kw["h"] * terms


def _run_step(x, s, g, keys, kw, block=None):
    if block is None:
        return ps.particle_step_triton(x, s, g, keys, **kw)
    params = ps.particle_step_params(**{k: kw[k] for k in ps.PARAM_NAMES}, device=x.device)
    return ps.particle_step_launch(x, s, g, keys, params, num_particles=kw["num_particles"],
                                   euler=kw["euler"] and kw["eta"] * kw["v2"] != 0, noise=kw["v2"] > 0, block=block)


def _check_step(B, N, D, dtypes, block=None, **opts):
    x, s, g, keys = _inputs(B, N, D, dtypes)
    kw = _kw(N, **opts)
    out, dlogw = _run_step(x, s, g, keys, kw, block)
    ref, dref = ps.particle_step_ref(x, s, g, keys, **kw)
    assert out.dtype == x.dtype and out.shape == x.shape and dlogw.dtype == torch.float64 and dlogw.shape == (B * N,)
    if x.dtype == torch.bfloat16:
        oracle, doracle = ps.particle_step_ref(x.double(), s.double(), g.double(), keys, **kw)
        assert_bf16_rule(out, ref, oracle)
        assert_close_reduction(dlogw, doracle, _rate_scale(x, s, g, kw), torch.bfloat16)
    else:
        assert_close_elementwise(out, ref, x.dtype, noise_scale=math.sqrt(kw["v2"] * kw["h"]))
        assert_close_reduction(dlogw, dref, _rate_scale(x, s, g, kw), x.dtype)


@pytest.mark.parametrize("B,N,D", [(1, 1, 1), (1, 7, 3), (7, 1, 129), (1, 257, 1), (257, 1, 129), (1, 7, 3 * 61 * 61),
                                   (7, 1, 3 * 61 * 61)])
def test_step_float32_shapes(B, N, D):
    _check_step(B, N, D, torch.float32)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0, -0.3])
@pytest.mark.parametrize("sde", [True, False], ids=["sde", "ode"])
@pytest.mark.parametrize("euler", [True, False], ids=["euler", "exact"])
def test_step_coefficients(eta, sde, euler):
    """All guidance weights (incl. 0, the FK-corrector 0.5, AFDPS 1), the ODE predictor (v2 = 0, no noise),
    and the explicit guidance term on or off."""
    _check_step(1, 7, 129, torch.float32, eta=eta, sde=sde, euler=euler)


@pytest.mark.parametrize("B,N,D,block", [(1, 7, 129, 16), (2, 3, 3 * 61 * 61, 1024), (1, 3, 5, 4)])
def test_step_several_blocks_per_row(B, N, D, block):
    _check_step(B, N, D, torch.float32, block=block)
    _check_step(B, N, D, torch.float32, block=block, eta=0.5, sde=False)


@pytest.mark.parametrize("D", [129, 3 * 61 * 61])
def test_step_bfloat16_storage(D):
    _check_step(1, 7, D, torch.bfloat16)


def test_step_mixed_storage():
    """bfloat16 x and score with a float32 grad_mu."""
    _check_step(2, 3, 129, (torch.bfloat16, torch.bfloat16, torch.float32), eta=0.5)


def test_step_float64():
    _check_step(1, 7, 129, torch.float64)
    _check_step(3, 2, 33, torch.float64, block=8, eta=0.5, euler=False)


def test_step_noise_is_the_philox_stream():
    """With x = s = grad_mu = 0, f = 0, v2 = h = 1 the step returns the noise itself."""
    B, N, D = 2, 5, 131
    keys = torch.tensor([123456789, -987654321987], dtype=torch.int64, device=DEVICE)
    zero = torch.zeros(B * N, D, device=DEVICE)
    out, dlogw = ps.particle_step_triton(zero, zero, zero, keys, num_particles=N, f=0.0, g2=1.0, v2=1.0, eta=1.0,
                                         h=1.0, lam=1.0, lap_mu=0.0, euler=True)
    z = randn_rows(keys, N, D).reshape(B * N, D)
    torch.testing.assert_close(out, z, rtol=1e-5, atol=1e-5)
    assert bool((dlogw == 0).all())


def test_step_dispatch():
    x, s, g, keys = _inputs(1, 3, 10, torch.float32)
    kw = _kw(3)
    ref = ps.particle_step_ref(x, s, g, keys, **kw)
    off = ps.particle_step(x, s, g, keys, **kw, use_triton=False)
    assert torch.equal(off[0], ref[0]) and torch.equal(off[1], ref[1])
    on = ps.particle_step(x, s, g, keys, **kw, use_triton=True)
    auto = ps.particle_step(x, s, g, keys, **kw)
    # the one rule (kernels/backend.py): auto is the kernel on CUDA, the reference elsewhere
    picked = on if x.device.type == "cuda" else off
    assert torch.equal(picked[0], auto[0]) and torch.equal(picked[1], auto[1])
    assert_close_elementwise(on[0], ref[0], torch.float32, noise_scale=1.0)


def test_step_rejects_bad_shapes():
    x, s, g, keys = _inputs(2, 3, 10, torch.float32)
    with pytest.raises(ValueError, match="num_particles"):
        ps.particle_step_triton(x, s, g, keys, **_kw(4))
    with pytest.raises(ValueError, match="score"):
        ps.particle_step_triton(x, s[:, :5], g, keys, **_kw(3))
    with pytest.raises(ValueError, match="keys"):
        ps.particle_step_triton(x, s, g, keys[:1], **_kw(3))


def test_tolerance_table_covers_the_dtypes():
    assert set(TOL) == {torch.float32, torch.float64, torch.bfloat16}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_launch_never_synchronises():
    x, s, g, keys = _inputs(2, 4, 1000, torch.float32)
    params = ps.particle_step_params(**{k: v for k, v in _kw(4).items() if k in ps.PARAM_NAMES}, device=x.device)
    lparams = lv.langevin_step_params(lam=0.5, snr=0.1, device=x.device)
    for _ in range(2):  # the first round compiles
        if _:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            ps.particle_step_launch(x, s, g, keys, params, num_particles=4, euler=True, noise=True)
            lv.langevin_step_launch(x, s, g, keys, lparams, num_particles=4)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.parametrize("impl", ["ref", "triton"])
def test_row0_draws_the_noise_of_the_global_particle(impl):
    """A process holding particles 3..5 of each image (``row0 = 3``, ``num_particles = 3``) gets exactly those
    rows of the whole ensemble's step (the particle-parallel mode's contract): bit for bit, in each backend."""
    B, N, D = 2, 6, 129
    x, s, g, keys = _inputs(B, N, D, (torch.float32,) * 3)
    kw = _kw(N)
    fn = ps.particle_step_ref if impl == "ref" else ps.particle_step_triton
    whole, dwhole = fn(x, s, g, keys, **kw)
    rows = torch.arange(B * N).view(B, N)[:, 3:].reshape(-1)
    part, dpart = fn(x[rows], s[rows], g[rows], keys, **{**kw, "num_particles": 3}, row0=3)
    assert torch.equal(part, whole[rows]) and torch.equal(dpart, dwhole[rows])
    torch.testing.assert_close(randn_rows(keys, 3, D, row0=3), randn_rows(keys, N, D)[:, 3:], rtol=0, atol=0)
