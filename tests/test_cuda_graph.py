"""``sample(..., cuda_graph=True)``: replays equal eager runs (GPU), and clear errors where it cannot run."""
import pytest
import torch

import afdps
from afdps import ops
from afdps.priors import SpectralGaussian


def _problem(device, size=32, B=2, seed=0):
    C = 3
    power = (1.0 / (1.0 + torch.arange(size // 2 + 1, dtype=torch.float64))) ** 2
    power = power[None, None, :] * torch.ones(C, size, 1, dtype=torch.float64) + 1e-4
    prior = SpectralGaussian(torch.zeros(C), power, size)
    op = ops.Blur(ops.gaussian_kernel(9, 2.0), (C, size, size))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, C, size, size, generator=g, dtype=torch.float64) * 2 - 1
    return prior, op, op.measure(x.float(), 0.05, g).to(device)


def test_errors_without_cuda():
    prior, op, y = _problem("cpu")
    with pytest.raises(ValueError, match="CUDA device"):
        afdps.sample(prior, op, y, 0.05, num_particles=4, num_steps=3, cuda_graph=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["sde", "ode"])
def test_replay_equals_eager(method):
    afdps.clear_graph_cache()
    prior, op, y1 = _problem("cuda", seed=1)
    _, _, y2 = _problem("cuda", seed=2)
    kw = dict(method=method, num_particles=32, num_steps=12, tempering="linear", backend="triton")
    with pytest.raises(ValueError, match="profile"):
        afdps.sample(prior, op, y1, 0.05, cuda_graph=True, profile=True, **kw)
    first = afdps.sample(prior, op, y1, 0.05, seed=[1, 2], cuda_graph=True, **kw)   # eager, then capture
    replay = afdps.sample(prior, op, y2, 0.05, seed=[3, 4], cuda_graph=True, **kw)  # replay, new inputs
    eager1 = afdps.sample(prior, op, y1, 0.05, seed=[1, 2], **kw)
    eager2 = afdps.sample(prior, op, y2, 0.05, seed=[3, 4], **kw)
    for got, want in ((first, eager1), (replay, eager2)):
        torch.testing.assert_close(got.particles, want.particles, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.log_weights, want.log_weights, rtol=1e-6, atol=1e-6)
        assert torch.equal(got.resampled, want.resampled)
    assert not torch.allclose(replay.particles, first.particles)  # the new inputs were used
