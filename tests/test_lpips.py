"""LPIPS from a weights file of the lpips package's format: a randomly initialised network of the same
architecture saved to a file, loaded back, against an independent functional implementation of the
formula (the package itself needs torchvision, which afdps does not use)."""
import pytest
import torch
import torch.nn.functional as F

from afdps.engine.lpips import LPIPS, MIN_SIZE, load_lpips

CONVS = (("net.slice1.0", 4, 2, True), ("net.slice2.3", 1, 2, True), ("net.slice3.6", 1, 1, False),
         ("net.slice4.8", 1, 1, False), ("net.slice5.10", 1, 1, False))  # name, stride, padding, pool before next


def _oracle(state, x, y):
    """The LPIPS v0.1 formula written out with functional ops from the state dict."""
    def feats(z):
        z = z.expand(-1, 3, -1, -1)
        z = (z - state["scaling_layer.shift"]) / state["scaling_layer.scale"]
        out = []
        for i, (name, stride, pad, _) in enumerate(CONVS):
            if i in (1, 2):
                z = F.max_pool2d(z, 3, 2)
            z = F.relu(F.conv2d(z, state[name + ".weight"], state[name + ".bias"], stride=stride, padding=pad))
            out.append(z / (z.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return out
    d = 0.0
    for k, (a, b) in enumerate(zip(feats(x), feats(y))):
        d = d + F.conv2d((a - b).square(), state[f"lin{k}.model.1.weight"]).mean(dim=(2, 3))
    return d.reshape(-1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    net = LPIPS()
    for k in range(5):  # the package's heads are non-negative
        w = getattr(net, f"lin{k}").model[1].weight
        w.data = w.data.abs()
    path = tmp_path_factory.mktemp("lpips") / "alex_random.pth"
    torch.save(net.state_dict(), path)
    return path


def test_lpips_from_a_saved_random_network_matches_the_formula(weights):
    net = load_lpips(weights)
    state = torch.load(weights, weights_only=True)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 64, 48, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    d = net(x, y)
    assert d.shape == (3,) and bool((d > 0).all())
    torch.testing.assert_close(d, _oracle(state, x, y), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(net(x, x), torch.zeros(3), rtol=0, atol=1e-7)
    torch.testing.assert_close(net(x, y), net(y, x), rtol=1e-6, atol=1e-8)
    # grayscale images are repeated to three channels
    torch.testing.assert_close(net(x[:, :1], y[:, :1]), net(x[:, :1].expand(-1, 3, -1, -1), y[:, :1].expand(-1, 3, -1, -1)))


def test_lpips_refuses_bad_files_and_small_images(weights, tmp_path):
    heads = {k: v for k, v in torch.load(weights, weights_only=True).items() if k.startswith("lin")}
    torch.save(heads, tmp_path / "alex.pth")
    with pytest.raises(ValueError, match="lin-only weights file"):
        load_lpips(tmp_path / "alex.pth")
    with pytest.raises(FileNotFoundError):
        load_lpips(tmp_path / "none.pth")
    net = load_lpips(weights)
    with pytest.raises(ValueError, match=f"at least {MIN_SIZE}x{MIN_SIZE} pixels, got 28x28"):
        net(torch.zeros(1, 1, 28, 28), torch.zeros(1, 1, 28, 28))
    net(torch.zeros(1, 1, MIN_SIZE, MIN_SIZE), torch.zeros(1, 1, MIN_SIZE, MIN_SIZE))  # the smallest that works
    with pytest.raises(RuntimeError):  # MIN_SIZE is the true minimum: one pixel less and a pooling has no output
        net.net(torch.zeros(1, 3, MIN_SIZE - 1, MIN_SIZE - 1))


def test_restore_scores_lpips_against_references(weights, tmp_path):
    """``restore(..., lpips=)`` (``afdps restore --lpips``) records LPIPS of the best particle and the mean
    against each reference: the value the network gives on the written mean."""
    import numpy as np
    from PIL import Image

    import afdps
    from afdps.engine import restore as rs

    prior = afdps.priors.SpectralGaussian(torch.zeros(1), torch.full((1, 32, 17), 0.05), 32)
    (tmp_path / "in").mkdir()
    (tmp_path / "ref").mkdir()
    g = torch.Generator().manual_seed(3)
    for i in range(2):
        clean = prior.sample(1, g)[0].clamp(-1, 1)
        noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g, dtype=clean.dtype)).clamp(-1, 1)
        for img, folder in ((noisy, "in"), (clean, "ref")):
            Image.fromarray(((img[0] + 1) * 127.5).round().byte().numpy()).save(tmp_path / folder / f"im{i}.png")
    jobs = rs.jobs_from_inputs([str(tmp_path / "in")], task="denoise", sigma_y=0.1)
    net = load_lpips(weights)
    records = rs.restore(prior, jobs, tmp_path / "out", reference=tmp_path / "ref", lpips=net, progress=False,
                         log=lambda *a: None, sample_options=dict(num_particles=4, num_steps=5, potential="noisy"))
    for r in records:
        ref = rs.read_image(tmp_path / "ref" / f"{r['name']}.png", 1)
        mean = torch.from_numpy(np.load(tmp_path / "out" / r["name"] / "mean.npy"))
        assert r["lpips_mean"] == pytest.approx(float(net(mean[None], ref[None])[0]), rel=1e-5)
        assert r["lpips_best"] > 0
    assert "lpips mean" in (tmp_path / "out" / "index.html").read_text()
    with pytest.raises(ValueError, match="give --reference DIR with --lpips"):
        rs.restore(prior, jobs, tmp_path / "out2", lpips=net, sample_options={})
    mnist = afdps.load_prior("mnist")
    with pytest.raises(ValueError, match="this prior's are 28x28"):
        rs.restore(mnist, jobs, tmp_path / "out3", reference=tmp_path / "ref", lpips=net, sample_options={})
