"""Backend choice: the one place that reads ``AFDPS_BACKEND`` (``torch`` | ``triton`` | ``auto``).

``auto`` runs the Triton kernels on CUDA tensors (or everywhere under ``TRITON_INTERPRET=1``) and the
PyTorch references otherwise; ``torch`` always runs the references; ``triton`` runs the kernels or
raises. An explicit argument wins over the environment variable.
"""
from __future__ import annotations

import os

import torch

__all__ = ["BACKENDS", "requested_backend", "triton_available", "use_triton_for"]

BACKENDS = ("auto", "torch", "triton")


def requested_backend(backend: str | None = None) -> str:
    name = backend if backend is not None else os.environ.get("AFDPS_BACKEND", "auto")
    name = str(name).strip().lower()
    if name not in BACKENDS:
        source = "backend" if backend is not None else "AFDPS_BACKEND"
        raise ValueError(f"{source}={name!r} is not one of {', '.join(BACKENDS)}")
    return name


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_available(device: torch.device | str) -> tuple[bool, str]:
    """Whether Triton kernels can run on ``device``, and if not, why."""
    try:
        import triton  # noqa: F401  (import probe only; kernels import it through kernels._triton)
    except ImportError:
        return False, "triton is not installed (pip install 'afdps[triton]')"
    device = torch.device(device)
    if interpreting():
        return (True, "") if device.type == "cpu" else (False, "TRITON_INTERPRET=1 runs kernels on CPU tensors only")
    if device.type != "cuda":
        return False, f"Triton kernels need CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 to interpret them on the CPU"
    return True, ""


def use_triton_for(device: torch.device | str, backend: str | None = None) -> bool:
    """Resolve a backend request for tensors on ``device``; raise if ``triton`` was asked for and cannot run."""
    name = requested_backend(backend)
    if name == "torch":
        return False
    ok, why = triton_available(device)
    if name == "triton" and not ok:
        raise RuntimeError(f"backend 'triton' was requested but cannot run: {why}")
    if name == "auto":
        return ok and torch.device(device).type == "cuda"
    return True
