"""Zero-copy exchange of arrays with NumPy and CuPy.

:func:`to_torch` accepts a torch tensor, a NumPy array or a CuPy array and returns a tensor sharing its
memory plus a ``kind`` tag; :func:`from_torch` turns a tensor back into that kind, again without a
copy where the devices allow it::

    t, kind = to_torch(array)       # kind in {"torch", "numpy", "cupy"}
    out = from_torch(f(t), kind)    # same kind as the input

NumPy goes through ``torch.from_numpy`` (read-only arrays are copied, since torch tensors are always
writable), CuPy through DLPack (``torch.from_dlpack`` / ``cupy.from_dlpack``). CuPy is imported only
when a CuPy array is seen or asked for.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["KINDS", "array_kind", "to_torch", "from_torch"]

KINDS = ("torch", "numpy", "cupy")


def array_kind(array) -> str:
    """``"torch"``, ``"numpy"`` or ``"cupy"``; raises ``TypeError`` for anything else."""
    if isinstance(array, torch.Tensor):
        return "torch"
    if isinstance(array, np.ndarray):
        return "numpy"
    module = type(array).__module__ or ""
    if module.split(".")[0] == "cupy" and hasattr(array, "__dlpack__"):
        return "cupy"
    raise TypeError(f"expected a torch tensor, a NumPy array or a CuPy array, got {type(array).__name__}")


def to_torch(array) -> tuple[torch.Tensor, str]:
    """``(tensor, kind)``: a tensor sharing ``array``'s memory (a copy of a read-only NumPy array or of one with
    negative strides, which torch cannot share) and the kind to convert back to."""
    kind = array_kind(array)
    if kind == "torch":
        return array, kind
    if kind == "numpy":
        if not array.flags.writeable or any(st < 0 for st in array.strides):
            array = array.copy()  # (torch shares no read-only memory, nor a view with negative strides: np.flip's)
        if array.dtype.byteorder not in ("=", "|", "<" if np.little_endian else ">"):
            array = array.astype(array.dtype.newbyteorder("="))
        return torch.from_numpy(array), kind
    return torch.from_dlpack(array), kind


def from_torch(tensor: torch.Tensor, kind: str):
    """``tensor`` as a ``kind`` array (``"torch"``, ``"numpy"`` or ``"cupy"``), zero-copy when the device
    matches (a CUDA tensor becomes a NumPy array through a copy to the host; a CPU tensor becomes a CuPy
    array through a copy to the current CUDA device)."""
    if kind == "torch":
        return tensor
    if kind == "numpy":
        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.is_conj():
            t = t.resolve_conj()
        return t.numpy()
    if kind == "cupy":
        import cupy

        t = tensor.detach()
        if t.device.type != "cuda":
            t = t.cuda()
        return cupy.from_dlpack(t)
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
