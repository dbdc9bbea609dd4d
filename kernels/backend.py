"""The one dispatch rule between a Triton kernel and its PyTorch reference.

Every op of :mod:`afdps.kernels` (and the sampler, the operators and the custom ops above them) asks
:func:`use_triton` with a request, which is one of

- ``None`` or ``"auto"``: the environment variable ``AFDPS_BACKEND`` if set (the one place it is read),
  else the kernel on CUDA tensors when Triton is installed and the reference everywhere else;
- ``False`` or ``"torch"``: the reference;
- ``True`` or ``"triton"``: the kernel, or ``ValueError`` saying why it cannot run (a request this machine
  cannot meet is bad input).

Whatever the request, a fake tensor (``FakeTensorMode``: memory estimates, FLOP counts, ``torch.compile``'s
tracing; or the meta device) takes the reference when the caller passes it as ``tensor``: it has no memory for a
kernel to touch, and the reference gives the same shapes, dtypes and layouts.

Under ``TRITON_INTERPRET=1`` the kernels can run on CPU tensors, but ``auto`` still picks the reference
there: the interpreter is a test tool (milliseconds of Python per program), so a test that wants the
kernel asks for it (``use_triton=True`` or ``AFDPS_BACKEND=triton``).
"""
from __future__ import annotations

import os

import torch

from ._triton import HAS_TRITON

__all__ = ["BACKENDS", "requested_backend", "interpreting", "is_fake", "triton_available", "use_triton"]

BACKENDS = ("auto", "torch", "triton")
ENV = "AFDPS_BACKEND"


def requested_backend(request=None) -> str:
    """``"auto"``, ``"torch"`` or ``"triton"`` for a request (``None`` reads ``AFDPS_BACKEND``)."""
    if request is True:
        return "triton"
    if request is False:
        return "torch"
    from_env = request is None or (isinstance(request, str) and request.strip().lower() == "auto")
    name = (os.environ.get(ENV, "").strip() or "auto") if from_env else request  # (set but empty: unset)
    name = str(name).strip().lower()
    if name not in BACKENDS:
        source = ENV if from_env else "backend"
        raise ValueError(f"{source}={name!r} is not one of {', '.join(BACKENDS)}")
    return name


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set (kernels then run on CPU tensors, in Python)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def is_fake(t: torch.Tensor) -> bool:
    """Whether ``t`` is a tensor without memory (a FakeTensor of ``FakeTensorMode`` or ``torch.compile``'s tracing, or
    on the meta device): a kernel launch would read garbage addresses."""
    if t.device.type == "meta":
        return True
    try:
        from torch._subclasses.fake_tensor import FakeTensor  # a torch internal; absent in some builds
    except ImportError:  # pragma: no cover
        return False
    return isinstance(t, FakeTensor)


def triton_available(device: torch.device | str) -> tuple[bool, str]:
    """Whether the Triton kernels can run on tensors on ``device``, and if not, why."""
    if not HAS_TRITON:
        return False, "triton is not installed (pip install 'afdps[triton]')"
    device = torch.device(device)
    if interpreting():
        return (True, "") if device.type == "cpu" else (False, "TRITON_INTERPRET=1 runs kernels on CPU tensors only")
    if device.type != "cuda":
        return False, (f"Triton kernels need CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 to interpret "
                       "them on the CPU")
    return True, ""


def use_triton(request, device: torch.device | str, what: str = "afdps", tensor: torch.Tensor | None = None) -> bool:
    """The rule of the module docstring: ``True`` to run the kernel on ``device``, ``False`` for the reference
    (always for a fake ``tensor``)."""
    name = requested_backend(request)
    if name == "torch" or (tensor is not None and is_fake(tensor)):
        return False
    ok, why = triton_available(device)
    if name == "triton":
        if not ok:
            raise ValueError(f"{what}: the Triton backend was requested but cannot run: {why}")
        return True
    return ok and torch.device(device).type == "cuda"
