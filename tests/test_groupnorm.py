"""Fused GroupNorm + scale-shift + SiLU (kernels/groupnorm.py): the Triton kernel against the reference, the
reference against ADM's GroupNorm32 + SiLU, in both memory layouts. Tolerances: tests/tolerances.py
(element-wise, the output's dtype); bfloat16 by the rule of twice PyTorch's own bfloat16 error."""
import pytest
import torch
from tolerances import DEVICE, assert_bf16_rule, assert_close_elementwise

from afdps.engine.models.adm import GroupNorm32
from afdps.kernels import groupnorm as gn
from afdps.kernels._triton import HAS_TRITON

pytestmark = [pytest.mark.interpreter, pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")]


def _inputs(N, C, H, W, dtype, seed=0, scale_shift=True):
    g = torch.Generator().manual_seed(seed)
    x = (2.0 * torch.randn(N, C, H, W, generator=g, dtype=torch.float64) + 0.5).to(DEVICE, dtype)
    w = (1 + 0.3 * torch.randn(C, generator=g, dtype=torch.float64)).to(DEVICE, dtype)
    b = (0.2 * torch.randn(C, generator=g, dtype=torch.float64)).to(DEVICE, dtype)
    sc = (0.5 * torch.randn(N, C, generator=g, dtype=torch.float64)).to(DEVICE, dtype) if scale_shift else None
    sh = (0.5 * torch.randn(N, C, generator=g, dtype=torch.float64)).to(DEVICE, dtype) if scale_shift else None
    return x, w, b, sc, sh


@pytest.mark.parametrize("N,C,H,W,groups", [(1, 32, 1, 3, 32), (3, 64, 5, 7, 32), (2, 32, 8, 8, 8), (1, 96, 3, 3, 32)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("scale_shift,silu", [(True, True), (False, True), (False, False)])
def test_kernel_matches_reference_float32(N, C, H, W, groups, layout, scale_shift, silu):
    x, w, b, sc, sh = _inputs(N, C, H, W, torch.float32, scale_shift=scale_shift)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    out = gn.groupnorm_silu_triton(x, w, b, groups=groups, scale=sc, shift=sh, silu=silu)
    ref = gn.groupnorm_silu_ref(x, w, b, groups=groups, scale=sc, shift=sh, silu=silu)
    oracle = gn.groupnorm_silu_ref(x.double(), w.double(), b.double(), groups=groups,
                                   scale=None if sc is None else sc.double(), shift=None if sh is None else sh.double(),
                                   silu=silu)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last" and C > 1)
    assert_close_elementwise(out, oracle.float(), torch.float32)
    assert_close_elementwise(ref, oracle.float(), torch.float32)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_kernel_statistics_do_not_cancel_on_offset_groups(layout):
    """A group far from zero (offset 1000, spread 0.05): the kernel's float32 statistics must match the float64
    oracle on the same float32 input. Summing x and x^2 would lose the variance to cancellation (E[x^2] -
    mean^2 = 0.0025 out of 1e6, below float32's resolution of 0.06 there). Tolerance: the float32 mean
    alone is off by up to half an ulp of 1000 (3.1e-5), which the normalisation multiplies by 1 / 0.05: 6.1e-4
    on every output; allowed twice that."""
    g = torch.Generator().manual_seed(3)
    x = (1000.0 + 0.05 * torch.randn(2, 32, 5, 7, generator=g, dtype=torch.float64)).float().to(DEVICE)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.ones(32, device=DEVICE), torch.zeros(32, device=DEVICE)
    out = gn.groupnorm_silu_triton(x, w, b, groups=8, silu=False)
    oracle = gn.groupnorm_silu_ref(x.double(), w.double(), b.double(), groups=8, silu=False)
    err = float((out.double() - oracle).abs().max())
    assert err <= 2 * 0.5 * 2.0 ** -14 / 0.05, f"max error {err:.3e} on offset groups"


@pytest.mark.parametrize("N,C,H,W,groups,split", [(2, 96, 5, 6, 8, 4), (1, 1536, 2, 3, 32, 2), (3, 64, 7, 1, 32, 7),
                                                   (2, 128, 9, 9, 32, 1)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_pixel_splits_and_uneven_channel_blocks(N, C, H, W, groups, split, layout):
    """The statistics merged over pixel splits (the last one short) and over channel blocks whose channels are no
    power of two (Cg = 12 and 48: masked columns) equal the float64 oracle within the float32 rule."""
    x, w, b, sc, sh = _inputs(N, C, H, W, torch.float32, seed=split)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    out = gn.groupnorm_silu_triton(x, w, b, groups=groups, scale=sc, shift=sh, _split=split)
    oracle = gn.groupnorm_silu_ref(x.double(), w.double(), b.double(), groups=groups, scale=sc.double(),
                                   shift=sh.double())
    assert_close_elementwise(out, oracle.float(), torch.float32)


def test_channels_with_different_offsets_in_one_group():
    """Each channel is shifted by its own first value and the group's sums moved to its first channel's shift: a
    group whose channels sit at 0, 10, 100 and 1000 (spread 1 within each) keeps its variance (about 1.8e5),
    within the float32 rule."""
    g = torch.Generator().manual_seed(5)
    offsets = torch.tensor([0.0, 10.0, 100.0, 1000.0], dtype=torch.float64).repeat(8)[None, :, None, None]
    x = (offsets + torch.randn(2, 32, 6, 5, generator=g, dtype=torch.float64)).float().to(DEVICE)
    w, b = torch.ones(32, device=DEVICE), torch.zeros(32, device=DEVICE)
    out = gn.groupnorm_silu_triton(x, w, b, groups=8, silu=False, _split=3)
    oracle = gn.groupnorm_silu_ref(x.double(), w.double(), b.double(), groups=8, silu=False)
    assert_close_elementwise(out, oracle.float(), torch.float32)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_bfloat16_input_float32_output(layout):
    """``out_dtype=torch.float32`` (ADM's output head): bfloat16 activations normalised into float32 without a
    bfloat16 rounding of the result, so within the float32 rule of the oracle on the same bfloat16 input."""
    x, w, b, _, _ = _inputs(2, 64, 5, 4, torch.bfloat16, seed=9, scale_shift=False)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    out = gn.groupnorm_silu_triton(x, w.float(), b.float(), groups=32, out_dtype=torch.float32)
    oracle = gn.groupnorm_silu_ref(x.double(), w.double(), b.double(), groups=32)
    assert out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert_close_elementwise(out, oracle.float(), torch.float32)
    ref = gn.groupnorm_silu_ref(x, w.float(), b.float(), groups=32, out_dtype=torch.float32)
    assert ref.dtype == torch.float32
    assert_close_elementwise(ref, oracle.float(), torch.float32)


def test_bfloat16_and_float64():
    x, w, b, sc, sh = _inputs(2, 64, 6, 6, torch.bfloat16)
    out = gn.groupnorm_silu_triton(x, w, b, groups=32, scale=sc, shift=sh)
    torch_out = gn.groupnorm_silu_ref(x, w, b, groups=32, scale=sc, shift=sh)
    oracle = gn.groupnorm_silu_ref(x.double(), w.double(), b.double(), groups=32, scale=sc.double(), shift=sh.double())
    assert_bf16_rule(out, torch_out, oracle)
    x, w, b, sc, sh = _inputs(2, 32, 4, 4, torch.float64)
    out = gn.groupnorm_silu_triton(x, w, b, groups=32, scale=sc, shift=sh)
    assert_close_elementwise(out, gn.groupnorm_silu_ref(x, w, b, groups=32, scale=sc, shift=sh), torch.float64)


def test_reference_is_adm_groupnorm_then_silu():
    """The reference equals the ADM ResBlock's own composition: GroupNorm32 (float32 statistics), then
    (1 + scale), shift, SiLU."""
    x, w, b, sc, sh = _inputs(2, 64, 5, 5, torch.float32)
    norm = GroupNorm32(32, 64, eps=1e-5).to(DEVICE)
    with torch.no_grad():
        norm.weight.copy_(w)
        norm.bias.copy_(b)
        want = torch.nn.functional.silu(norm(x) * (1 + sc[:, :, None, None]) + sh[:, :, None, None])
    torch.testing.assert_close(gn.groupnorm_silu_ref(x, w, b, groups=32, scale=sc, shift=sh), want, rtol=1e-6, atol=1e-6)


def test_dispatch_and_errors():
    x, w, b, sc, sh = _inputs(1, 32, 2, 2, torch.float32)
    auto = gn.groupnorm_silu(x, w, b, groups=32, scale=sc, shift=sh)
    picked = (gn.groupnorm_silu_triton if x.device.type == "cuda" else gn.groupnorm_silu_ref)(
        x, w, b, groups=32, scale=sc, shift=sh)
    assert torch.equal(auto, picked)
    with pytest.raises(ValueError, match="groups=5 must divide the 32 channels"):
        gn.groupnorm_silu_ref(x, w, b, groups=5)
    with pytest.raises(ValueError, match="give both scale and shift"):
        gn.groupnorm_silu_ref(x, w, b, groups=32, scale=sc)
    with pytest.raises(ValueError, match=r"x must be \(N, C, H, W\)"):
        gn.groupnorm_silu_ref(x[0], w, b, groups=32)


def test_fake_tensors_take_the_reference(monkeypatch):
    """Under FakeTensorMode (EpsilonModel's activation estimate, FLOP counts, torch.compile's tracing) the dispatcher
    never launches the kernel on tensors without memory (on the GPU that was an illegal memory access): the
    reference gives the output's shape, dtype and layout. Also through a fused network's memory estimate."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from afdps.engine.models import ADMUNet
    from afdps.priors import EpsilonModel

    monkeypatch.setenv("AFDPS_BACKEND", "triton")
    with FakeTensorMode():
        x = torch.empty(2, 64, 5, 5, dtype=torch.bfloat16, device=DEVICE).contiguous(memory_format=torch.channels_last)
        w, b = torch.ones(64, device=DEVICE), torch.zeros(64, device=DEVICE)
        out = gn.groupnorm_silu(x, w, b, groups=32, out_dtype=torch.float32)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    net = ADMUNet(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
                  num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True).to(DEVICE).to_inference()
    assert EpsilonModel(net, event_shape=(3, 16, 16)).activation_bytes_per_image() > 0


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_pre_bias_and_scale_shift_read_in_place(per_sample, layout):
    """``pre_bias`` ((C,) for every sample, or (N, C)) is added before the statistics; ``scale`` and ``shift`` given
    as the two halves of one (N, 2C) tensor (ADM's layout, read with their row stride, not copied): against the
    float64 oracle within the float32 rule, and the reference against GroupNorm of ``x + pre_bias``."""
    x, w, b, _, _ = _inputs(3, 64, 5, 6, torch.float32, seed=11, scale_shift=False)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(12)
    e = (0.5 * torch.randn(3, 128, generator=g)).to(DEVICE)
    scale, shift = e.chunk(2, dim=1)
    pb = (3.0 * torch.randn(3 if per_sample else 1, 64, generator=g)).to(DEVICE)
    pb = pb if per_sample else pb[0]
    out = gn.groupnorm_silu_triton(x, w, b, groups=32, scale=scale, shift=shift, pre_bias=pb, _split=2)
    oracle = gn.groupnorm_silu_ref(x.double() + pb.double().reshape(-1, 64, 1, 1), w.double(), b.double(), groups=32,
                                   scale=scale.double(), shift=shift.double())
    assert_close_elementwise(out, oracle.float(), torch.float32)
    ref = gn.groupnorm_silu_ref(x, w, b, groups=32, scale=scale, shift=shift, pre_bias=pb)
    assert_close_elementwise(ref, oracle.float(), torch.float32)
    with pytest.raises(ValueError, match=r"pre_bias must hold \(C,\) = \(64,\) or \(N, C\)"):
        gn.groupnorm_silu_ref(x, w, b, groups=32, pre_bias=pb[..., :5])


def _oracle_cat_resample(x, x2, w, b, groups, resample, **kw):
    """float64: GroupNorm (+ scale-shift, pre-bias, SiLU) of torch.cat([x, x2], 1), then F.interpolate / avg_pool2d:
    the composition the ``concat`` and ``resample`` options fold in."""
    xc = x.double() if x2 is None else torch.cat([x.double(), x2.double()], 1)
    kw = {k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()}
    a = gn.groupnorm_silu_ref(xc, w.double(), b.double(), groups=groups, **kw)
    if resample == "up":
        a = torch.nn.functional.interpolate(a, scale_factor=2, mode="nearest")
    elif resample == "down":
        a = torch.nn.functional.avg_pool2d(a, 2)
    return a


@pytest.mark.parametrize("C1,C2,groups,split", [(12, 20, 4, 3), (64, 32, 32, 1), (16, 16, 8, 2)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_concat_input_matches_the_concatenation(C1, C2, groups, split, layout):
    """``concat``: the kernels read the two inputs in place, also where a group or a channel block straddles the
    boundary (C1 = 12 in groups of 8), with scale-shift and a per-sample pre-bias: against the float64 oracle on
    ``torch.cat`` within the float32 rule; the reference too."""
    N, H, W = 2, 5, 6
    x, w, b, sc, sh = _inputs(N, C1 + C2, H, W, torch.float32, seed=C1 + split)
    x1, x2 = x[:, :C1].contiguous(), (x[:, C1:] - 1.5).contiguous()
    if layout == "channels_last":
        x1, x2 = (t.contiguous(memory_format=torch.channels_last) for t in (x1, x2))
    pb = torch.linspace(-1, 1, N * (C1 + C2), device=DEVICE).reshape(N, C1 + C2)
    kw = dict(scale=sc, shift=sh, pre_bias=pb)
    out = gn.groupnorm_silu_triton(x1, w, b, groups=groups, concat=x2, _split=split, **kw)
    oracle = _oracle_cat_resample(x1, x2, w, b, groups, None, **kw)
    assert out.shape == (N, C1 + C2, H, W)
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert_close_elementwise(out, oracle.float(), torch.float32)
    assert_close_elementwise(gn.groupnorm_silu_ref(x1, w, b, groups=groups, concat=x2, **kw), oracle.float(),
                             torch.float32)


@pytest.mark.parametrize("resample,H,W", [("up", 3, 5), ("up", 4, 4), ("down", 6, 4), ("down", 2, 10)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("split", [None, 3])
def test_resample_in_the_write(resample, H, W, layout, split):
    """``resample``: nearest x2 (each normalised pixel written to its 2x2 block) or the 2x2 mean of the normalised
    pixels, in the write: against the float64 oracle (normalise, then F.interpolate / avg_pool2d) within the
    float32 rule, odd widths included for "up", splits of the output's pixels for "down"."""
    x, w, b, sc, sh = _inputs(2, 64, H, W, torch.float32, seed=H * W)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    out = gn.groupnorm_silu_triton(x, w, b, groups=32, scale=sc, shift=sh, resample=resample, _split=split)
    oracle = _oracle_cat_resample(x, None, w, b, 32, resample, scale=sc, shift=sh)
    assert out.shape == oracle.shape
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert_close_elementwise(out, oracle.float(), torch.float32)
    ref = gn.groupnorm_silu_ref(x, w, b, groups=32, scale=sc, shift=sh, resample=resample)
    assert_close_elementwise(ref, oracle.float(), torch.float32)


@pytest.mark.parametrize("resample", ["up", "down"])
def test_concat_and_resample_bfloat16(resample):
    """Both options at once on bfloat16 channels-last input (ADM's inference path) with a float32 output: against
    the float64 oracle within the float32 rule (one rounding, the output's)."""
    x, w, b, _, _ = _inputs(2, 96, 4, 6, torch.float32, seed=5, scale_shift=False)
    x1, x2 = (t.to(torch.bfloat16).contiguous(memory_format=torch.channels_last) for t in (x[:, :40], x[:, 40:]))
    out = gn.groupnorm_silu_triton(x1, w, b, groups=32, concat=x2, resample=resample, out_dtype=torch.float32)
    oracle = _oracle_cat_resample(x1, x2, w, b, 32, resample)
    assert out.dtype == torch.float32 and out.shape == oracle.shape
    assert_close_elementwise(out, oracle.float(), torch.float32)


def test_concat_and_resample_errors():
    x, w, b, _, _ = _inputs(2, 32, 3, 4, torch.float32, scale_shift=False)
    with pytest.raises(ValueError, match=r"resample must be None, 'up' or 'down', got 'left'"):
        gn.groupnorm_silu_ref(x, w, b, groups=8, resample="left")
    with pytest.raises(ValueError, match=r"resample='down' needs an even height and width, got \(3, 4\)"):
        gn.groupnorm_silu_ref(x, w, b, groups=8, resample="down")
    x1, x2 = x[:, :16], x[:, 16:]
    with pytest.raises(ValueError, match=r"concat must be \(N, C2, H, W\) with x's N, H, W \(2, 3, 4\)"):
        gn.groupnorm_silu_ref(x1, w, b, groups=8, concat=x2[:, :, :2])
    with pytest.raises(ValueError, match="concat must have x's dtype and device"):
        gn.groupnorm_silu_ref(x1, w, b, groups=8, concat=x2.double())
    with pytest.raises(ValueError, match=r"weight must be \(16,\)"):  # C counts both inputs: 32 here, 16 without
        gn.groupnorm_silu_ref(x1, w, b, groups=8)


@pytest.mark.parametrize("chunk,programs", [(512, 4096), (64, 16)])
def test_other_channel_blocks_and_launch_sizes(monkeypatch, chunk, programs):
    """The settings bench_adm --gn-sweep times (CHUNK_BYTES: a channel block of up to all 32 groups; PROGRAMS: more
    or fewer pixel splits) change the work's split, not the result: against the float64 oracle within the float32
    rule, with both options and a scale-shift."""
    monkeypatch.setattr(gn, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(gn, "PROGRAMS", programs)
    x, w, b, sc, sh = _inputs(2, 128, 6, 4, torch.float32, seed=chunk)
    x1, x2 = (t.contiguous(memory_format=torch.channels_last) for t in (x[:, :72], x[:, 72:]))
    out = gn.groupnorm_silu_triton(x1, w, b, groups=32, concat=x2, resample="down", scale=sc, shift=sh)
    oracle = _oracle_cat_resample(x1, x2, w, b, 32, "down", scale=sc, shift=sh)
    assert_close_elementwise(out, oracle.float(), torch.float32)


@pytest.mark.parametrize("given", ["x", "concat", "both"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_given_statistics_replace_the_statistics_pass(monkeypatch, given, layout):
    """``stats`` / ``concat_stats`` from the residual kernel, or made by hand with a shift other than pixel 0's, in
    place of the statistics launch, for either part of a concatenation where a group straddles the boundary
    (C1 = 10 in groups of 4 channels), offset inputs, a resampling write, the GroupNorm's own plan in 2 pixel
    splits against the given statistics' 1: against the float64 oracle within the float32 rule, as without them;
    the launch count shows the pass skipped."""
    from afdps.kernels import residual as rs
    N, C1, C2, H, W = 2, 10, 22, 6, 8
    x, w, b, sc, sh = _inputs(N, C1 + C2, H, W, torch.float32, seed=11)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x1, x2 = (t.contiguous(memory_format=fmt) for t in (x[:, :C1] + 4.0, x[:, C1:] - 2.0))
    x1, st1 = rs.residual_add_triton(x1, torch.zeros_like(x1), None, None, stats=True)  # the same tensor, with sums
    k2 = x2[:, :, 0, 0] + 0.37  # any shift near the data: the kernels use the one the sums carry
    d2 = x2.double().flatten(2) - k2.double()[:, :, None]
    st2 = gn.GNStats(d2.sum(2)[:, None].float(), (d2 * d2).sum(2)[:, None].float(), k2)
    assert torch.equal(rs.channel_sums_ref(x2).k, x2[:, :, 0, 0])
    kw = dict(scale=sc, shift=sh, resample="down")
    stats = dict(x=dict(stats=st1), concat=dict(concat_stats=st2), both=dict(stats=st1, concat_stats=st2))[given]
    launches = []
    real = gn._groupnorm_stats_kernel
    monkeypatch.setattr(gn, "_groupnorm_stats_kernel", type("Count", (), {
        "__getitem__": lambda self, grid: (launches.append(grid), real[grid])[1]})())
    out = gn.groupnorm_silu_triton(x1, w, b, groups=8, concat=x2, _split=2, **stats, **kw)
    assert len(launches) == (0 if given == "both" else 1)
    oracle = _oracle_cat_resample(x1, x2, w, b, 8, "down", scale=sc, shift=sh)
    assert_close_elementwise(out, oracle.float(), torch.float32)
    ref = gn.groupnorm_silu_ref(x1, w, b, groups=8, concat=x2, **stats, **kw)
    assert_close_elementwise(ref, oracle.float(), torch.float32)
    single = gn.groupnorm_silu_triton(x2, w[:C2], b[:C2], groups=2, stats=st2)  # no concatenation
    assert_close_elementwise(single, _oracle_cat_resample(x2, None, w[:C2], b[:C2], 2, None).float(), torch.float32)
    # the same sums held with other strides (a size-1 split dimension may have any stride and still count as
    # contiguous): the kernels take canonical copies
    odd = lambda t: torch.stack([t[:, 0], t[:, 0]], 0)[0:1].transpose(0, 1)  # noqa: E731
    st_odd = gn.GNStats(odd(st2.s1), odd(st2.s2), st2.k)
    assert st_odd.s1.is_contiguous() and st_odd.s1.stride() != st2.s1.stride()
    assert torch.equal(gn.groupnorm_silu_triton(x2, w[:C2], b[:C2], groups=2, stats=st_odd), single)


def test_given_statistics_errors():
    x, w, b, _, _ = _inputs(2, 32, 3, 4, torch.float32, scale_shift=False)
    good = gn.GNStats(torch.zeros(2, 3, 32), torch.zeros(2, 3, 32), torch.zeros(2, 32))
    with pytest.raises(ValueError, match="stats must be a GNStats"):
        gn.groupnorm_silu_ref(x, w, b, groups=8, stats=torch.zeros(2, 3, 32))
    with pytest.raises(ValueError, match=r"stats must hold \(N, S, C\) = \(2, S >= 1, 32\) sums and an \(N, C\) shift"):
        gn.groupnorm_silu_ref(x, w, b, groups=8, stats=gn.GNStats(good.s1[:, :, :16], good.s2[:, :, :16], good.k))
    with pytest.raises(ValueError, match="stats must be torch.float32"):
        gn.groupnorm_silu_ref(x, w, b, groups=8, stats=gn.GNStats(*(v.double() for v in good)))
    with pytest.raises(ValueError, match="concat_stats needs concat"):
        gn.groupnorm_silu_ref(x, w, b, groups=8, concat_stats=good)
