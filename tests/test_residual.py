"""Residual add with bias and resampling (kernels/residual.py): the Triton kernel against the reference, the
reference against PyTorch's own sequence (bias add, upsample or pool, add), in both layouts. Tolerances:
tests/tolerances.py (float32 element-wise; bfloat16 by the rule of twice PyTorch's own bfloat16 error)."""
import pytest
import torch
from tolerances import (DEVICE, assert_bf16_rule, assert_close_elementwise, assert_close_reduction,
                        nan_filled_allocations)

from afdps.kernels import residual as rs
from afdps.kernels._triton import HAS_TRITON

pytestmark = [pytest.mark.interpreter, pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")]
SKIP_SCALE = {None: 1, "up": 0.5, "down": 2}


def _inputs(N, C, H, W, resample, dtype, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = int(H * SKIP_SCALE[resample]), int(W * SKIP_SCALE[resample])
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    a = torch.randn(N, C, H, W, generator=g, dtype=torch.float64).to(DEVICE, dtype).contiguous(memory_format=fmt)
    s = torch.randn(N, C, h, w, generator=g, dtype=torch.float64).to(DEVICE, dtype).contiguous(memory_format=fmt)
    b = torch.randn(C, generator=g, dtype=torch.float64).to(DEVICE, dtype)
    return a, s, b


@pytest.mark.parametrize("N,C,H,W", [(2, 96, 6, 10), (1, 3, 2, 2), (3, 130, 4, 6)])
@pytest.mark.parametrize("resample", [None, "up", "down"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_kernel_matches_reference_and_pytorch(N, C, H, W, resample, layout):
    a, s, b = _inputs(N, C, H, W, resample, torch.float32, layout)
    out = rs.residual_add_triton(a, s, b, resample)
    ref = rs.residual_add_ref(a, s, b, resample)
    r = {None: lambda: s, "up": lambda: torch.nn.functional.interpolate(s.double(), scale_factor=2, mode="nearest"),
         "down": lambda: torch.nn.functional.avg_pool2d(s.double(), 2)}[resample]()
    oracle = (a.double() + b.double()[:, None, None] + r.double()).float()
    assert out.shape == a.shape and out.dtype == a.dtype
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert_close_elementwise(out, oracle, torch.float32)
    assert_close_elementwise(ref, oracle, torch.float32)
    no_bias = rs.residual_add_triton(a, s, None, resample)
    assert_close_elementwise(no_bias, (oracle.double() - b.double()[:, None, None]).float(), torch.float32)


@pytest.mark.parametrize("resample", [None, "up", "down"])
def test_bfloat16(resample):
    a, s, b = _inputs(2, 64, 4, 6, resample, torch.bfloat16, "channels_last", seed=3)
    out = rs.residual_add_triton(a, s, b, resample)
    torch_out = rs.residual_add_ref(a, s, b, resample)
    oracle = rs.residual_add_ref(a.double(), s.double(), b.double(), resample)
    assert_bf16_rule(out, torch_out, oracle)


def test_errors_and_dispatch():
    a, s, b = _inputs(1, 4, 4, 4, None, torch.float32, "contiguous")
    with pytest.raises(ValueError, match="resample must be None, 'up' or 'down', got 'sideways'"):
        rs.residual_add_ref(a, s, b, "sideways")
    with pytest.raises(ValueError, match=r"skip must have shape \(1, 4, 2, 2\) for resample='up'"):
        rs.residual_add_ref(a, s, b, "up")
    with pytest.raises(ValueError, match=r"bias must be \(4,\)"):
        rs.residual_add_ref(a, s, b[:3])
    y, st = rs.residual_add_triton(a[:, :, :0], s[:, :, :0], b, stats=True)  # no pixels: zero sums
    assert y.shape == (1, 4, 0, 4) and st.s1.shape == (1, 1, 4) and not st.s1.any() and not st.k.any()
    auto = rs.residual_add(a, s, b)
    picked = (rs.residual_add_triton if a.device.type == "cuda" else rs.residual_add_ref)(a, s, b)
    assert torch.equal(auto, picked)


@pytest.mark.parametrize("resample", [None, "up", "down"])
@pytest.mark.parametrize("layout,dtype", [("channels_last", torch.bfloat16), ("contiguous", torch.float32)])
@pytest.mark.parametrize("programs", [1024, 8])
def test_statistics_by_product(monkeypatch, resample, layout, dtype, programs):
    """``stats=True``: the same ``y`` bit for bit, and per-split sums whose totals are the float64 sums of the stored
    ``y`` shifted by its pixel-0 value, within the float32 reduction rule (scale: the sum of the terms' absolute
    values). With GPU tiles (64 pixels of 64 channels) the 240 pixels are 4 tiles: ``STATS_PROGRAMS = 8`` makes 2
    splits of 2 tiles each (2 samples x 2 channel blocks x 2), 1024 a split per tile."""
    monkeypatch.setattr(rs, "STATS_PROGRAMS", programs)
    a, s, b = _inputs(2, 80, 12, 20, resample, dtype, layout, seed=7)
    a = a + 3.0  # offset channels: the shift keeps the squares from cancelling
    monkeypatch.setattr(rs, "interpreting", lambda: False)  # GPU tiles (4096 values): several per split
    nan_filled_allocations(monkeypatch)  # an unwritten element of y or the statistics would be NaN
    y, st = rs.residual_add_triton(a, s, b, resample, stats=True)
    assert torch.equal(y, rs.residual_add_triton(a, s, b, resample))
    assert st.s1.dtype == torch.float32 and st.s1.shape[0] == 2 and st.s1.shape[2] == 80
    assert st.s1.shape[1] == (2 if programs == 8 else 4)
    d = y.double().flatten(2)
    assert torch.equal(st.k.double(), d[:, :, 0])  # the shift: the stored y at pixel 0
    d = d - d[:, :, :1]
    assert_close_reduction(st.s1.sum(1), d.sum(2), d.abs().sum(2), torch.float32)
    assert_close_reduction(st.s2.sum(1), (d * d).sum(2), (d * d).sum(2), torch.float32)
    ref_y, ref_st = rs.residual_add_ref(a, s, b, resample, stats=True)
    assert ref_st.s1.shape == (2, 1, 80)
    assert_close_reduction(ref_st.s2[:, 0], (d * d).sum(2), (d * d).sum(2), torch.float32)
    auto_y, auto_st = rs.residual_add(a, s, b, resample, stats=True)
    assert (auto_st is None) == (a.device.type != "cuda")  # the reference makes no statistics pass of its own
