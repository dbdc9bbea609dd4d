"""The one dispatch rule (kernels/backend.py) and the launcher guard (kernels/_triton.py)."""
import pytest
import torch

from afdps.kernels import _triton, backend


def test_requests_normalise(monkeypatch):
    monkeypatch.delenv("AFDPS_BACKEND", raising=False)
    assert backend.requested_backend(None) == "auto"
    assert backend.requested_backend(True) == "triton" and backend.requested_backend(False) == "torch"
    assert backend.requested_backend(" Torch ") == "torch"
    monkeypatch.setenv("AFDPS_BACKEND", "torch")
    assert backend.requested_backend(None) == "torch" and backend.requested_backend("auto") == "torch"
    assert backend.requested_backend("triton") == "triton"  # an explicit request wins over the variable
    monkeypatch.setenv("AFDPS_BACKEND", "bogus")
    with pytest.raises(ValueError, match="AFDPS_BACKEND='bogus' is not one of auto, torch, triton"):
        backend.requested_backend(None)
    with pytest.raises(ValueError, match="backend='cuda'"):
        backend.requested_backend("cuda")
    for empty in ("", "  "):  # set but empty, as `AFDPS_BACKEND= cmd` leaves it: unset
        monkeypatch.setenv("AFDPS_BACKEND", empty)
        assert backend.requested_backend(None) == "auto"


def test_auto_is_the_kernel_on_cuda_only(monkeypatch):
    """Under TRITON_INTERPRET=1 the kernels can run on CPU tensors, but auto still picks the reference
    there (a test asks for the kernel explicitly); a CPU tensor without the interpreter cannot run them."""
    monkeypatch.delenv("AFDPS_BACKEND", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend.use_triton(None, "cpu") is False
    assert backend.use_triton(False, "cpu") is False
    if _triton.HAS_TRITON:
        assert backend.use_triton(True, "cpu") is True
        monkeypatch.setenv("AFDPS_BACKEND", "triton")
        assert backend.use_triton(None, "cpu") is True
    monkeypatch.delenv("AFDPS_BACKEND")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ok, why = backend.triton_available("cpu")
    assert not ok and ("CUDA" in why or "not installed" in why)
    with pytest.raises(ValueError, match="my_op: the Triton backend was requested but cannot run"):
        backend.use_triton("triton", "cpu", "my_op")
    assert backend.use_triton(None, "cpu") is False
    if torch.cuda.is_available() and _triton.HAS_TRITON:
        assert backend.use_triton(None, "cuda") is True


def test_fake_tensors_take_the_reference(monkeypatch):
    """A fake tensor (FakeTensorMode, torch.compile's tracing) or a meta tensor has no memory: the rule gives the
    reference even when the kernel is requested, and a real tensor is unaffected by being passed."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with FakeTensorMode():
        fake = torch.empty(3)
    assert backend.is_fake(fake) and backend.is_fake(torch.empty(3, device="meta"))
    assert not backend.is_fake(torch.empty(3))
    assert backend.use_triton("triton", "cpu", "op", fake) is False
    if _triton.HAS_TRITON:
        assert backend.use_triton("triton", "cpu", "op", torch.empty(3)) is True


def test_requires_triton_guard(monkeypatch):
    @_triton.requires_triton
    def launch_something(x):
        """Doc kept."""
        return x + 1

    assert launch_something.__doc__ == "Doc kept." and launch_something.__name__ == "launch_something"
    monkeypatch.setattr(_triton, "HAS_TRITON", False)
    with pytest.raises(RuntimeError, match=r"launch_something needs triton \(pip install 'afdps\[triton\]'\)"):
        launch_something(1)
    monkeypatch.setattr(_triton, "HAS_TRITON", True)
    assert launch_something(1) == 2
