"""The Philox noise stream: known-answer vectors, the two reference implementations, distribution."""
import math

import pytest
import torch

from afdps.kernels import philox


def test_known_answer_philox4x32_10():
    """Random123's published known-answer test for Philox4x32-10: counter and key all zero, and
    counter = key = all ones (words 0xffffffff)."""
    zero = torch.tensor(0)
    out = philox.philox4x32(zero, zero, zero)
    assert [int(o) for o in out] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    # c2 = c3 = 0 here (our counters only use two words), so the all-ones vector is checked through
    # the torch path against the numpy path instead, below.


def test_numpy_and_torch_paths_agree():
    key = torch.tensor(philox.stream_key(123, 7, 2))
    c0 = torch.arange(1000)
    c1 = torch.arange(1000) % 13
    a = philox.philox4x32(key, c0, c1)  # numpy path (CPU)
    b = philox._philox_torch(key & philox.M32, (key >> 32) & philox.M32, *torch.broadcast_tensors(c0, c1))
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_stream_keys_are_distinct_and_deterministic():
    keys = {philox.stream_key(s, k, p) for s in range(4) for k in range(50) for p in (1, 2, 3, 16, 17)}
    assert len(keys) == 4 * 50 * 5
    assert philox.stream_key(5, 3, 2) == philox.stream_key(5, 3, 2)
    assert all(-(2**63) <= k < 2**63 for k in keys)


def test_randn_rows_layout_and_independence_of_width():
    keys = philox.stream_keys([1, 2], 0, 1)
    z = philox.randn_rows(keys, 3, 10)
    assert z.shape == (2, 3, 10) and z.dtype == torch.float32
    # element d of row i does not depend on the row width: a prefix of a wider draw
    assert torch.equal(philox.randn_rows(keys, 3, 7), z[..., :7])
    # and row i does not depend on how many rows were drawn
    assert torch.equal(philox.randn_rows(keys, 2, 10), z[:, :2])
    assert not torch.equal(z[0], z[1])


def test_randn_rows_distribution():
    """200k draws: mean and variance within 5 standard errors (sqrt(1/n), sqrt(2/n)); the 4th
    moment within 5 standard errors (sqrt(96/n)); the lag-1 correlation within 5 / sqrt(n)."""
    z = philox.randn_rows(philox.stream_keys([42], 3, 2), 100, 2000).double().flatten()
    n = z.numel()
    assert abs(float(z.mean())) < 5 * math.sqrt(1 / n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float((z**4).mean()) - 3) < 5 * math.sqrt(96 / n)
    assert abs(float((z[1:] * z[:-1]).mean())) < 5 / math.sqrt(n)


def test_uniform_rows_range_and_mean():
    u = philox.uniform_rows(philox.stream_keys([9], 1, 3), 10, 1000).double()
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / u.numel())


def test_cpu_uniform_path_matches_the_tensor_path():
    keys = philox.stream_keys([3, 4], 2, 2)
    fast = philox._uniforms(keys, 5, 33)
    j = torch.arange(33).view(1, 1, 33)
    i = torch.arange(5).view(1, 5, 1)
    k = keys.view(-1, 1, 1)
    c0, c1, kk = torch.broadcast_tensors(j, i, k)
    words = philox._philox_torch(kk & philox.M32, (kk >> 32) & philox.M32, c0, c1)
    for a, w in zip(fast, words):
        assert torch.equal(a, philox.uniform_from_bits(w))
