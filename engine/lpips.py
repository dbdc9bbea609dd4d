"""LPIPS (Zhang et al., 2018), version 0.1 with the AlexNet backbone, from weights the user gives.

afdps downloads nothing, so there are no bundled LPIPS weights: pass the state dict of an ``lpips.LPIPS(net=
"alex")`` model saved with ``torch.save(model.state_dict(), path)`` (the ``lpips`` package's own module
names: ``scaling_layer.shift/scale``, the backbone ``net.slice1.0`` .. ``net.slice5.10`` and the linear heads
``lin0.model.1`` .. ``lin4.model.1``). The distance between images ``x, y`` on [-1, 1]:

    d(x, y) = sum_l mean_hw( w_l . (n(f_l(x)) - n(f_l(y)))^2 ),

with ``f_l`` the five ReLU outputs of AlexNet's features applied to ``(x - shift) / scale``, ``n`` the unit
normalisation over channels (``f / (|f| + 1e-10)``) and ``w_l`` the non-negative 1x1 heads. Grayscale images
are repeated to three channels, as the package's users do.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["LPIPS", "load_lpips", "MIN_SIZE"]

# AlexNet's features as torchvision numbers them (the lpips package slices them at the ReLUs)
_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))
CHANNELS = (64, 192, 384, 256, 256)
# the smallest square image whose five feature maps are non-empty (after two 3x3 stride-2 poolings)
MIN_SIZE = 31


def _alexnet_features() -> list[nn.Module]:
    return [nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU()]


class _Slice(nn.Sequential):
    """A run of AlexNet's layers keeping torchvision's indices as module names (``slice2.3``)."""

    def __init__(self, layers, start):
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_module(str(start + i), layer)


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        feats = _alexnet_features()
        for k, (a, b) in enumerate(_SLICES, 1):
            setattr(self, f"slice{k}", _Slice(feats[a:b], a))

    def forward(self, x):
        out = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            out.append(x)
        return out


class _Head(nn.Module):
    def __init__(self, chn):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(chn, 1, 1, bias=False))


class _Scaling(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))


class LPIPS(nn.Module):
    """The LPIPS network (AlexNet, v0.1) with the ``lpips`` package's module names; random weights until a
    state dict is loaded (:func:`load_lpips`). ``forward(x, y) -> (B,)`` distances, images ``(B, C, H, W)``
    on [-1, 1], ``C`` = 1 or 3, at least :data:`MIN_SIZE` pixels a side."""

    def __init__(self):
        super().__init__()
        self.scaling_layer = _Scaling()
        self.net = _Backbone()
        for k, chn in enumerate(CHANNELS):
            setattr(self, f"lin{k}", _Head(chn))
        self.eval()

    def _features(self, x):
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"LPIPS takes images (B, 1 or 3, H, W), got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS (AlexNet) needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, got "
                             f"{x.shape[-2]}x{x.shape[-1]}")
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        s = self.scaling_layer
        feats = self.net((x - s.shift) / s.scale)
        return [f / (f.square().sum(1, keepdim=True).sqrt() + 1e-10) for f in feats]

    @torch.no_grad()
    def forward(self, x, y):
        w = next(self.parameters())
        fx, fy = self._features(x.to(w)), self._features(y.to(w))
        total = 0.0
        for k, (a, b) in enumerate(zip(fx, fy)):
            total = total + getattr(self, f"lin{k}").model((a - b).square()).mean(dim=(2, 3))
        return total.reshape(-1)


def load_lpips(path, device="cpu") -> LPIPS:
    """An :class:`LPIPS` network from a state dict file of the ``lpips`` package's format (module docstring);
    every key must be present with its shape (a clear error names what is missing or wrong)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no LPIPS weights at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise ValueError(f"{str(path)!r} is not a torch state dict ({exc})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict")
    model = LPIPS()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        only_heads = all(k.startswith("lin") for k in state)
        hint = (" (this looks like the package's lin-only weights file, e.g. weights/v0.1/alex.pth: save the whole "
                "lpips.LPIPS(net='alex').state_dict(), which holds the AlexNet backbone too)" if only_heads else "")
        raise ValueError(f"{str(path)!r} lacks {len(missing)} LPIPS key(s), e.g. {missing[:3]}{hint}")
    bad = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        raise ValueError(f"{str(path)!r}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, expected "
                         f"{tuple(expected[bad[0]].shape)}")
    model.load_state_dict({k: state[k] for k in expected})
    return model.to(device)
