"""Langevin corrector of AFDPS-ODE (kernels/langevin.py): the Triton kernels against the PyTorch reference,
and the reference against the equation (spec section 2).

Tolerances: tests/tolerances.py. Block sizes are forced small in a few cases so that several blocks per
row, and so the float64 combination of the block partials, are exercised under the interpreter too.
"""
import math

import pytest
import torch
from kernel_inputs import particle_rows as _inputs
from tolerances import assert_bf16_rule, assert_close_elementwise, assert_close_reduction

from afdps.kernels import langevin as lv
from afdps.kernels._triton import HAS_TRITON
from afdps.kernels.philox import randn_rows

pytestmark = [pytest.mark.interpreter, pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")]


def _check_langevin(B, N, D, dtypes, block=None, lam=0.7, snr=0.16):
    x, s, g, keys = _inputs(B, N, D, dtypes, seed=1)
    if block is None:
        out, e = lv.langevin_step_triton(x, s, g, keys, num_particles=N, lam=lam, snr=snr)
    else:
        out, e = lv.langevin_step_launch(x, s, g, keys, lv.langevin_step_params(lam=lam, snr=snr, device=x.device),
                                         num_particles=N, block=block)
    ref, eref = lv.langevin_step_ref(x, s, g, keys, num_particles=N, lam=lam, snr=snr)
    assert e.shape == (B,) and e.dtype == torch.float64
    if x.dtype == torch.bfloat16:
        oracle, eoracle = lv.langevin_step_ref(x.double(), s.double(), g.double(), keys, num_particles=N, lam=lam,
                                               snr=snr)
        assert_bf16_rule(out, ref, oracle)
        assert_close_reduction(e, eoracle, eoracle, torch.float32)
    else:
        assert_close_reduction(e, eref, eref, x.dtype if x.dtype == torch.float32 else torch.float32)
        assert_close_elementwise(out, ref, x.dtype, noise_scale=math.sqrt(2 * float(eref.max())))


@pytest.mark.parametrize("B,N,D", [(1, 1, 1), (3, 5, 3), (1, 7, 129), (1, 70, 3), (1, 7, 3 * 61 * 61)])
def test_langevin_float32_shapes(B, N, D):
    """(1, 70, 3): the per-image mean runs over two chunks of 64 particles."""
    _check_langevin(B, N, D, torch.float32)


@pytest.mark.parametrize("B,N,D,block", [(2, 3, 129, 16), (1, 7, 1031, 64)])
def test_langevin_several_blocks_per_row(B, N, D, block):
    _check_langevin(B, N, D, torch.float32, block=block)


def test_langevin_bfloat16_and_float64():
    _check_langevin(2, 3, 129, torch.bfloat16)
    _check_langevin(2, 3, 129, torch.float64)


def test_langevin_dispatch():
    x, s, g, keys = _inputs(2, 2, 9, torch.float32)
    ref = lv.langevin_step_ref(x, s, g, keys, num_particles=2, lam=0.5, snr=0.1)
    off = lv.langevin_step(x, s, g, keys, num_particles=2, lam=0.5, snr=0.1, use_triton=False)
    assert torch.equal(off[0], ref[0]) and torch.equal(off[1], ref[1])
    on = lv.langevin_step(x, s, g, keys, num_particles=2, lam=0.5, snr=0.1, use_triton=True)
    torch.testing.assert_close(on[1], ref[1], rtol=1e-5, atol=0)
    auto = lv.langevin_step(x, s, g, keys, num_particles=2, lam=0.5, snr=0.1)
    assert torch.equal(auto[0], (on if x.device.type == "cuda" else off)[0])


def test_langevin_reference_is_the_equation():
    """The reference against the corrector written out in float64 (spec section 2): Song's step-size rule
    per image from the row norms of the noise and the drift, then ``x + e drift + sqrt(2 e) z``."""
    x, s, g, keys = _inputs(2, 3, 17, torch.float64, seed=4)
    lam, snr = 0.6, 0.2
    out, e = lv.langevin_step_ref(x, s, g, keys, num_particles=3, lam=lam, snr=snr)
    z = randn_rows(keys, 3, 17).double().reshape(6, 17)
    drift = s - lam * g
    for b in range(2):
        rows = slice(3 * b, 3 * b + 3)
        zbar = z[rows].norm(dim=1).mean()
        dbar = drift[rows].norm(dim=1).mean()
        e_b = 2 * (snr * zbar / dbar) ** 2
        torch.testing.assert_close(e[b], e_b, rtol=1e-12, atol=0)
        torch.testing.assert_close(out[rows], x[rows] + e_b * drift[rows] + torch.sqrt(2 * e_b) * z[rows],
                                   rtol=1e-12, atol=1e-12)


def test_langevin_rejects_bad_shapes():
    x, s, g, keys = _inputs(2, 3, 10, torch.float32)
    with pytest.raises(ValueError, match="num_particles"):
        lv.langevin_step_triton(x, s, g, keys, num_particles=4, lam=0.5, snr=0.1)
    with pytest.raises(ValueError, match="grad_mu"):
        lv.langevin_step_triton(x, s, g[:, :5], keys, num_particles=3, lam=0.5, snr=0.1)


@pytest.mark.parametrize("use_triton", [False, True], ids=["reference", "kernel"])
def test_dead_rows_do_not_stop_the_live_ones(use_triton):
    """A particle whose score is NaN or inf (dead) is left out of its image's step-size means: the other
    rows get exactly the step of the ensemble without it, and an image with no live row gets NaN."""
    x, s, g, keys = _inputs(2, 4, 33, torch.float32, seed=7)
    s = s.clone()
    s[1, 5] = float("nan")   # image 0, particle 1
    s[2, 0] = float("inf")   # image 0, particle 2
    out, e = lv.langevin_step(x, s, g, keys, num_particles=4, lam=0.5, snr=0.1, use_triton=use_triton)
    live = [0, 3]
    z = randn_rows(keys, 4, 33).reshape(8, 33).double()
    drift = (s.double() - 0.5 * g.double())
    want = 2 * (0.1 * z[live].norm(dim=1).mean() / drift[live].norm(dim=1).mean()) ** 2
    torch.testing.assert_close(e[0], want, rtol=1e-5, atol=0)
    assert torch.isfinite(out[live]).all() and torch.isfinite(out[4:]).all() and torch.isfinite(e[1])
    s[4:] = float("nan")     # every particle of image 1
    _, e = lv.langevin_step(x, s, g, keys, num_particles=4, lam=0.5, snr=0.1, use_triton=use_triton)
    assert torch.isnan(e[1]) and torch.isfinite(e[0])


@pytest.mark.parametrize("N", [4, 12])  # 12: the size kernel's loop over particles takes two chunks of 8
@pytest.mark.parametrize("use_triton", [False, True], ids=["reference", "kernel"])
def test_rows_marked_dead_are_left_out(use_triton, N, monkeypatch):
    """``live``: a particle with zero weight but a finite state (far out, so it would shrink everybody's step)
    is left out of the step-size means like a non-finite one; it is still moved with its image's step. The
    kernel's chunks hold 8 particles here, not 64, so that two chunks cost 24 rows under the interpreter, not 140
    (27 s for N = 70 on the 2-core CPU); the production chunk of 64 runs in test_langevin_float32_shapes[1-70-3]."""
    monkeypatch.setattr(lv, "SIZE_CHUNK", 8)
    x, s, g, keys = _inputs(2, N, 33, torch.float32, seed=7)
    s = s.clone()
    dead = N - 3             # image 0: a dead particle (in the second chunk for N = 12), with a finite drift
    s[dead] *= 1e3 * N       # large enough to shrink the mean drift norm 100-fold if it counted
    live = torch.ones(2 * N, dtype=torch.bool)
    live[dead] = False
    out, e = lv.langevin_step(x, s, g, keys, num_particles=N, lam=0.5, snr=0.1, use_triton=use_triton, live=live)
    keep = [i for i in range(N) if i != dead]
    z = randn_rows(keys, N, 33).reshape(2 * N, 33).double()
    drift = s.double() - 0.5 * g.double()
    want = 2 * (0.1 * z[keep].norm(dim=1).mean() / drift[keep].norm(dim=1).mean()) ** 2
    torch.testing.assert_close(e[0], want, rtol=1e-5, atol=0)
    _, e_all = lv.langevin_step(x, s, g, keys, num_particles=N, lam=0.5, snr=0.1, use_triton=use_triton)
    assert float(e_all[0]) < 0.01 * float(e[0])   # counted, the dead row would have shrunk the step 100-fold
    torch.testing.assert_close(e[1], e_all[1], rtol=1e-12, atol=0)
    row = x[dead].double() + e[0] * drift[dead] + torch.sqrt(2 * e[0]) * z[dead]
    torch.testing.assert_close(out[dead].double(), row, rtol=1e-4, atol=1e-4 * float(row.abs().max()))
    live[N:] = False         # no live particle in image 1
    _, e = lv.langevin_step(x, s, g, keys, num_particles=N, lam=0.5, snr=0.1, use_triton=use_triton, live=live)
    assert torch.isnan(e[1]) and torch.isfinite(e[0])


@pytest.mark.parametrize("live", [torch.ones(7, dtype=torch.bool), torch.ones(8), [True] * 8])
def test_live_mask_is_checked(live):
    x, s, g, keys = _inputs(2, 4, 5, torch.float32, seed=0)
    with pytest.raises(ValueError, match=r"live must be a bool tensor of shape \(8,\)"):
        lv.langevin_step_ref(x, s, g, keys, num_particles=4, lam=0.5, snr=0.1, live=live)
