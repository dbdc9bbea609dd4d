"""The first convolution with bias and GroupNorm statistics in one pass (kernels/conv_in.py): the Triton kernel
against the reference and a float64 oracle, in both layouts of input and output. Tolerances: tests/tolerances.py
(float32 element-wise; bfloat16 by the rule of twice PyTorch's own bfloat16 error; the statistics by the float32
reduction rule, scale the sum of the terms' absolute values)."""
import pytest
import torch
from tolerances import (DEVICE, assert_bf16_rule, assert_close_elementwise, assert_close_reduction,
                        nan_filled_allocations)

from afdps.kernels import conv_in as ci
from afdps.kernels._triton import HAS_TRITON

pytestmark = [pytest.mark.interpreter, pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")]
FMT = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _inputs(N, Ci, Co, H, W, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, Ci, H, W, generator=g, dtype=torch.float64).to(DEVICE, torch.float32)
    w = (0.3 * torch.randn(Co, Ci, 3, 3, generator=g, dtype=torch.float64)).to(DEVICE, torch.float32)
    b = (1.0 + torch.randn(Co, generator=g, dtype=torch.float64)).to(DEVICE, torch.float32)  # offset channels
    return x.contiguous(memory_format=FMT[layout]), w, b


def _oracle(x, w, b, dtype):
    """float64 convolution of the operands rounded to ``dtype``."""
    r = lambda t: t.to(dtype).double()  # noqa: E731
    return torch.nn.functional.conv2d(r(x), r(w), r(b) if b is not None else None, padding=1)


@pytest.mark.parametrize("Ci,Co,H,W", [(3, 40, 9, 13), (1, 16, 4, 4), (7, 136, 5, 3)])
@pytest.mark.parametrize("x_layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("out_layout", ["contiguous", "channels_last"])
def test_kernel_matches_the_convolution_float32(monkeypatch, Ci, Co, H, W, x_layout, out_layout):
    """float32 (IEEE products): against the float64 oracle within the float32 rule, the reference too; padding at
    every border, a patch of 7 channels (63 of 64 columns), two output-channel blocks (136), no bias. (On CUDA the
    reference is cuDNN's convolution, which takes TF32 products by default: 1e-3 off, so IEEE is asked for.)"""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    x, w, b = _inputs(2, Ci, Co, H, W, x_layout, seed=Ci)
    fmt = FMT[out_layout]
    for bias in (b, None):
        out = ci.conv_in_triton(x, w, bias, dtype=torch.float32, memory_format=fmt)
        oracle = _oracle(x, w, bias, torch.float32).float()
        assert out.shape == (2, Co, H, W) and out.dtype == torch.float32 and out.is_contiguous(memory_format=fmt)
        assert_close_elementwise(out, oracle, torch.float32)
        assert_close_elementwise(ci.conv_in_ref(x, w, bias, dtype=torch.float32, memory_format=fmt), oracle,
                                 torch.float32)


@pytest.mark.parametrize("programs", [1024, 4])
def test_bfloat16_and_the_statistics(monkeypatch, programs):
    """bfloat16 output from float32 input (ADM's torso): within the bfloat16 rule of the float64 oracle on the
    rounded operands; the statistics' totals against the float64 sums of the stored output shifted by the kernel's
    own k (the rounded bias), within the float32 reduction rule, with GPU tiles (64 pixels): 4 programs make 2
    splits of 2 tiles (240 pixels, 2 samples), 1024 a split per tile; the output does not depend on them."""
    monkeypatch.setattr(ci, "STATS_PROGRAMS", programs)
    monkeypatch.setattr(ci, "interpreting", lambda: False)
    x, w, b = _inputs(2, 3, 48, 12, 20, "contiguous", seed=4)
    nan_filled_allocations(monkeypatch)  # an unwritten element of y or the statistics would be NaN
    y, st = ci.conv_in_triton(x, w.bfloat16(), b.bfloat16(), dtype=torch.bfloat16,
                              memory_format=torch.channels_last, stats=True)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert st.s1.shape == (2, 2 if programs == 4 else 4, 48) and st.k.shape == (2, 48)
    torch_out = ci.conv_in_ref(x, w.bfloat16(), b.bfloat16(), dtype=torch.bfloat16)
    assert_bf16_rule(y, torch_out, _oracle(x, w, b, torch.bfloat16))
    assert torch.equal(y, ci.conv_in_triton(x, w.bfloat16(), b.bfloat16(), dtype=torch.bfloat16,
                                            memory_format=torch.channels_last))
    assert torch.equal(st.k, b.bfloat16().float().expand(2, 48))
    d = y.double().flatten(2) - st.k.double()[:, :, None]
    assert_close_reduction(st.s1.sum(1), d.sum(2), d.abs().sum(2), torch.float32)
    assert_close_reduction(st.s2.sum(1), (d * d).sum(2), (d * d).sum(2), torch.float32)


def test_a_wider_bias_is_rounded_like_the_reference():
    """A float32 bias with a bfloat16 (float16) output: rounded to the output dtype first, as the reference (and a
    torso stored in that dtype) has it. Within the bfloat16 rule, and at most 2 of the 384 outputs differ from the
    reference's (the float32 sums' order can move a value across a rounding boundary: measured 0 for bfloat16, 1
    for float16; with the bias unrounded about a quarter of them differ)."""
    x, w, b = _inputs(2, 3, 32, 6, 7, "contiguous", seed=9)
    b = b + 1e-3 * torch.arange(32, device=DEVICE)  # not representable in bfloat16
    for dtype in (torch.bfloat16, torch.float16):
        out = ci.conv_in_triton(x, w, b, dtype=dtype)
        ref = ci.conv_in_ref(x, w, b, dtype=dtype)
        torch_out = ci.conv_in_ref(x, w, b, dtype=dtype)
        assert_bf16_rule(out, torch_out, _oracle(x, w, b, dtype))
        assert (out != ref).sum().item() <= 2, (out != ref).sum().item()


def test_errors_and_dispatch():
    x, w, b = _inputs(1, 3, 16, 4, 4, "contiguous")
    with pytest.raises(ValueError, match=r"weight must be \(Co, 3, 3, 3\) for x's 3 channels, got \(16, 2, 3, 3\)"):
        ci.conv_in_ref(x, w[:, :2], b)
    with pytest.raises(ValueError, match=r"bias must be \(16,\)"):
        ci.conv_in_ref(x, w, b[:3])
    with pytest.raises(ValueError, match="memory_format must be"):
        ci.conv_in_ref(x, w, b, memory_format=torch.preserve_format)
    with pytest.raises(ValueError, match="conv_in_triton writes"):
        ci.conv_in_triton(x, w, b, dtype=torch.float64)
    x8 = torch.randn(1, 8, 4, 4, device=DEVICE)
    with pytest.raises(ValueError, match="patches of up to 64 values"):
        ci.conv_in_triton(x8, torch.randn(16, 8, 3, 3, device=DEVICE))
    y, st = ci.conv_in(x8, torch.randn(16, 8, 3, 3, device=DEVICE), stats=True)  # too wide: the reference
    assert st is None and y.shape == (1, 16, 4, 4)
    auto, st = ci.conv_in(x, w, b, stats=True)
    assert (st is None) == (x.device.type != "cuda")
