"""torch.library registration of the kernels (bindings/custom_ops.py): schema, fake tensors and autograd
registration (``torch.library.opcheck``), and a fused step traced whole by ``torch.compile``."""
import pytest
import torch
from tolerances import DEVICE

from afdps import custom_ops as co
from afdps.kernels import particle_step as ps
from afdps.kernels import resample as rs
from afdps.kernels._triton import HAS_TRITON

pytestmark = [pytest.mark.interpreter, pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed"),
              pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")]


@pytest.fixture(autouse=True)
def _kernels_under_the_interpreter(monkeypatch):
    """The custom ops follow the one dispatch rule: on the CPU they run the kernels only when asked."""
    monkeypatch.setenv("AFDPS_BACKEND", "triton")

B, N, D = 2, 3, 10


@pytest.fixture(scope="module")
def rows():
    gen = torch.Generator().manual_seed(0)
    x, s, g = (torch.randn(B * N, D, generator=gen).to(DEVICE) for _ in range(3))
    keys = torch.tensor([11, -12], dtype=torch.int64, device=DEVICE)
    return x, s, g, keys


def test_opcheck_particle_step(rows):
    x, s, g, keys = rows
    p = co.particle_step_params(f=-0.2, g2=1.0, v2=1.0, eta=0.5, h=0.01, lam=1.0, lap_mu=3.0, device=DEVICE)
    torch.library.opcheck(co.particle_step, (x, s, g, keys, p, N, True, True))
    p0 = co.particle_step_params(f=-0.2, g2=1.0, v2=0.0, eta=1.0, h=0.01, lam=1.0, lap_mu=3.0, device=DEVICE)
    torch.library.opcheck(co.particle_step, (x, s, g, keys, p0, N, False, False))


def test_opcheck_langevin_step(rows):
    x, s, g, keys = rows
    params = co.langevin_step_params(lam=0.5, snr=0.1, device=DEVICE)
    torch.library.opcheck(co.langevin_step, (x, s, g, keys, params, N))
    live = torch.tensor([True, False, True, True, True, False], device=DEVICE)
    torch.library.opcheck(co.langevin_step, (x, s, g, keys, params, N, live))
    # the op passes ``live`` on: as the kernel module's dispatcher, and different from all rows live
    from afdps.kernels import langevin as lv
    x1, e1 = co.langevin_step(x, s, g, keys, params, N, live)
    x2, e2 = lv.langevin_step(x, s, g, keys, num_particles=N, lam=0.5, snr=0.1, live=live)
    torch.testing.assert_close(x1, x2)
    torch.testing.assert_close(e1, e2)
    assert not torch.allclose(e1, co.langevin_step(x, s, g, keys, params, N)[1])


@pytest.mark.parametrize("scheme", ["systematic", "residual"])
def test_opcheck_resampling(scheme):
    logw = torch.tensor([[0.0, -3.0, 1.0], [-float("inf"), 2.0, 0.5]], dtype=torch.float64, device=DEVICE)
    keys = torch.tensor([5, 6], dtype=torch.int64, device=DEVICE)
    thr = co.threshold_tensor(1.01, DEVICE)
    torch.library.opcheck(co.resample, (logw, keys, thr, scheme))
    torch.library.opcheck(co.resample_and_gather, (torch.randn(B, N, 4, device=DEVICE), logw, keys, thr, scheme))


def test_opcheck_blur():
    X = torch.fft.rfft2(torch.randn(B, N, 3, 8, 8), norm="ortho").to(DEVICE)
    Y = torch.fft.rfft2(torch.randn(B, 1, 3, 8, 8), norm="ortho").to(DEVICE)
    H = torch.fft.rfft2(torch.rand(8, 8)).to(torch.complex64).to(DEVICE)
    torch.library.opcheck(co.blur_residual, (X, H, Y, 8, True))
    torch.library.opcheck(co.blur_residual, (X, H, Y, 8, False))
    torch.library.opcheck(co.blur_guidance, (X, H, Y, co.threshold_tensor(0.3, DEVICE)))


def test_results_equal_the_dispatchers(rows):
    x, s, g, keys = rows
    kw = dict(f=-0.2, g2=1.0, v2=1.0, eta=1.0, h=0.02, lam=0.9, lap_mu=2.0)
    a = co.particle_step(x, s, g, keys, co.particle_step_params(**kw, device=DEVICE), N, True, True)
    b = ps.particle_step(x, s, g, keys, num_particles=N, euler=True, **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    logw = torch.randn(B, N, dtype=torch.float64, device=DEVICE)
    r1 = co.resample(logw, keys, co.threshold_tensor(1.01, DEVICE), "stratified")
    r2 = rs.resample(logw, keys, scheme="stratified", threshold=1.01)
    assert all(torch.equal(u, v) for u, v in zip(r1, r2))


def test_compiled_step_traces_the_ops_whole(rows):
    """A step (fused update, weights, resampling with the in-place gather) under torch.compile with
    fullgraph=True: no graph break, same results as eager."""
    x, s, g, keys = rows
    params = co.particle_step_params(f=-0.2, g2=1.0, v2=1.0, eta=1.0, h=0.05, lam=1.0, lap_mu=3.0, device=DEVICE)
    thr = co.threshold_tensor(1.01, DEVICE)

    def step(x, s, g, keys, params, logw, thr):
        xn, dlogw = co.particle_step(x, s, g, keys, params, N, True, True)
        logw = logw + dlogw.view(B, N)
        xb = xn.view(B, N, D).clone()
        new_logw, ess, res = co.resample_and_gather(xb, logw, keys, thr, "systematic")
        return xb, new_logw, ess, res

    logw = 3.0 * torch.randn(B, N, dtype=torch.float64, device=DEVICE)
    eager = step(x, s, g, keys, params, logw, thr)
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)(x, s, g, keys, params, logw, thr)
    for u, v in zip(compiled, eager):
        assert torch.equal(u, v)
