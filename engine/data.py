"""Bundled real photos (scikit-image's sample images, on disk with the package; nothing is downloaded).

Images are returned as float64 ``(3, H, W)`` tensors on the [-1, 1] scale.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["DEMO_PHOTO", "PRIOR_PHOTOS", "load_photo", "prior_photos", "to_unit", "from_unit"]

DEMO_PHOTO = "astronaut"
# Natural photos other than the demo photo, used to fit the stationary prior.
PRIOR_PHOTOS = ("chelsea", "coffee", "rocket")


def to_unit(img_uint8: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float64 on [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img_uint8[..., :3].transpose(2, 0, 1))).double() / 127.5 - 1.0


def from_unit(x: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` on [-1, 1] -> ``(H, W, 3)`` uint8 (clipped)."""
    x = ((x.detach().double().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.permute(1, 2, 0).numpy().astype(np.uint8)


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    if name not in {DEMO_PHOTO, *PRIOR_PHOTOS}:
        raise ValueError(f"unknown bundled photo {name!r}; available: {', '.join((DEMO_PHOTO,) + PRIOR_PHOTOS)}")
    return getattr(skimage.data, name)()


def load_photo(name: str = DEMO_PHOTO, size: int | None = 256) -> torch.Tensor:
    """A bundled photo, resized (Lanczos) so that its shorter side is ``size`` and centre-cropped to
    ``size x size`` (``None``: as stored)."""
    img = _skimage(name)
    if size is not None:
        from PIL import Image

        h, w = img.shape[:2]
        scale = size / min(h, w)
        pil = Image.fromarray(img[..., :3]).resize((max(size, round(w * scale)), max(size, round(h * scale))),
                                                    Image.Resampling.LANCZOS)
        img = np.asarray(pil)
        h, w = img.shape[:2]
        r, c = (h - size) // 2, (w - size) // 2
        img = img[r:r + size, c:c + size]
    return to_unit(img)


def prior_photos() -> list[torch.Tensor]:
    """The photos the demo's stationary prior is fitted on, at their stored resolution."""
    return [load_photo(n, None) for n in PRIOR_PHOTOS]
