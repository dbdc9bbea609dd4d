"""The ADM ("guided-diffusion") UNet of Dhariwal & Nichol (2021), written from its description.

The network is the noise predictor eps_theta(x_t, t) of the public ADM checkpoints (FFHQ 256 of DPS,
ImageNet 256 unconditional of guided-diffusion). Module names and parameter shapes follow those
checkpoints exactly, so their state dicts load with ``load_state_dict(strict=True)``.

Numerics follow the reference: GroupNorm (32 groups, eps 1e-5) and the sinusoidal time features
are computed in float32 whatever the parameter dtype (float64 when the model is float64), and the
attention logits are q.k / sqrt(head_channels). Under ``torch.autocast`` (or with
``autocast_dtype=``) only the UNet torso runs in reduced precision; the time embedding and the
output head stay in the parameter dtype, as the reference does with ``use_fp16``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...kernels._triton import is_channels_last
from ...kernels.conv_in import conv_in
from ...kernels.groupnorm import groupnorm_silu
from ...kernels.residual import residual_add

__all__ = ["ADMUNet", "adm_config", "ADM_PRESETS", "timestep_embedding"]

GROUPS = 32
GROUPNORM_EPS = 1e-5
DEFAULT_NUM_CLASSES = 1000

_DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}

ADM_PRESETS = {
    # DPS configs/model_config.yaml, checkpoint ffhq_10m.pt (93,563,910 parameters).
    "adm-ffhq256": {
        "image_size": 256,
        "num_channels": 128,
        "num_res_blocks": 1,
        "channel_mult": "",
        "learn_sigma": True,
        "class_cond": False,
        "use_checkpoint": False,
        "attention_resolutions": "16",
        "num_heads": 4,
        "num_head_channels": 64,
        "num_heads_upsample": -1,
        "use_scale_shift_norm": True,
        "dropout": 0.0,
        "resblock_updown": True,
        "use_fp16": False,
        "use_new_attention_order": False,
    },
    # guided-diffusion 256x256_diffusion_uncond.pt (552,814,086 parameters); DPS
    # configs/imagenet_model_config.yaml. The release flags say use_fp16=True, which changes only
    # the compute dtype, not the weights.
    "adm-imagenet256": {
        "image_size": 256,
        "num_channels": 256,
        "num_res_blocks": 2,
        "channel_mult": "",
        "learn_sigma": True,
        "class_cond": False,
        "use_checkpoint": False,
        "attention_resolutions": "32,16,8",
        "num_heads": 4,
        "num_head_channels": 64,
        "num_heads_upsample": -1,
        "use_scale_shift_norm": True,
        "dropout": 0.0,
        "resblock_updown": True,
        "use_fp16": False,
        "use_new_attention_order": False,
    },
}


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


# guided-diffusion's use_fp16 is a GPU speed option. On the CPU, float16 autocast is not one: the shipped MNIST
# prior's network (batch 16, one thread of this project's 2-core CPU, 2026-12-07, another job on the other core) took
# 3.3 s in float32, 39 s under bfloat16 autocast and more than 30 s under float16. So on the CPU a use_fp16 config
# runs float32 unless the caller passes autocast_dtype=torch.float16.
FP16_DEVICES = ("cuda",)  # the device types where use_fp16's float16 autocast is the default


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_numbers(text: str, name: str) -> tuple:
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            number = float(part)
        except ValueError:
            raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None
        values.append(int(number) if number.is_integer() else number)
    return tuple(values)


def _resolve_channel_mult(channel_mult, image_size: int) -> tuple:
    if channel_mult in ("", None):
        if image_size not in _DEFAULT_CHANNEL_MULT:
            sizes = ", ".join(str(s) for s in _DEFAULT_CHANNEL_MULT)
            raise ValueError(
                f"no default channel_mult for image_size {image_size} (defaults exist for "
                f"{sizes}); pass channel_mult explicitly, e.g. '1,2,2,4'"
            )
        return _DEFAULT_CHANNEL_MULT[image_size]
    if isinstance(channel_mult, str):
        mult = _parse_numbers(channel_mult, "channel_mult")
    elif isinstance(channel_mult, Iterable):
        mult = tuple(channel_mult)
    else:
        raise ValueError(
            f"channel_mult must be a comma string, a sequence of numbers or '', got {channel_mult!r}"
        )
    if not mult or any(isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0
                       for m in mult):
        raise ValueError(f"channel_mult must be positive numbers, got {channel_mult!r}")
    return mult


def _resolve_attention_resolutions(attention_resolutions) -> tuple:
    if isinstance(attention_resolutions, str):
        if not attention_resolutions.strip():
            return ()
        res = _parse_numbers(attention_resolutions, "attention_resolutions")
    elif _is_int(attention_resolutions):
        res = (attention_resolutions,)
    elif isinstance(attention_resolutions, Iterable):
        res = tuple(attention_resolutions)
    else:
        raise ValueError(
            "attention_resolutions must be a comma string, an int or a sequence of ints, "
            f"got {attention_resolutions!r}"
        )
    for r in res:
        if not _is_int(r) or r <= 0:
            raise ValueError(
                f"attention resolution {r!r} in {attention_resolutions!r} is not a positive int"
            )
    return res


def _heads(width: int, num_heads: int, num_head_channels: int, where: str) -> int:
    if num_head_channels == -1:
        if width % num_heads:
            raise ValueError(
                f"{where}: width {width} is not divisible by num_heads {num_heads}"
            )
        return num_heads
    if width % num_head_channels:
        raise ValueError(
            f"{where}: width {width} is not divisible by num_head_channels {num_head_channels}"
        )
    return width // num_head_channels


def adm_config(
    image_size,
    num_channels,
    num_res_blocks,
    channel_mult="",
    learn_sigma=False,
    class_cond=False,
    use_checkpoint=False,
    attention_resolutions="16",
    num_heads=1,
    num_head_channels=-1,
    num_heads_upsample=-1,
    use_scale_shift_norm=False,
    dropout=0.0,
    resblock_updown=False,
    use_fp16=False,
    use_new_attention_order=False,
    in_channels=3,
    num_classes=None,
) -> dict:
    """Resolve guided-diffusion ``create_model`` arguments into the UNet's constructor arguments.

    Parameters
    ----------
    image_size : int
        Side of the square input images. Non-square models are not supported.
    num_channels : int
        Base width C; level l has width ``int(channel_mult[l] * C)``.
    num_res_blocks : int
        ResBlocks per level on the way down (the way up has one more per level).
    channel_mult : str or sequence of numbers
        Per-level width multipliers. ``""`` picks the guided-diffusion default for image sizes
        512, 256, 128 and 64.
    attention_resolutions : str, int or iterable of int
        Feature-map sizes (in pixels) that get attention after each ResBlock, e.g. ``"32,16,8"``;
        converted to downsample rates ``image_size // resolution``.
    num_heads, num_head_channels, num_heads_upsample : int
        Heads per attention block: ``width // num_head_channels`` when ``num_head_channels != -1``,
        else ``num_heads`` (``num_heads_upsample`` on the way up; -1 means ``num_heads``).
    learn_sigma : bool
        Output ``2 * in_channels`` channels (eps and the learned-range variance value v).
    class_cond : bool
        Add a class embedding; ``num_classes`` defaults to 1000.
    Others
        As in ``create_model``; ``use_fp16`` selects float16 autocast for the torso.

    Returns
    -------
    dict
        ``in_channels``, ``model_channels``, ``out_channels``, ``num_res_blocks``,
        ``attention_resolutions_as_downsample_rates`` (tuple), ``channel_mult`` (tuple),
        ``time_embed_dim`` (4 C), ``num_heads``, ``num_head_channels``, ``num_heads_upsample``
        (resolved), ``conv_resample``, ``dims``, ``num_classes`` (the names of the reference
        ``UNetModel``), plus ``image_size``, ``widths`` (per level), ``dropout``,
        ``use_scale_shift_norm``, ``resblock_updown``, ``use_checkpoint``, ``use_fp16``,
        ``use_new_attention_order``, ``learn_sigma`` and ``class_cond``.

    Raises
    ------
    ValueError
        For a configuration the network cannot be built with; the message names the bad value.
    """
    if isinstance(image_size, (tuple, list)):
        raise ValueError(
            f"ADMUNet is square only: image_size must be one int, got {image_size!r}"
        )
    if not _is_int(image_size) or image_size <= 0:
        raise ValueError(
            f"image_size must be a positive int (the side of a square image), got {image_size!r}"
        )
    if not _is_int(num_channels) or num_channels <= 0:
        raise ValueError(f"num_channels must be a positive int, got {num_channels!r}")
    if not _is_int(num_res_blocks) or num_res_blocks < 1:
        raise ValueError(f"num_res_blocks must be an int >= 1, got {num_res_blocks!r}")
    if not _is_int(in_channels) or in_channels <= 0:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")

    mult = _resolve_channel_mult(channel_mult, image_size)
    widths = []
    for m in mult:
        width = m * num_channels
        if width != int(width):
            raise ValueError(
                f"channel_mult {m} times num_channels {num_channels} = {width} is not an integer width"
            )
        if int(width) % GROUPS:
            raise ValueError(
                f"width {int(width)} (channel_mult {m} x num_channels {num_channels}) is not a "
                f"multiple of {GROUPS}, which GroupNorm({GROUPS}) needs"
            )
        widths.append(int(width))

    levels = len(mult)
    if image_size % 2 ** (levels - 1):
        raise ValueError(
            f"image_size {image_size} is not divisible by 2**{levels - 1} = {2 ** (levels - 1)}, "
            f"which the {levels} levels of channel_mult {mult} need"
        )

    feature_sizes = [image_size // 2**level for level in range(levels)]
    rates = []
    for res in _resolve_attention_resolutions(attention_resolutions):
        if res not in feature_sizes:
            sizes = ", ".join(str(s) for s in feature_sizes)
            raise ValueError(
                f"attention resolution {res} is not a feature-map size of this model ({sizes})"
            )
        rates.append(image_size // res)

    for name, value in (("num_heads", num_heads), ("num_head_channels", num_head_channels),
                        ("num_heads_upsample", num_heads_upsample)):
        if not _is_int(value) or (value <= 0 and value != -1):
            raise ValueError(f"{name} must be a positive int or -1, got {value!r}")
    if num_head_channels == -1 and num_heads == -1:
        raise ValueError("num_heads is -1 and num_head_channels is -1; set one of them")
    if num_heads_upsample == -1:
        num_heads_upsample = num_heads
    for level, width in enumerate(widths):
        if 2**level in rates:
            _heads(width, num_heads, num_head_channels, f"attention at level {level}")
            _heads(width, num_heads_upsample, num_head_channels, f"up-path attention at level {level}")
    _heads(widths[-1], num_heads, num_head_channels, "middle attention")

    if class_cond:
        num_classes = DEFAULT_NUM_CLASSES if num_classes is None else num_classes
        if not _is_int(num_classes) or num_classes <= 0:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    elif num_classes is not None:
        raise ValueError(f"num_classes={num_classes!r} given but class_cond is False")

    return {
        "in_channels": in_channels,
        "model_channels": num_channels,
        "out_channels": in_channels * (2 if learn_sigma else 1),
        "num_res_blocks": num_res_blocks,
        "attention_resolutions_as_downsample_rates": tuple(rates),
        "channel_mult": mult,
        "time_embed_dim": 4 * num_channels,
        "num_heads": num_heads,
        "num_head_channels": num_head_channels,
        "num_heads_upsample": num_heads_upsample,
        "conv_resample": True,
        "dims": 2,
        "num_classes": num_classes,
        "image_size": image_size,
        "widths": tuple(widths),
        "dropout": float(dropout),
        "use_scale_shift_norm": bool(use_scale_shift_norm),
        "resblock_updown": bool(resblock_updown),
        "use_checkpoint": bool(use_checkpoint),
        "use_fp16": bool(use_fp16),
        "use_new_attention_order": bool(use_new_attention_order),
        "learn_sigma": bool(learn_sigma),
        "class_cond": bool(class_cond),
    }


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, max_period: float = 10000.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) DDPM step indices, cosines first.

    emb[b, i] = cos(t_b w_i) and emb[b, half + i] = sin(t_b w_i), with
    w_i = exp(-ln(max_period) i / half), half = dim // 2; a zero column is appended for odd dim.

    Parameters
    ----------
    timesteps : Tensor, shape (B,)
        Step indices, any real or integer dtype; never rounded.
    dim : int
        Feature dimension D.
    dtype : torch.dtype
        Compute dtype (float32 as in the reference, or float64).

    Returns
    -------
    Tensor, shape (B, D), dtype ``dtype``
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=dtype, device=timesteps.device) / half
    )
    args = timesteps.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32 (float64 for float64 inputs), returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(x.dtype)
        return F.group_norm(
            x.to(dtype), self.num_groups, self.weight.to(dtype), self.bias.to(dtype), self.eps
        ).to(x.dtype)


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(GROUPS, channels, eps=GROUPNORM_EPS)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _WithStats:
    """An activation of the fused inference pass with its GroupNorm statistics (a ``GNStats`` from the residual
    kernel that wrote it, or None): the next GroupNorm then skips its statistics pass. :meth:`ADMUNet.forward` wraps
    the torso's first activation when the statistics are kept (``ADMUNet.fused_stats``); a block given a wrapped
    input returns a wrapped output, one given a tensor a tensor."""

    __slots__ = ("t", "stats")

    def __init__(self, t: torch.Tensor, stats=None):
        self.t, self.stats = t, stats


def _plain(x):
    """The tensor of ``x`` (a tensor or a :class:`_WithStats`)."""
    return x.t if isinstance(x, _WithStats) else x


def _fused_ok(flag: bool, h) -> bool:
    """Whether a module whose ``fused_norm`` is ``flag`` runs the fused kernel on ``h``: the Triton kernel has no
    backward, so differentiating passes (DPS, training) take the modules."""
    return flag and not (torch.is_grad_enabled() and _plain(h).requires_grad)


class TimestepSequential(nn.Sequential):
    """``nn.Sequential`` that hands the time embedding to the blocks that take one. ``x`` may be a pair ``(h,
    skip)`` standing for ``torch.cat([h, skip], 1)`` (the decoder's input): a first ResBlock takes it as it is.
    A wrapped input (:class:`_WithStats`) gives a wrapped output; layers other than ResBlocks and attention blocks
    see the tensor."""

    def forward(self, x, emb: torch.Tensor) -> torch.Tensor:
        wrapped = any(isinstance(t, _WithStats) for t in (x if isinstance(x, tuple) else (x,)))
        if isinstance(x, tuple) and not isinstance(self[0], ResBlock):
            x = torch.cat([_plain(t) for t in x], 1)
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x)
            else:
                x = layer(_plain(x))
                x = _WithStats(x) if wrapped else x
        return x


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv (``conv``). (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Downsample(nn.Module):
    """3x3 conv with stride 2 (``op``). (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _downsample_mean(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=2, stride=2)


def _conv1x1_concat(x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv1x1(torch.cat([x1, x2], 1), weight)`` without the concatenation, for channels-last inputs: two GEMMs
    on the (pixels, channels) views into one output, the second accumulating (cuBLAS beta = 1). Channels-last
    (N, C_out, H, W)."""
    (N, C1, H, W), C2 = x1.shape, x2.shape[1]
    w = weight.reshape(weight.shape[0], C1 + C2).to(x1.dtype)  # autocast: the activations' dtype (in-place addmm_
    # is not cast)
    out = torch.mm(x1.permute(0, 2, 3, 1).reshape(-1, C1), w[:, :C1].t())
    out.addmm_(x2.permute(0, 2, 3, 1).reshape(-1, C2), w[:, C1:].t())
    return out.view(N, H, W, -1).permute(0, 3, 1, 2)


class ResBlock(nn.Module):
    """Residual block with time conditioning, optionally resampling by 2.

    a = conv3(R(SiLU(GN(h)))), e = W SiLU(emb) + b, then with scale-shift
    a = GN(a) (1 + e_scale) + e_shift, else a = GN(a + e); out = skip(R(h)) + conv3(SiLU(a)),
    where R is nearest x2 (``up``), 2x2 mean pooling (``down``) or the identity.

    Shapes: x (B, C_in, H, W), emb (B, E) -> (B, C_out, H', W'). ``x`` may be a pair ``(h, skip)`` standing for
    ``torch.cat([h, skip], 1)`` (ADM's decoder): the fused pass reads the two in place.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int,
        use_scale_shift_norm: bool,
        up: bool = False,
        down: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.fused_norm = False  # ADMUNet.set_fused_norm: one fused GroupNorm + scale-shift + SiLU kernel
        self.resample = _upsample_nearest if up else _downsample_mean if down else None
        self.resample_mode = "up" if up else "down" if down else None
        self.in_layers = nn.Sequential(
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels),
        )
        self.out_layers = nn.Sequential(
            _norm(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if out_channels != channels:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)
        else:
            self.skip_connection = nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward_fused(self, x, emb: torch.Tensor) -> torch.Tensor:
        """The inference pass of :meth:`ADMUNet.set_fused_norm`: both convolutions run without their bias, which
        the fused kernels add instead (the first's before the second normalisation's statistics, the second's with
        the skip's in the residual add, which also resamples an identity skip). The first normalisation resamples
        in its write, and reads a pair ``(h, skip)`` in place of their concatenation, whose 1x1 skip convolution
        then runs as two GEMMs into one output. Same function as the modules. Wrapped inputs (:class:`_WithStats`)
        give their statistics to the first normalisation, and the output is wrapped with its own."""
        parts = x if isinstance(x, tuple) else (x,)
        keep = any(isinstance(t, _WithStats) for t in parts)
        x, st = _plain(parts[0]), getattr(parts[0], "stats", None)
        x2, st2 = None, None
        if len(parts) == 2:
            x2, st2 = _plain(parts[1]), getattr(parts[1], "stats", None)
            if (self.resample is not None or isinstance(self.skip_connection, nn.Identity)
                    or not (is_channels_last(x) and is_channels_last(x2))):
                # the identity skip and resampling need the concatenation (its statistics are not kept)
                x, x2, st, st2 = torch.cat([x, x2], 1), None, None, None
        norm, _, conv = self.in_layers
        h = groupnorm_silu(x, norm.weight, norm.bias, groups=norm.num_groups, eps=norm.eps, concat=x2,
                           resample=self.resample_mode, stats=st, concat_stats=st2)
        h = F.conv2d(h, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        e = self.emb_layers(emb).float()
        out_norm, conv2 = self.out_layers[0], self.out_layers[-1]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            a = groupnorm_silu(h, out_norm.weight, out_norm.bias, groups=out_norm.num_groups, eps=out_norm.eps,
                               scale=scale, shift=shift, pre_bias=conv.bias)
        else:
            a = groupnorm_silu(h, out_norm.weight, out_norm.bias, groups=out_norm.num_groups, eps=out_norm.eps,
                               pre_bias=conv.bias.float()[None] + e)
        y = F.conv2d(a, conv2.weight, None, conv2.stride, conv2.padding, conv2.dilation, conv2.groups)
        if isinstance(self.skip_connection, nn.Identity):
            out = residual_add(y, x, conv2.bias, resample=self.resample_mode, stats=keep)
        else:
            skip = self.skip_connection
            if x2 is not None:
                s = _conv1x1_concat(x, x2, skip.weight)
            else:
                s = F.conv2d(self.resample(x) if self.resample is not None else x, skip.weight, None)
            out = residual_add(y, s, conv2.bias.float() + skip.bias.float(), stats=keep)
        return _WithStats(*out) if keep else out

    def _forward(self, x, emb: torch.Tensor) -> torch.Tensor:
        parts = x if isinstance(x, tuple) else (x,)
        if not self.training and all(_fused_ok(self.fused_norm, t) for t in parts):  # training: the modules (dropout)
            return self._forward_fused(x, emb)
        keep = any(isinstance(t, _WithStats) for t in parts)
        x = torch.cat([_plain(t) for t in parts], 1) if len(parts) > 1 else _plain(x)
        norm, act, conv = self.in_layers
        h = act(norm(x))
        if self.resample is not None:
            h = self.resample(h)
            x = self.resample(x)
        h = conv(h)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = out_rest(out_norm(h) * (1 + scale) + shift)
        else:
            h = out_rest(out_norm(h + e))
        out = self.skip_connection(x) + h
        return _WithStats(out) if keep else out


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection.

    With T = H W tokens and d = C / heads: [q, k, v] = W_qkv GN(x) + b (a 1x1 ``qkv`` conv, C -> 3C),
    a_h = softmax(q_h k_h^T / sqrt(d)) v_h, out = x + W_o concat_h(a_h) + b_o (``proj_out``).
    Legacy order: the 3C channels are grouped by head, [q; k; v] per head; new order: q, k, v
    first, each split by head.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, num_heads: int, new_order: bool = False,
                 use_checkpoint: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.new_order = new_order
        self.use_checkpoint = use_checkpoint
        self.fused_norm = False  # ADMUNet.set_fused_norm: the GroupNorm as the fused kernel (no SiLU)
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, st, x = isinstance(x, _WithStats), getattr(x, "stats", None), _plain(x)
        b, c, height, width = x.shape
        heads, d = self.num_heads, c // self.num_heads
        # Token-major (B, T, C) is a free view of a channels_last activation, and the 1x1 convs
        # become plain matmuls on it.
        fused = _fused_ok(self.fused_norm, x)
        if fused:
            normed = groupnorm_silu(x, self.norm.weight, self.norm.bias, groups=self.norm.num_groups,
                                    eps=self.norm.eps, silu=False, stats=st)
        else:
            normed = self.norm(x)
        tokens = normed.flatten(2).transpose(1, 2)
        qkv = F.linear(tokens, self.qkv.weight[:, :, 0], self.qkv.bias)
        if self.new_order:
            qkv = qkv.unflatten(-1, (3, heads, d))
            q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        else:
            qkv = qkv.unflatten(-1, (heads, 3, d))
            q, k, v = (qkv[:, :, :, j].transpose(1, 2) for j in range(3))
        a = F.scaled_dot_product_attention(q, k, v)
        a = a.transpose(1, 2).reshape(b, height * width, c)
        h = F.linear(a, self.proj_out.weight[:, :, 0], self.proj_out.bias).transpose(1, 2).reshape(b, c, height, width)
        if fused and keep and not self.training:  # the add in the residual kernel, which also sums the statistics
            return _WithStats(*residual_add(x, h, stats=True))  # (the output in x's layout)
        out = x + h
        return _WithStats(out) if keep else out


# ----------------------------------------------------------------------------------------------
# The UNet
# ----------------------------------------------------------------------------------------------


class ADMUNet(nn.Module):
    """ADM UNet eps_theta(x_t, t[, y]) with the module layout of the guided-diffusion checkpoints.

    Parameters
    ----------
    image_size, num_channels, num_res_blocks, channel_mult, learn_sigma, class_cond,
    use_checkpoint, attention_resolutions, num_heads, num_head_channels, num_heads_upsample,
    use_scale_shift_norm, dropout, resblock_updown, use_fp16, use_new_attention_order
        guided-diffusion ``create_model`` arguments, resolved by :func:`adm_config`.
        ``use_checkpoint`` recomputes blocks in the backward pass when training;
        ``use_fp16`` makes float16 the default ``autocast_dtype`` of :meth:`forward` on CUDA (the
        parameters stay in their dtype; on the CPU the default stays float32, ``FP16_DEVICES``).
    in_channels : int
        Image channels (3).
    num_classes : int, optional
        Number of classes for ``class_cond`` (default 1000).

    Attributes
    ----------
    config : dict
        The resolved arguments (:func:`adm_config`).

    Examples
    --------
    >>> model = ADMUNet(**ADM_PRESETS["adm-ffhq256"])          # doctest: +SKIP
    >>> model.load_state_dict(torch.load("ffhq_10m.pt", weights_only=True))  # doctest: +SKIP
    """

    def __init__(
        self,
        image_size,
        num_channels,
        num_res_blocks,
        channel_mult="",
        learn_sigma=False,
        class_cond=False,
        use_checkpoint=False,
        attention_resolutions="16",
        num_heads=1,
        num_head_channels=-1,
        num_heads_upsample=-1,
        use_scale_shift_norm=False,
        dropout=0.0,
        resblock_updown=False,
        use_fp16=False,
        use_new_attention_order=False,
        in_channels=3,
        num_classes=None,
    ):
        super().__init__()
        cfg = adm_config(
            image_size=image_size, num_channels=num_channels, num_res_blocks=num_res_blocks,
            channel_mult=channel_mult, learn_sigma=learn_sigma, class_cond=class_cond,
            use_checkpoint=use_checkpoint, attention_resolutions=attention_resolutions,
            num_heads=num_heads, num_head_channels=num_head_channels,
            num_heads_upsample=num_heads_upsample, use_scale_shift_norm=use_scale_shift_norm,
            dropout=dropout, resblock_updown=resblock_updown, use_fp16=use_fp16,
            use_new_attention_order=use_new_attention_order, in_channels=in_channels,
            num_classes=num_classes,
        )
        self.config = cfg
        self.image_size = cfg["image_size"]
        self.in_channels = cfg["in_channels"]
        self.out_channels = cfg["out_channels"]
        self.model_channels = cfg["model_channels"]
        self.num_classes = cfg["num_classes"]
        self.num_levels = len(cfg["widths"])
        self.default_autocast_dtype = torch.float16 if cfg["use_fp16"] else None
        self.fused_norm = False  # set_fused_norm: the output head's GroupNorm + SiLU as the fused kernel
        self.fused_stats = False  # to_inference: GroupNorm statistics from the residual kernels (_WithStats)
        self.fused_conv_in = False  # to_inference: the input convolution, its bias and statistics in one kernel
        self.memory_format = torch.contiguous_format  # to_inference: the torso's activation layout

        mc, emb_dim, widths = cfg["model_channels"], cfg["time_embed_dim"], cfg["widths"]
        rates = set(cfg["attention_resolutions_as_downsample_rates"])
        nhc, ckpt = cfg["num_head_channels"], cfg["use_checkpoint"]

        def res_block(cin, cout, **updown):
            return ResBlock(cin, emb_dim, cfg["dropout"], cout, cfg["use_scale_shift_norm"],
                            use_checkpoint=ckpt, **updown)

        def attention(ch, heads):
            return AttentionBlock(ch, _heads(ch, heads, nhc, "attention"),
                                  cfg["use_new_attention_order"], ckpt)

        self.time_embed = nn.Sequential(
            nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if self.num_classes is not None:
            self.label_emb = nn.Embedding(self.num_classes, emb_dim)

        ch = widths[0]
        self.input_blocks = nn.ModuleList(
            [TimestepSequential(nn.Conv2d(cfg["in_channels"], ch, 3, padding=1))]
        )
        skip_widths = [ch]
        rate = 1
        for level, width in enumerate(widths):
            for _ in range(cfg["num_res_blocks"]):
                layers = [res_block(ch, width)]
                ch = width
                if rate in rates:
                    layers.append(attention(ch, cfg["num_heads"]))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_widths.append(ch)
            if level != self.num_levels - 1:
                down = res_block(ch, ch, down=True) if cfg["resblock_updown"] else Downsample(ch)
                self.input_blocks.append(TimestepSequential(down))
                skip_widths.append(ch)
                rate *= 2

        self.middle_block = TimestepSequential(
            res_block(ch, ch), attention(ch, cfg["num_heads"]), res_block(ch, ch)
        )

        self.output_blocks = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for i in range(cfg["num_res_blocks"] + 1):
                layers = [res_block(ch + skip_widths.pop(), width)]
                ch = width
                if rate in rates:
                    layers.append(attention(ch, cfg["num_heads_upsample"]))
                if level and i == cfg["num_res_blocks"]:
                    layers.append(
                        res_block(ch, ch, up=True) if cfg["resblock_updown"] else Upsample(ch)
                    )
                    rate //= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(
            _norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, cfg["out_channels"], 3, padding=1))
        )

    def _check_inputs(self, x, timesteps, y):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        factor = 2 ** (self.num_levels - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"x's height and width must be multiples of {factor}, got {tuple(x.shape[2:])}"
            )
        batch = x.shape[0]
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.dim() == 0 or timesteps.numel() == 1:
            timesteps = timesteps.reshape(1).expand(batch)
        elif timesteps.shape != (batch,):
            raise ValueError(
                f"timesteps must be a scalar or have shape ({batch},), got {tuple(timesteps.shape)}"
            )
        if self.num_classes is None and y is not None:
            raise ValueError("y was given but the model is not class-conditional")
        if self.num_classes is not None:
            if y is None:
                raise ValueError("the model is class-conditional: pass class labels y of shape (B,)")
            if y.shape != (batch,):
                raise ValueError(f"y must have shape ({batch},), got {tuple(y.shape)}")
        return timesteps

    def _conv_in_ok(self, x) -> bool:
        """Whether the input convolution runs as :func:`afdps.kernels.conv_in.conv_in`: a plain 3x3 convolution
        (stride 1, padding 1, no dilation or groups, zero padding), alone in its block, in a pass that neither
        differentiates its parameters (the kernel has no backward) nor runs under autocast (whose dtype the
        torso's first activation must have)."""
        block = self.input_blocks[0]
        first = block[0]
        return (len(block) == 1 and isinstance(first, nn.Conv2d)
                and (first.kernel_size, first.stride, first.padding, first.dilation, first.groups,
                     first.padding_mode) == ((3, 3), (1, 1), (1, 1), (1, 1), 1, "zeros")
                and not (torch.is_grad_enabled() and any(p.requires_grad for p in first.parameters()))
                and not torch.is_autocast_enabled(x.device.type))

    def set_fused_norm(self, enabled: bool = True) -> "ADMUNet":
        """Run every GroupNorm (+ scale-shift) (+ SiLU) of the network, the ResBlocks', the attention blocks' and
        the output head's, as the fused kernel (:mod:`afdps.kernels.groupnorm`; the Triton kernels on CUDA, the
        reference elsewhere) in passes that do not need gradients. Statistics in float32; the output keeps the
        activations' dtype and layout (the head's is the parameter dtype), so a bfloat16 or channels-last
        network stays so. Returns the model."""
        for m in self.modules():
            if isinstance(m, (ResBlock, AttentionBlock, ADMUNet)):
                m.fused_norm = bool(enabled)
        return self

    @property
    def torso_dtype(self) -> torch.dtype:
        """The dtype of the input, middle and output blocks' parameters (:meth:`to_inference` may lower it)."""
        return self.input_blocks[0][0].weight.dtype

    def to_inference(self, dtype: torch.dtype = torch.bfloat16, memory_format=torch.channels_last,
                     fused_norm: bool = True, fused_stats: bool = True, fused_conv_in: bool = True) -> "ADMUNet":
        """The inference path: the torso's parameters stored in ``dtype`` (no autocast, no per-call weight
        casts), activations in ``memory_format`` throughout (the input is converted once), and every
        normalisation as the fused kernel (:meth:`set_fused_norm`). The time embedding and the output head keep
        the parameter dtype, as with autocast. ``dtype=torch.float32`` with a float32 model changes only the
        layout and the kernels. ``fused_stats``: the residual kernel that writes a GroupNorm's input also sums its
        statistics, and the GroupNorm skips its own statistics pass; ``fused_conv_in`` (with ``fused_stats``): the
        input convolution, its bias and its output's statistics in one kernel (:mod:`afdps.kernels.conv_in`; the
        cast of the input folded in). ``bench_adm`` times each. Returns the model (in eval mode). With the
        statistics carried, forward hooks on the blocks see their wrapper (``_WithStats``, the tensor and its
        statistics) instead of a tensor, and with ``fused_conv_in`` hooks on ``input_blocks[0]`` do not run; pass
        ``fused_stats=False`` to hook the blocks.

        Accuracy: the same rule as bfloat16 autocast (``tests/test_adm.py``); speed: ``bench/bench_adm.py``.
        """
        if dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be torch.bfloat16, torch.float16, torch.float32 or torch.float64, got {dtype!r}")
        if memory_format not in (torch.channels_last, torch.contiguous_format):
            raise ValueError(f"memory_format must be torch.channels_last or torch.contiguous_format, "
                             f"got {memory_format!r}")
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            part.to(dtype=dtype)
        self.to(memory_format=memory_format)
        self.memory_format = memory_format
        self.fused_stats = bool(fused_stats)
        self.fused_conv_in = bool(fused_conv_in)
        return self.set_fused_norm(fused_norm).eval()

    def forward(
        self,
        x: torch.Tensor,
        timesteps,
        y: torch.Tensor | None = None,
        *,
        autocast_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Predict eps (and the variance value v when ``learn_sigma``).

        Parameters
        ----------
        x : Tensor, shape (B, C_in, H, W)
            Noisy images x_t (in [-1, 1] scale for the public checkpoints). H and W must be
            multiples of 2**(levels - 1); the checkpoints were trained at ``image_size``.
        timesteps : Tensor or number, shape (B,) or ()
            DDPM step indices t in [0, 999], float or integer; a scalar is broadcast to B.
            Fractional values are used as they are, never rounded.
        y : LongTensor, shape (B,), optional
            Class labels, required exactly when the model is class-conditional.
        autocast_dtype : torch.dtype, optional
            Run the torso (input, middle and output blocks) under ``torch.autocast`` with this
            dtype (e.g. ``torch.bfloat16``); default float16 on CUDA when ``use_fp16`` (on the CPU
            none: ``FP16_DEVICES``) else none, and ``torch.float32`` switches it off. An enclosing
            ``torch.autocast`` works the same way. The time embedding and the output head always run in
            the parameter dtype.

        Returns
        -------
        Tensor, shape (B, C_out, H, W), dtype of x
            C_out = C_in (eps) or 2 C_in (eps, then v) with ``learn_sigma``.
        """
        timesteps = self._check_inputs(x, timesteps, y)
        dtype = self.out[2].weight.dtype
        torso_dtype = self.torso_dtype
        device_type = x.device.type
        if torso_dtype != dtype:  # to_inference stored the torso in reduced precision: no autocast
            if autocast_dtype not in (None, torso_dtype):
                raise ValueError(f"the torso's parameters are {torso_dtype} (to_inference); autocast_dtype "
                                 f"{autocast_dtype} cannot change that: leave it None")
            autocast_dtype = None
        elif autocast_dtype is None and device_type in FP16_DEVICES:  # use_fp16: a GPU speed option
            autocast_dtype = self.default_autocast_dtype
        with torch.autocast(device_type, enabled=False):
            t_emb = timestep_embedding(timesteps, self.model_channels, dtype=_compute_dtype(dtype))
            emb = self.time_embed(t_emb.to(dtype))
            if self.num_classes is not None:
                emb = emb + self.label_emb(y)

        if autocast_dtype in (torch.float32, torch.float64):
            autocast_dtype = None
        torso = (torch.autocast(device_type, dtype=autocast_dtype)
                 if autocast_dtype is not None else nullcontext())
        with torso:
            blocks, skips = list(self.input_blocks), []
            keep = self.fused_stats and _fused_ok(self.fused_norm, x) and not self.training
            if keep and self.fused_conv_in and self._conv_in_ok(x):
                # the input's cast, the convolution, its bias and its statistics in one pass
                first = blocks.pop(0)[0]
                h = _WithStats(*conv_in(x, first.weight, first.bias, dtype=torso_dtype,
                                        memory_format=self.memory_format, stats=True))
                skips.append(h)
            else:
                h = x.to(torso_dtype).contiguous(memory_format=self.memory_format)
                h = _WithStats(h) if keep else h  # the blocks pass the statistics of what they write to the next norm
            emb = emb.to(torso_dtype)
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            h = self.middle_block(h, emb)
            for block in self.output_blocks:
                skip = skips.pop()
                # the fused pass reads the pair in place of the concatenation (ResBlock._forward_fused)
                h = block((h, skip) if self.fused_norm and not self.training else torch.cat([h, skip], dim=1), emb)

        with torch.autocast(device_type, enabled=False):
            norm, act, conv = self.out
            st, h = getattr(h, "stats", None), _plain(h)
            if _fused_ok(self.fused_norm, h):
                a = groupnorm_silu(h, norm.weight, norm.bias, groups=norm.num_groups, eps=norm.eps, out_dtype=dtype,
                                   stats=st)
                # the output contiguous (the modules' path keeps the convolution's layout), the bias added there
                # in the parameter dtype, then cast to x's
                out = F.conv2d(a, conv.weight, None, conv.stride, conv.padding).contiguous()
                return out.add_(conv.bias.reshape(1, -1, 1, 1)).to(x.dtype)
            a = act(norm(h.to(dtype)))
            return conv(a).to(x.dtype)
