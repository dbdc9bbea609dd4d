"""Image metrics (engine/metrics.py)."""
import math

import pytest
import torch

from afdps import psnr, ssim


def test_psnr_closed_form_and_clipping():
    ref = torch.zeros(1, 4, 4)
    assert psnr(ref + 0.1, ref) == pytest.approx(10 * math.log10(4 / 0.01))
    assert psnr(ref + 5.0, ref) == pytest.approx(10 * math.log10(4 / 1.0))  # x is clipped to [-1, 1]
    assert psnr(ref, ref) == math.inf


def test_ssim_identity_and_degradation():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 32, 32, generator=g) * 2 - 1
    assert ssim(ref, ref) == pytest.approx(1.0)
    noisy = ref + 0.3 * torch.randn(3, 32, 32, generator=g)
    assert ssim(noisy, ref) < 0.9
    assert ssim(ref[:1], ref[:1]) == pytest.approx(1.0)  # one channel
