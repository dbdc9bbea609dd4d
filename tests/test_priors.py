"""Priors: closed forms against autograd and direct formulas."""

import pytest
import torch

import afdps
from afdps import ops
from afdps.priors import EpsilonModel, GaussianMixture, SpectralGaussian


def _mixture(d=3, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(K, d, generator=g, dtype=torch.float64)
    L = 0.5 * torch.randn(K, d, d, generator=g, dtype=torch.float64)
    covs = L @ L.transpose(-1, -2) + 0.2 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(means, covs, torch.tensor([0.2, 0.5, 0.3][:K]))


def test_mixture_score_is_gradient_of_log_density():
    gm = _mixture()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    for t in (1e-3, 0.2, 0.9):
        (grad,) = torch.autograd.grad(gm.log_prob(x, t).sum(), x)
        torch.testing.assert_close(gm.score(x.detach(), t), grad, rtol=1e-9, atol=1e-10)
    # the diffused mixture is the clean mixture of diffused components
    torch.testing.assert_close(gm.diffused(0.4).log_prob(x.detach()), gm.log_prob(x.detach(), 0.4))


def test_mixture_posterior_against_bayes_rule_on_a_grid():
    """In 1-D the posterior density is prior x likelihood normalised on a fine grid."""
    gm = GaussianMixture(torch.tensor([[-1.0], [2.0]]), torch.tensor([[[0.3]], [[0.8]]]), torch.tensor([0.6, 0.4]))
    A = ops.Dense(torch.tensor([[0.7]]))
    y, sy = torch.tensor([0.9]), 0.4
    post = gm.posterior(A, y, sy)
    grid = torch.linspace(-8, 8, 200001, dtype=torch.float64)[:, None]
    logp = gm.log_prob(grid) - 0.5 * ((0.7 * grid[:, 0] - 0.9) / sy) ** 2
    p = torch.softmax(logp, 0)
    mean = (p * grid[:, 0]).sum()
    var = (p * (grid[:, 0] - mean) ** 2).sum()
    # Riemann sums with spacing dx = 8e-5 of smooth integrands: error of order dx^2 = 6.4e-9 times the
    # second derivative of the integrand (a few units here); tolerance 1e-6.
    assert float(post.mean()[0]) == pytest.approx(float(mean), abs=1e-6)
    assert float(post.covariance()[0, 0]) == pytest.approx(float(var), abs=1e-6)


def test_mixture_sample_moments():
    gm = _mixture()
    xs = gm.sample(200000, torch.Generator().manual_seed(1))
    se = torch.sqrt(torch.diagonal(gm.covariance()) / xs.shape[0])
    assert bool(((xs.mean(0) - gm.mean()).abs() < 5 * se).all())


def _spectral():
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, 40, 44, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(3)]
    return SpectralGaussian.fit(imgs, (16, 12), num_crops=20)


def test_spectral_score_matches_dense_gaussian():
    """The diffused prior is N(alpha m, alpha^2 S + sigma^2 I) with S = F^* diag(P) F: build S densely
    from the prior's own samples' generator (its covariance applied to the identity) and compare."""
    pr = _spectral()
    C, H, W = pr.event_shape
    d = C * H * W
    eye = torch.eye(d, dtype=torch.float64).reshape(d, C, H, W)
    S = torch.fft.irfft2(torch.fft.rfft2(eye, norm="ortho") * pr.power, s=(H, W), norm="ortho").reshape(d, d)
    torch.testing.assert_close(S, S.T, rtol=0, atol=1e-12)
    t = 0.3
    a, s = float(pr.schedule.alpha(t)), float(pr.schedule.sigma(t))
    cov = a * a * S + s * s * torch.eye(d, dtype=torch.float64)
    mean = (a * pr.mean_c[:, None, None].expand(C, H, W)).reshape(d)
    x = torch.randn(2, C, H, W, dtype=torch.float64)
    expect = -torch.linalg.solve(cov, (x.reshape(2, d) - mean).T).T
    torch.testing.assert_close(pr.score(x, t).reshape(2, d), expect, rtol=1e-8, atol=1e-8)


def test_spectral_posterior_blur_matches_dense():
    pr = _spectral()
    C, H, W = pr.event_shape
    d = C * H * W
    op = ops.Blur(ops.gaussian_kernel(5, 1.0), pr.event_shape)
    eye = torch.eye(d, dtype=torch.float64).reshape(d, C, H, W)
    S = torch.fft.irfft2(torch.fft.rfft2(eye, norm="ortho") * pr.power, s=(H, W), norm="ortho").reshape(d, d)
    A = op.to_matrix()
    y = torch.randn(C, H, W, dtype=torch.float64)
    sy = 0.1
    m0 = pr.mean_c[:, None, None].expand(C, H, W).reshape(d)
    Sy = A @ S @ A.T + sy**2 * torch.eye(d, dtype=torch.float64)
    gain = S @ A.T @ torch.linalg.inv(Sy)
    mean = m0 + gain @ (y.reshape(d) - A @ m0)
    cov = S - gain @ A @ S
    pm, pv = pr.posterior_blur(op, y, sy)
    torch.testing.assert_close(pm.reshape(d), mean, rtol=1e-7, atol=1e-8)
    # the posterior covariance is F^* diag(V) F
    Vd = torch.fft.irfft2(torch.fft.rfft2(eye, norm="ortho") * pv, s=(H, W), norm="ortho").reshape(d, d)
    torch.testing.assert_close(Vd, cov, rtol=1e-7, atol=1e-8)


def test_spectral_fit_on_real_photos_is_smooth_and_positive():
    from afdps import prior_photos

    pr = SpectralGaussian.fit(prior_photos(), (32, 32), num_crops=32)
    assert bool((pr.power > 0).all())
    # natural images: power falls with frequency (low frequencies dominate)
    assert float(pr.power[:, 1, 1].mean()) > 10 * float(pr.power[:, 16, 16].mean())
    assert -1 < float(pr.mean_c.min()) and float(pr.mean_c.max()) < 1


class _Eps(torch.nn.Module):
    def __init__(self, out_channels):
        super().__init__()
        self.out_channels = out_channels
        self.seen = []

    def forward(self, x, t):
        self.seen.append(t.clone())
        return torch.cat([x * 0.5] * (self.out_channels // x.shape[1]), 1)


def test_epsilon_model_score_and_timestep_mapping():
    net = _Eps(2)
    m = EpsilonModel(net, afdps.VPSchedule(), event_shape=(1, 4, 4), batch_size=3)
    x = torch.randn(2, 4, 1, 4, 4)
    s = m.score(x, 0.25)
    torch.testing.assert_close(s, -0.5 * x / float(m.schedule.sigma(0.25)))
    assert len(net.seen) == 3  # 8 images in chunks of 3
    assert float(net.seen[0][0]) == pytest.approx(249.0)  # k = 1000 t - 1, not rounded
    with pytest.raises(ValueError, match="3 channels"):
        EpsilonModel(_Eps(3), event_shape=(1, 4, 4)).score(x, 0.5)
    with pytest.raises(ValueError, match="event_shape"):
        EpsilonModel(net)


class _MixtureEps(torch.nn.Module):
    """A VP noise-prediction 'network' made of a Gaussian mixture's exact VP score: eps = -sigma s, at the
    continuous time tau = (k + 1) / 1000 of DDPM step k."""

    def __init__(self, gm):
        super().__init__()
        self.gm = gm

    def forward(self, x, k):
        tau = (float(k[0]) + 1.0) / 1000.0
        return -float(self.gm.schedule.sigma(tau)) * self.gm.score(x.double(), tau)


def test_ve_coordinates_for_a_vp_network_match_the_ve_score_in_closed_form():
    """EpsilonModel(schedule=VESchedule) on a VP network is, by the EDM convention x_vp = x / sqrt(1 + s^2),
    the score of the same data distribution diffused by the VE process, known in closed form for a mixture:
    components N(m_k, S_k + s^2 I). The network's timestep is float32, hence rtol 1e-4."""
    means = torch.tensor([[0.5, -1.0], [-0.7, 0.3]], dtype=torch.float64)
    covs = torch.stack([0.2 * torch.eye(2, dtype=torch.float64), torch.tensor([[0.3, 0.1], [0.1, 0.2]],
                                                                                dtype=torch.float64)])
    w = torch.tensor([0.4, 0.6])
    vp = GaussianMixture(means, covs, w, schedule=afdps.VPSchedule())
    ve = GaussianMixture(means, covs, w, schedule=afdps.VESchedule(80.0))
    model = EpsilonModel(_MixtureEps(vp), afdps.VESchedule(80.0), event_shape=(2,))
    x = 3.0 * torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sigma in (0.01, 0.3, 2.0, 20.0, 79.0):
        torch.testing.assert_close(model.score(x * max(1.0, sigma), sigma), ve.score(x * max(1.0, sigma), sigma),
                                   rtol=1e-4, atol=1e-8)
    # the VP time whose alpha matches, and the guard against noise the network never saw
    sched = afdps.VPSchedule()
    tau = sched.time_of_alpha(float(sched.alpha(0.37)))
    assert tau == pytest.approx(0.37, rel=1e-12)
    with pytest.raises(ValueError, match="goes beyond the noise the VP network was trained on"):
        EpsilonModel(_MixtureEps(vp), afdps.VESchedule(500.0), event_shape=(2,))


def test_ve_edm_grid():
    s = afdps.VESchedule(80.0, 0.002, grid="edm")
    ts = s.timesteps(10)
    assert ts[0] == pytest.approx(80.0) and ts[-1] == pytest.approx(0.002) and bool((ts[1:] < ts[:-1]).all())
    r = 7.0
    want = (80.0 ** (1 / r) + 0.3 * (0.002 ** (1 / r) - 80.0 ** (1 / r))) ** r
    assert float(ts[3]) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="grid='karras' is not one of"):
        afdps.VESchedule(grid="karras")


def test_network_memory_estimate_and_auto_batch():
    """The activation bound of the shipped MNIST prior (fake tensors: nothing computed) sits above the
    measured peak (1.6-1.9 MB per image on this CPU at batches of 256 and 1024, docs/restore.md) and
    below 10x it; batch_size='auto' fits the network calls into half the free memory; the sampler's
    memory check counts the activations and names batch_size."""
    prior = afdps.load_prior("mnist", batch_size="auto")
    per = prior.activation_bytes_per_image()
    assert 2e6 < per < 2e7, per
    assert prior.network_batch(1000, 100 * per) == 50 and prior.auto_batch == 50
    assert prior.network_batch(10, None) == 10
    fixed = afdps.load_prior("mnist", batch_size=7)
    assert fixed.network_batch(100, 1) == 7 and fixed.network_batch(3, 1) == 3
    with pytest.raises(ValueError, match="batch_size must be a positive integer, 'auto' or None"):
        EpsilonModel(_Eps(1), event_shape=(1, 4, 4), batch_size=0)
    r = afdps.sample(prior, ops.Identity((1, 28, 28)), torch.zeros(1, 1, 28, 28), 0.1, num_particles=3, num_steps=2,
                     seed=0)
    assert torch.isfinite(r.particles).all() and prior.auto_batch >= 1


def test_epsilon_model_cuda_graph_refuses_cpu_inputs_and_keeps_gradient_calls_eager():
    m = EpsilonModel(_Eps(2), afdps.VPSchedule(), event_shape=(1, 4, 4), cuda_graph=True)
    with pytest.raises(ValueError, match="captures CUDA graphs; the network input is on cpu"):
        m.score(torch.randn(2, 1, 4, 4), 0.5)
    x = torch.randn(2, 1, 4, 4, requires_grad=True)  # a VJP call (the Tweedie potential) runs eagerly
    m.score(x, 0.5, grad=True).sum().backward()
    assert x.grad is not None and not m._graphs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_epsilon_model_cuda_graph_replays_equal_eager_calls():
    """One graph per call shape (two here: a full chunk and the remainder), replays equal eager calls for new
    inputs and times, and a sampler run with the graphed prior equals the eager one."""
    from afdps.engine.models import ADMUNet

    torch.manual_seed(0)
    net = ADMUNet(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
                  num_heads=2, num_head_channels=16, use_scale_shift_norm=True, learn_sigma=False).cuda().eval()
    eager = EpsilonModel(net, event_shape=(3, 16, 16), batch_size=3)
    graphed = EpsilonModel(net, event_shape=(3, 16, 16), batch_size=3, cuda_graph=True)
    for t in (0.3, 0.7):
        x = torch.randn(5, 3, 16, 16, device="cuda")
        with torch.no_grad():
            torch.testing.assert_close(graphed.score(x, t), eager.score(x, t), rtol=0, atol=0)
    assert len(graphed._graphs) == 2
    op = afdps.ops.Blur(afdps.ops.gaussian_kernel(5, 1.0), (3, 16, 16))
    y = op.measure(torch.zeros(1, 3, 16, 16, device="cuda"), 0.1)
    a = afdps.sample(eager, op, y, 0.1, num_particles=4, num_steps=5, seed=0, potential="scaled")
    b = afdps.sample(graphed, op, y, 0.1, num_particles=4, num_steps=5, seed=0, potential="scaled")
    torch.testing.assert_close(a.particles, b.particles, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measured_activation_bound_holds_for_the_fused_network():
    """On CUDA the activation bound is measured (half the peak of a 2-image forward): it bounds the peak of the
    fused inference network (whose kernels no module hook sees) at batches 2 to 32, and is more than the
    fake-tensor count of the module outputs, which misses them."""
    from afdps.engine.models import ADMUNet

    torch.manual_seed(0)
    net = ADMUNet(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="16",
                  num_heads=2, num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True,
                  learn_sigma=True).cuda().to_inference()
    prior = EpsilonModel(net, event_shape=(3, 32, 32), batch_size="auto")
    per = prior.activation_bytes_per_image()
    assert per > prior._counted_bytes_per_image(torch.device("cuda"))
    for b in (2, 8, 32):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            net(torch.zeros(b, 3, 32, 32, device="cuda"), torch.full((b,), 500.0, device="cuda"))
        torch.cuda.synchronize()
        assert torch.cuda.max_memory_allocated() - base <= b * per, (b, per)


# ---- a user's own prior (a fifth audit, 2026-12-07) ---------------------------------------------------------

class _Conv(torch.nn.Module):
    """A small noise-prediction net with dropout; records the batch of every call that builds a graph."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.drop = torch.nn.Dropout(0.5)
        self.grad_batches = []

    def forward(self, x, t):
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_batches.append(x.shape[0])
        return self.drop(self.conv(x)) * 0.1


def _digit_problem():
    op = ops.Inpaint(torch.ones(8, 8), (1, 8, 8))
    y = torch.zeros(2, 1, 8, 8)
    return op, y


class _GradPath(torch.nn.Module):
    """A net that takes modules only in passes that build a graph (as a fused ADM network does): its graph
    memory per image exceeds its no-grad activations."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x, t):
        return self.b(self.a(x)) if torch.is_grad_enabled() and x.requires_grad else 0.1 * x


def test_the_tweedie_gradient_holds_one_network_batch_of_graph(monkeypatch):
    """batch_size bounds the images of the autograd graph the default potential differentiates (it took all
    B x N particles' graphs at once, in batch_size calls: 225 MiB against 5 MiB with batch_size=1, 128 particles
    of a small net); each slice is one VJP of at most batch_size images, and the run equals one of the whole
    graph (bit for bit where the images divide batch_size, as here)."""
    op, y = _digit_problem()
    weights = _Conv().state_dict()
    real_grad, slices = torch.autograd.grad, []

    def grad(outputs, inputs, *a, **k):
        slices.append(tuple(inputs.shape[:2]) if isinstance(inputs, torch.Tensor) else None)
        return real_grad(outputs, inputs, *a, **k)

    monkeypatch.setattr(torch.autograd, "grad", grad)
    runs = {}
    for bs in (4, None):
        net = _Conv()
        net.load_state_dict(weights)
        prior = EpsilonModel(net, event_shape=(1, 8, 8), batch_size=bs)
        slices.clear()
        runs[bs] = afdps.sample(prior, op, y, 0.1, num_particles=6, num_steps=3, seed=0)
        assert runs[bs].potential == "tweedie"
        want = [(2, 2)] * 3 if bs else [(2, 6)]  # 2 images x 2 particles per VJP, 3 per step; or all in one
        assert slices == want * 3, slices
    assert torch.equal(runs[4].particles, runs[None].particles)


def test_the_memory_check_counts_the_graph_of_the_tweedie_gradient():
    """The Tweedie potential's network batches keep their graph: counted in a pass that builds one (where a
    network's no-grad path is lighter, as a fused ADM network's is, the no-grad count was 63x too small)."""
    from afdps.engine.sampler import memory_estimate
    op, y = _digit_problem()
    prior = EpsilonModel(_GradPath(), event_shape=(1, 8, 8), batch_size=4)
    assert prior.activation_bytes_per_image() == 0  # the no-grad pass calls no module
    assert prior.graph_bytes_per_image() == (4 + 1) * 8 * 8 * 4  # conv a's 4 channels and conv b's 1, float32
    tw, _ = memory_estimate(prior, y, 6, potential="tweedie")
    sc, _ = memory_estimate(prior, y, 6, potential="scaled")
    assert tw - sc == 4 * (prior.graph_bytes_per_image() - prior.activation_bytes_per_image())


def test_a_network_in_training_mode_is_put_in_eval_mode_and_refused_after_train():
    """Dropout in train mode made two runs with one seed differ by 7.8 (batch norm also moved the user's
    statistics); EpsilonModel switches the network to eval mode and refuses one switched back."""
    op, y = _digit_problem()
    net = _Conv()
    assert net.training
    prior = EpsilonModel(net, event_shape=(1, 8, 8))
    assert not net.training
    a, b = (afdps.sample(prior, op, y, 0.1, num_particles=2, num_steps=2, seed=0) for _ in range(2))
    assert torch.equal(a.particles, b.particles)
    net.train()
    with pytest.raises(ValueError, match="the network is in training mode .*call net.eval\\(\\)"):
        prior.score(torch.zeros(1, 1, 8, 8), 0.5)


def test_a_network_on_another_device_than_the_particles_is_named():
    """A network on another device failed deep inside it (a meta-device one ran on and ended as 'log-weight
    increments overflowed')."""
    net = _Conv().to("meta")
    with pytest.raises(ValueError, match="the network's parameters are on meta, the particles on cpu"):
        EpsilonModel(net, event_shape=(1, 8, 8)).score(torch.zeros(2, 1, 8, 8), 0.5)


def test_sample_prior_chooses_the_auto_batch_as_sample_does():
    prior = EpsilonModel(_Conv(), event_shape=(1, 8, 8), batch_size="auto")
    afdps.sample_prior(prior, 5, num_steps=2, seed=0)
    assert prior.auto_batch == 5  # chosen from the free memory (here: room for every row), as sample() chooses it
    with pytest.raises(ValueError, match="timesteps must lie in \\(0, 1\\]"):
        afdps.sample_prior(prior, 2, timesteps=[5.0, 0.5], seed=0)


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(num_train_steps=0), ValueError, "num_train_steps must be an integer >= 1, got 0"),
    (dict(num_train_steps=1.7), ValueError, "num_train_steps must be an integer >= 1, got 1.7"),
    (dict(event_shape=(1.5, 8, 8)), ValueError, "event_shape entries must be an integer >= 1, got 1.5"),
    (dict(event_shape=8), ValueError, "event_shape must be a tuple of positive integers"),
    (dict(schedule="ve"), TypeError, "schedule must be an afdps Schedule"),
    (dict(learned_sigma="no"), ValueError, "learned_sigma must be True, False or None"),
    (dict(net=lambda x, t: x), TypeError, "net must be a torch.nn.Module called as net\\(x, timesteps\\)"),
    (dict(cuda_graph=1), TypeError, "cuda_graph must be True or False"),
])
def test_epsilon_model_refuses_bad_arguments(kw, exc, msg):
    args = {"net": _Conv(), "event_shape": (1, 8, 8), **kw}
    with pytest.raises(exc, match=msg):
        EpsilonModel(args.pop("net"), **args)


@pytest.mark.parametrize("forward,what", [
    (lambda x, t: x[:, :, ::2, ::2], "float32 of shape \\(3, 1, 4, 4\\)"),
    (lambda x, t: x[:1], "float32 of shape \\(1, 1, 8, 8\\)"),
    (lambda x, t: (x, x), "tuple"),
    (lambda x, t: x.long(), "int64 of shape \\(3, 1, 8, 8\\)"),
])
def test_a_network_output_of_the_wrong_kind_is_named(forward, what):
    net = type("Net", (torch.nn.Module,), {"forward": lambda self, x, t: forward(x, t)})()
    with pytest.raises(ValueError, match=f"the network returned {what} for a batch of shape \\(3, 1, 8, 8\\)"):
        EpsilonModel(net, event_shape=(1, 8, 8)).score(torch.zeros(3, 1, 8, 8), 0.5)


@pytest.mark.parametrize("means,covs,weights,msg", [
    ([[0.0, 0.0]], [[[1.0, 0.9], [-0.9, 1.0]]], [1.0], "covs\\[0\\] is not symmetric"),
    ([[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], [1.0], "covs\\[0\\] is not positive semi-definite \\(smallest eigenvalue -1"),
    ([[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]], [float("inf")], "weights must be 1 positive finite number,"),
    ([[float("nan"), 0.0]], [[[1.0, 0.0], [0.0, 1.0]]], [1.0], "means and covs must be finite"),
    (torch.zeros(0, 2), torch.zeros(0, 2, 2), torch.zeros(0), "at least one component"),
])
def test_gaussian_mixture_refuses_what_is_not_a_mixture(means, covs, weights, msg):
    """A non-symmetric covariance was used by its lower triangle in sample() and as given elsewhere (a posterior
    variance of -4.2 came out); a non-positive-definite one failed later in a raw Cholesky error."""
    with pytest.raises(ValueError, match=msg):
        GaussianMixture(means, covs, weights)


def test_gaussian_mixture_takes_float32_rounding_and_singular_covariances():
    """A float32 Q diag(l) Q^T is symmetric only to rounding (kept as its symmetric part); a singular covariance
    is a degenerate Gaussian (a noise-free posterior's), whose diffused scores exist."""
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(0)))
    s32 = (q * torch.tensor([1.0, 0.5, 0.2, 0.1, 0.05])) @ q.T
    assert not torch.equal(s32, s32.T)
    gm = GaussianMixture(torch.zeros(1, 5), s32[None], [1.0])
    assert torch.equal(gm.covs, gm.covs.transpose(1, 2))
    singular = GaussianMixture(torch.zeros(1, 2), [[[1.0, 0.0], [0.0, 0.0]]], [1.0])
    assert bool(torch.isfinite(singular.score(torch.ones(3, 2), 0.5)).all())
    with pytest.raises(ValueError, match="covs\\[0\\] is singular: the mixture has no density at the data end"):
        singular.sample(3, generator=torch.Generator().manual_seed(0))


def test_spectral_gaussian_refuses_non_finite_and_misshapen_inputs():
    good = torch.zeros(1, 8, 8)
    with pytest.raises(ValueError, match="image 1 has non-finite values"):
        SpectralGaussian.fit([good, torch.full((1, 8, 8), float("nan"))], (8, 8))
    with pytest.raises(ValueError, match="image 0 is \\(8, 8, 3\\) \\(channels last\\? pass im.permute\\(2, 0, 1\\)\\)"):
        SpectralGaussian.fit([torch.zeros(8, 8, 3)], (8, 8))
    with pytest.raises(ValueError, match="power must be positive and finite"):
        SpectralGaussian([0.0], torch.full((1, 8, 5), float("inf")), 8)
    with pytest.raises(ValueError, match="power must be \\(C, H, W // 2 \\+ 1\\), got shape \\(8, 5\\)"):
        SpectralGaussian([0.0], torch.ones(8, 5), 8)
    with pytest.raises(ValueError, match="mean must be finite"):
        SpectralGaussian([float("nan")], torch.ones(1, 8, 5), 8)


@pytest.mark.parametrize("width", [8, 7])
def test_spectral_gaussian_refuses_a_power_no_real_field_has(width):
    """On the self-conjugate columns (kx = 0, and W / 2 for even W) the entries at ky and -ky are the variances of
    one conjugate pair: a power that differs there was taken, and sample() drew from another Gaussian than score()
    described (a user audit, 16%). symmetric() averages each pair; the prior it gives samples what it scores."""
    H, Wr = 6, width // 2 + 1
    power = torch.linspace(2.0, 0.05, H * Wr, dtype=torch.float64).reshape(1, H, Wr)
    with pytest.raises(ValueError, match=r"power is not symmetric in ky on column 0: P\[0, 1, 0\] = .* but "
                                         r"P\[0, 5, 0\] = .*; SpectralGaussian.symmetric\(power, width\)"):
        SpectralGaussian([0.0], power, width)
    sym = SpectralGaussian.symmetric(power, width)
    assert torch.equal(sym[0, :, 1], power[0, :, 1]) and float(sym[0, 1, 0]) == float(sym[0, 5, 0])
    rounded = sym.clone()  # a float32 periodogram's rounding (1e-7) is taken, and the pair evened exactly
    rounded[0, 1, 0] *= 1 + 3e-7
    evened = SpectralGaussian([0.0], rounded, width).power
    assert float(evened[0, 1, 0]) == float(evened[0, 5, 0]) and torch.equal(evened[0, :, 1], sym[0, :, 1])
    assert float(sym[0, 1, Wr - 1]) == float(sym[0, 5, Wr - 1]) or width % 2  # W / 2 of an even W too
    prior = SpectralGaussian([0.0], sym, width)
    # the sampled coefficients' variance is the power (4000 draws: a relative standard error of 1.6-2.2%, so 10%
    # is 4.5 or more standard errors), and the score is -X / (a^2 P + s^2) in the same basis
    x = prior.sample(4000, generator=torch.Generator().manual_seed(0))
    X = torch.fft.rfft2(x.double(), norm="ortho")
    ratio = (X.real.square() + X.imag.square()).mean(0)[0] / sym[0]
    assert float((ratio - 1).abs().max()) < 0.1, ratio
    t = 1e-3
    s = prior.score(x[:2].double(), t)
    a, sd = float(prior.schedule.alpha(t)), float(prior.schedule.sigma(t))
    torch.testing.assert_close(torch.fft.rfft2(s, norm="ortho"), -X[:2] / (a * a * sym + sd * sd))


def test_scores_and_oracles_refuse_what_they_would_misread():
    """A user audit (2026-12-07): a score reshaped or broadcast an x of another shape, scored integers in integers,
    took NaN, negative and too-late times; the exact posteriors took sigma_y = -1 as +1 and 0 (a NaN mean)."""
    gm = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.5, 1.0]]), torch.stack([0.3 * torch.eye(2), 0.5 * torch.eye(2)]),
                         torch.tensor([0.4, 0.6]))
    with pytest.raises(ValueError, match=r"GaussianMixture.score takes x of shape \(\.\.\., 2\), got \(2, 4\)"):
        gm.score(torch.zeros(2, 4), 0.5)
    with pytest.raises(TypeError, match="takes floating-point x, got torch.int64"):
        gm.score(torch.tensor([[3, 5]]), 0.5)
    for t in (float("nan"), -0.005, 0, 1.5, True):
        with pytest.raises(ValueError, match=r"takes a time t in \(0, 1\]"):
            gm.score(torch.zeros(3, 2), t)
    assert gm.score(torch.zeros(3, 2), 1.0).shape == (3, 2)
    sg = SpectralGaussian(torch.zeros(3), torch.ones(3, 4, 3), 4)
    with pytest.raises(ValueError, match=r"SpectralGaussian.score takes x of shape \(\.\.\., 3, 4, 4\), got \(1, 4, 4\)"):
        sg.score(torch.zeros(1, 4, 4), 0.5)
    for bad in (-1.0, 0.0):
        with pytest.raises(ValueError, match="sigma_y must be a positive finite number"):
            gm.posterior(afdps.ops.Identity((2,)), torch.zeros(2), bad)
        with pytest.raises(ValueError, match="sigma_y must be a positive finite number"):
            sg.posterior_blur(afdps.ops.Identity((3, 4, 4)), torch.zeros(3, 4, 4), bad)


def test_spectral_width_and_schedules_are_checked():
    with pytest.raises(ValueError, match="width must be an integer >= 1, got 4.7"):
        SpectralGaussian(torch.zeros(1), torch.ones(1, 4, 3), 4.7)
    with pytest.raises(TypeError, match="schedule must be a VPSchedule or VESchedule, got str"):
        GaussianMixture(torch.zeros(1, 2), torch.eye(2)[None], torch.ones(1), schedule="vp")
    with pytest.raises(TypeError, match="schedule must be a VPSchedule or VESchedule, got str"):
        SpectralGaussian(torch.zeros(1), torch.ones(1, 4, 3), 4, schedule="vp")
