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


def test_ssim_is_the_papers_ssim_on_8_bit_values():
    """SSIM equals scikit-image's on the 0..255 values of the same images (data range 255), the convention of
    published tables; on [-1, 1] itself (before 2026-12-07) a flat mid-gray image off by 0.05 scored 0.14."""
    import numpy as np
    from skimage.metrics import structural_similarity
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(1, 32, 32, generator=g) * 2 - 1
    x = (ref + 0.2 * torch.randn(1, 32, 32, generator=g)).clamp(-1, 1)
    to255 = [((t[0].double().numpy() + 1) * 127.5) for t in (x, ref)]
    want = structural_similarity(*to255, data_range=255.0, gaussian_weights=True)
    assert ssim(x, ref) == pytest.approx(want, rel=1e-9)
    flat = torch.zeros(1, 32, 32)
    assert ssim(flat + 0.05, flat) > 0.99
    assert not np.isclose(ssim(flat + 0.05, flat), structural_similarity(
        (flat + 0.05)[0].numpy().astype(np.float64), flat[0].numpy().astype(np.float64), data_range=2.0,
        gaussian_weights=True))
