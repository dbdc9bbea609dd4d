"""Fourier-domain blur kernels (kernels/fourier.py) against the PyTorch references, and the Blur operator
(engine/ops.py) routed through them.

Tolerances (tests/tolerances.py style): complex64 spectra within ``1e-5 * max|ref|`` (the kernel and
torch's complex multiply round differently), the Parseval norm within ``1e-5`` relative (float32 block
sums against a float64 sum); complex128 within ``1e-12``.
"""
import math

import pytest
import torch
from tolerances import DEVICE

from afdps.engine.ops import Blur, gaussian_kernel
from afdps.kernels import fourier as fo
from afdps.kernels._triton import HAS_TRITON

pytestmark = [pytest.mark.interpreter, pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")]

TOL = {torch.complex64: 1e-5, torch.complex128: 1e-12}


def _spectra(xshape, yshape, dtype=torch.complex64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rdt = torch.float64 if dtype == torch.complex128 else torch.float32
    H_, W_ = xshape[-2:]
    x = torch.randn(*xshape, generator=gen, dtype=rdt)
    y = torch.randn(*yshape, generator=gen, dtype=rdt)
    k = torch.rand(H_, W_, generator=gen, dtype=torch.float64)
    X = torch.fft.rfft2(x, norm="ortho").to(DEVICE)
    Y = torch.fft.rfft2(y, norm="ortho").to(DEVICE)
    H = (torch.conj(torch.fft.rfft2(k / k.sum()))).to(dtype).to(DEVICE)
    return X, H, Y


def _close(out, ref, dtype):
    scale = ref.abs().max().item() if ref.numel() else 1.0
    torch.testing.assert_close(out, ref, rtol=TOL[dtype], atol=TOL[dtype] * scale)


SHAPES = [  # (X shape, Y shape): Y broadcast as (B, 1, ...), equal, without leading dims, none at all
    ((2, 3, 3, 16, 16), (2, 1, 3, 16, 16)),
    ((1, 7, 1, 7, 9), (1, 1, 1, 7, 9)),
    ((2, 3, 3, 8, 10), (2, 3, 3, 8, 10)),
    ((4, 3, 6, 5), (3, 6, 5)),
    ((3, 6, 5), (3, 6, 5)),
    ((1, 257, 1, 1, 1), (1, 1, 1, 1, 1)),
    ((2, 2, 3, 61, 61), (2, 1, 3, 61, 61)),
    ((2, 3, 1, 4, 6), (1, 3, 1, 4, 6)),  # not a (B, 1) pattern: expanded
]


@pytest.mark.parametrize("xshape,yshape", SHAPES)
@pytest.mark.parametrize("with_norm", [True, False])
def test_blur_residual(xshape, yshape, with_norm):
    X, H, Y = _spectra(xshape, yshape)
    R, norm = fo.blur_residual_triton(X, H, Y, xshape[-1], with_norm)
    R0, norm0 = fo.blur_residual_ref(X, H, Y, xshape[-1], with_norm)
    assert R.dtype == R0.dtype and R.shape == R0.shape
    _close(R, R0, torch.complex64)
    if with_norm:
        assert norm.dtype == torch.float64 and norm.shape == norm0.shape
        torch.testing.assert_close(norm, norm0, rtol=1e-5, atol=0)
    else:
        assert norm is None


@pytest.mark.parametrize("xshape,yshape", SHAPES[:4])
@pytest.mark.parametrize("c", [0.0, 1e-7, 0.37, 0.5, 3.0, 40.0, -0.2])
def test_blur_guidance(xshape, yshape, c):
    X, H, Y = _spectra(xshape, yshape, seed=1)
    H = H * 3.0  # |H|^2 up to 9: c |H|^2 crosses the series/direct boundary of phi
    _close(fo.blur_guidance_triton(X, H, Y, c), fo.blur_guidance_ref(X, H, Y, c), torch.complex64)


def test_complex128():
    X, H, Y = _spectra((2, 3, 2, 9, 8), (2, 1, 2, 9, 8), dtype=torch.complex128)
    R, n = fo.blur_residual_triton(X, H, Y, 8, True)
    R0, n0 = fo.blur_residual_ref(X, H, Y, 8, True)
    _close(R, R0, torch.complex128)
    torch.testing.assert_close(n, n0, rtol=1e-12, atol=0)
    for c in (0.0, 0.3, 0.7, 5.0):
        _close(fo.blur_guidance_triton(X, H, Y, c), fo.blur_guidance_ref(X, H, Y, c), torch.complex128)


def test_parseval_norm_is_the_pixel_norm():
    """The weighted half-spectrum norms equal ||A x - y||^2 and ||A x - t y||^2 computed in pixels, and the scaled
    residual spectrum is scale * A^T (A x - y) (odd and even widths, complex128, kernel and reference)."""
    for W in (10, 11):
        op = Blur(gaussian_kernel(5, 1.2), (2, 9, W))
        x = torch.randn(3, 2, 2, 9, W, dtype=torch.float64)
        y = torch.randn(3, 1, 2, 9, W, dtype=torch.float64)
        X, Y = torch.fft.rfft2(x, norm="ortho"), torch.fft.rfft2(y, norm="ortho")
        ax = op.A(x)
        for fn in (fo.blur_residual_ref, fo.blur_residual_triton):
            _, n = fn(X.to(DEVICE), op.transfer.to(DEVICE), Y.to(DEVICE), W, True)
            torch.testing.assert_close(n.cpu(), (ax - y).square().sum(dim=(-3, -2, -1)), rtol=1e-10, atol=0)
            R, n2 = fn(X.to(DEVICE), op.transfer.to(DEVICE), Y.to(DEVICE), W, True, 3.0, 0.6)
            for got, t in ((n2[0], 1.0), (n2[1], 0.6)):
                torch.testing.assert_close(got.cpu(), (ax - t * y).square().sum(dim=(-3, -2, -1)), rtol=1e-10, atol=0)
            r = torch.fft.irfft2(R.cpu(), s=(9, W), norm="ortho")
            torch.testing.assert_close(r, 3.0 * op.A_adjoint(ax - y), rtol=1e-10, atol=1e-12)


def test_dispatch():
    X, H, Y = _spectra((2, 2, 1, 6, 6), (2, 1, 1, 6, 6))
    R0, n0 = fo.blur_residual(X, H, Y, 6, True, use_triton=False)
    R1, n1 = fo.blur_residual(X, H, Y, 6, True, use_triton=True)
    R2, n2 = fo.blur_residual(X, H, Y, 6, True)
    # auto (kernels/backend.py): the kernel on CUDA, the reference elsewhere (the interpreter included)
    Ra, na = (R1, n1) if X.device.type == "cuda" else (R0, n0)
    assert torch.equal(Ra, R2) and torch.equal(na, n2)
    _close(R1, R0, torch.complex64)
    G0 = fo.blur_guidance(X, H, Y, 0.2, use_triton=False)
    assert torch.equal(G0, fo.blur_guidance_ref(X, H, Y, 0.2))
    _close(fo.blur_guidance(X, H, Y, 0.2, use_triton=True), G0, torch.complex64)


def test_blur_operator_uses_the_kernels(monkeypatch):
    """With AFDPS_BACKEND=triton the operator's sampler calls run the kernels; results match torch."""
    op = Blur(gaussian_kernel(7, 2.0), (3, 12, 13))
    x = torch.randn(2, 4, 3, 12, 13, device=DEVICE)
    y = torch.randn(2, 1, 3, 12, 13, device=DEVICE)
    monkeypatch.setenv("AFDPS_BACKEND", "torch")
    r0, n0 = op.normal_residual(x, y, with_norm=True)
    g0 = op.exact_guidance_step(x, y, 0.01, 30.0)
    monkeypatch.setenv("AFDPS_BACKEND", "triton")
    calls = []
    real = fo.blur_residual_triton
    monkeypatch.setattr(fo, "blur_residual_triton", lambda *a: calls.append(1) or real(*a))
    r1, n1 = op.normal_residual(x, y, with_norm=True)
    g1 = op.exact_guidance_step(x, y, 0.01, 30.0)
    assert calls, "the Triton kernel was not called"
    torch.testing.assert_close(r1, r0, rtol=1e-5, atol=1e-5 * r0.abs().max().item())
    torch.testing.assert_close(n1, n0, rtol=1e-5, atol=0)
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-5 * g0.abs().max().item())
    assert math.isfinite(float(n1.sum()))


@pytest.mark.parametrize("xshape,yshape", SHAPES[:4] + SHAPES[-1:])
@pytest.mark.parametrize("second", [None, 0.5, 1.0, 1.7])
def test_blur_residual_scale_and_second_norm(xshape, yshape, second):
    """The scale rides in the residual's pass (the kernel equals the reference times the scale); the second norm
    is ||A x - t y||^2 from the same pass; with t = 1 it equals the first."""
    X, H, Y = _spectra(xshape, yshape, seed=3)
    R0, n0 = fo.blur_residual_ref(X, H, Y, xshape[-1], True)
    for fn in (fo.blur_residual_ref, fo.blur_residual_triton):
        R, n = fn(X, H, Y, xshape[-1], True, 0.25, second)
        _close(R, 0.25 * R0, torch.complex64)
        if second is None:
            assert n.shape == n0.shape
            torch.testing.assert_close(n, n0, rtol=1e-5, atol=0)
            continue
        assert n.shape == (2, *n0.shape) and n.dtype == torch.float64
        torch.testing.assert_close(n[0], n0, rtol=1e-5, atol=0)
        _, n_t = fo.blur_residual_ref(X, H, Y * second, xshape[-1], True)  # the norm with y scaled by t
        torch.testing.assert_close(n[1], n_t, rtol=1e-5, atol=0)
        if second == 1.0:
            torch.testing.assert_close(n[1], n[0], rtol=1e-6, atol=0)
    for fn in (fo.blur_residual, fo.blur_residual_ref, fo.blur_residual_triton):  # both twins refuse it
        with pytest.raises(ValueError, match="needs with_norm"):
            fn(X, H, Y, xshape[-1], False, second=0.5)

