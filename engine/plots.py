"""Pictures of a run: the ESS trace."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .io import save_png

__all__ = ["ess_plot"]


def ess_plot(ess: np.ndarray, resampled: np.ndarray, path: Path, width: int = 640, height: int = 240) -> None:
    """Normalised ESS per step (line) with resampling events (red ticks), as a PNG."""
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    left, right, top, bottom = 40, width - 10, 10, height - 25
    d.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    for v in (0.0, 0.5, 1.0):
        yy = bottom - v * (bottom - top)
        d.line([left, yy, right, yy], fill=(225, 225, 225))
        d.text((5, yy - 6), f"{v:.1f}", fill=(0, 0, 0))
    K = len(ess)
    xs = [left + (right - left) * k / max(K - 1, 1) for k in range(K)]
    ys = [bottom - float(np.clip(e, 0, 1)) * (bottom - top) for e in ess]
    for k in range(K):
        if resampled[k]:
            d.line([xs[k], bottom, xs[k], bottom - 8], fill=(220, 30, 30))
    d.line(list(zip(xs, ys)), fill=(30, 80, 200), width=2)
    d.text((left, bottom + 8), f"step (1..{K}); ESS/N; red: resampled", fill=(0, 0, 0))
    save_png(im, path)
