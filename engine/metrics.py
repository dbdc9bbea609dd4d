"""Image quality: PSNR and SSIM of images on the [-1, 1] scale."""
from __future__ import annotations

import math

import torch

__all__ = ["psnr", "ssim"]


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR in dB of ``x`` (clipped to [-1, 1]) against ``ref``, peak-to-peak 2: ``10 log10(4 / MSE)``."""
    mse = float(((x.double().clamp(-1, 1) - ref.double()) ** 2).mean())
    if mse == 0.0:
        return math.inf
    return 10 * math.log10(4.0 / mse)


def ssim(x: torch.Tensor, ref: torch.Tensor) -> float:
    """SSIM (scikit-image's ``structural_similarity``, Gaussian window) of ``(C, H, W)`` images on [-1, 1], taken
    as the papers take it: on [0, 1] with data range 1 (the same as on 0..255 with range 255); ``x`` is clipped to
    [-1, 1]. (SSIM is not shift-invariant: before 2026-12-07 it was taken on [-1, 1] itself, where the luminance
    term of a mid-gray window, mean near 0, swings wildly: a flat mid-gray image off by 0.05 scored 0.14, not
    0.99.)"""
    from skimage.metrics import structural_similarity  # scikit-image loads slowly; only needed here

    a = (x.double().clamp(-1, 1).cpu().numpy() + 1.0) / 2.0
    b = (ref.double().cpu().numpy() + 1.0) / 2.0
    if a.shape[0] == 1:
        return float(structural_similarity(a[0], b[0], data_range=1.0, gaussian_weights=True))
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=0, gaussian_weights=True))
