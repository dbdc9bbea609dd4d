"""Pointwise work of the circular-blur operator on the half spectrum (``rfft2``, ``norm="ortho"``).

With ``H`` the transfer function of the blur (``A x = irfft2(H * rfft2(x))``), ``|H|^2`` are the
eigenvalues of ``A^T A`` and every operator-side step of the sampler is one filter on the
spectrum between one ``rfft2`` and one ``irfft2``:

- normal residual ``A^T (A x - y)``:  ``R = |H|^2 X - conj(H) Y``
- exact guidance step:                ``X - c phi(c |H|^2) R`` with ``c = h kappa``
- Stage-I filter:                     ``m(|H|^2) B + s(|H|^2) Z`` (mean filter on ``A^T y``, square-root
                                      covariance on white noise)

``Y`` is ``rfft2(y)`` of shape ``(B, 1, C, H, W//2+1)``, broadcast over the particles of each image.
"""
from __future__ import annotations

import torch

__all__ = ["phi", "rfft_weights", "blur_residual_ref", "blur_guidance_ref"]


def phi(z: torch.Tensor) -> torch.Tensor:
    """``(1 - exp(-z)) / z`` with ``phi(0) = 1``, accurate for small ``z``."""
    small = z.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 1.0 - 0.5 * z, -torch.expm1(-safe) / safe)


def rfft_weights(width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Parseval weights of the ``rfft`` columns: 1 for the self-conjugate ones, 2 otherwise."""
    wr = width // 2 + 1
    w = torch.full((wr,), 2.0, device=device, dtype=dtype)
    w[0] = 1.0
    if width % 2 == 0:
        w[-1] = 1.0
    return w


def blur_residual_ref(X: torch.Tensor, H: torch.Tensor, Y: torch.Tensor, width: int, with_norm: bool):
    """Spectrum of ``A^T (A x - y)`` and, if asked, ``||A x - y||^2`` per leading index.

    ``X``: ``(..., C, H, Wr)`` complex, ``H``: ``(H, Wr)`` complex, ``Y`` broadcastable to ``X``.
    Reads ``X`` once and writes one spectrum: 16 bytes per complex64 element each way.
    """
    AX_minus_Y = H * X - Y
    R = torch.conj(H) * AX_minus_Y
    if not with_norm:
        return R, None
    w = rfft_weights(width, device=X.device, dtype=X.real.dtype)
    norm = (AX_minus_Y.real.square() + AX_minus_Y.imag.square()).mul(w).sum(dim=(-3, -2, -1), dtype=torch.float64)
    return R, norm


def blur_guidance_ref(X: torch.Tensor, H: torch.Tensor, Y: torch.Tensor, c: float) -> torch.Tensor:
    """Exact guidance step on the spectrum: ``X - c phi(c |H|^2) (|H|^2 X - conj(H) Y)``.

    ``c = h kappa`` (step length times guidance stiffness). Same shapes as :func:`blur_residual_ref`.
    """
    e = H.real.square() + H.imag.square()
    filt = c * phi(c * e)
    return X - filt * (e * X - torch.conj(H) * Y)
