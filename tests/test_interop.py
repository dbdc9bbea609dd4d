"""NumPy / CuPy interop (bindings/interop.py): zero-copy in both directions where the device allows."""
import numpy as np
import pytest
import torch

from afdps.interop import array_kind, from_torch, to_torch


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.complex64, np.bool_])
def test_numpy_round_trip_shares_memory(dtype):
    a = (np.arange(24).reshape(2, 3, 4) % 3).astype(dtype)
    t, kind = to_torch(a)
    assert kind == "numpy" and t.shape == (2, 3, 4) and t.device.type == "cpu"
    assert t.data_ptr() == a.ctypes.data
    b = from_torch(t, kind)
    assert isinstance(b, np.ndarray) and b.dtype == a.dtype and np.shares_memory(a, b)
    if dtype is not np.bool_:
        t[0, 0, 0] = 2
        assert a[0, 0, 0] == 2


def test_numpy_views_and_read_only():
    a = np.arange(20.0).reshape(4, 5)[:, ::2]  # strided view
    t, _ = to_torch(a)
    assert t.stride() == (5, 2) and np.shares_memory(from_torch(t, "numpy"), a)
    ro = np.arange(3.0)
    ro.setflags(write=False)
    t, kind = to_torch(ro)  # copied: torch tensors are writable
    assert kind == "numpy" and torch.equal(t, torch.arange(3.0, dtype=torch.float64))
    be = np.arange(4, dtype=">f4")
    t, _ = to_torch(be)
    assert torch.equal(t, torch.arange(4.0))
    flipped = np.flip(np.arange(6.0).reshape(2, 3), axis=1)  # negative strides, which torch cannot share: copied
    t, _ = to_torch(flipped)
    assert torch.equal(t, torch.tensor([[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]], dtype=torch.float64))


def test_torch_passes_through_and_result_kind():
    t0 = torch.randn(3)
    t, kind = to_torch(t0)
    assert t is t0 and kind == "torch" and from_torch(t, "torch") is t
    out = from_torch(torch.randn(2, 2) * 2, "numpy")
    assert isinstance(out, np.ndarray) and out.shape == (2, 2)


def test_errors():
    with pytest.raises(TypeError, match="NumPy"):
        to_torch([1.0, 2.0])
    with pytest.raises(TypeError):
        array_kind("x")
    with pytest.raises(ValueError, match="kind"):
        from_torch(torch.zeros(1), "jax")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cupy_round_trip_shares_memory():
    cupy = pytest.importorskip("cupy")
    a = cupy.arange(12, dtype=cupy.float32).reshape(3, 4)
    t, kind = to_torch(a)
    assert kind == "cupy" and t.is_cuda and t.data_ptr() == a.data.ptr
    t.mul_(2)
    assert float(a[1, 1]) == 10.0
    b = from_torch(t, kind)
    assert isinstance(b, cupy.ndarray) and b.data.ptr == a.data.ptr
