"""Medians of the motion-blur kernel statistics against the DPS benchmark's, and a picture of kernels.

    python -m bench.motion_kernel_stats --num 300 --size 61 --intensity 0.5

Prints a markdown table of the medians of ``kernel_statistics`` over kernels of seeds
``--seed-start`` .. ``--seed-start + --num - 1`` against the medians the issue author measured on 300
kernels of the benchmark's generator (``motionblur``'s ``Kernel(size=(61, 61), intensity=0.5)``; the
targets only apply at that size and intensity), and writes a 4x4 grid of the kernels of seeds 0..15,
each scaled to its own maximum, upscaled x3 nearest-neighbour, with 4 px gaps (``--png``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from afdps.cli._common import positive_int

TARGETS = {"rms_radius": 11.0, "support": 137, "max": 0.019, "entropy": 4.54, "axis_ratio": 0.12}
UNITS = {"rms_radius": "px", "support": "pixels", "max": "", "entropy": "nats", "axis_ratio": ""}
DEFAULT_PNG = Path(__file__).resolve().parent.parent / "docs" / "motion_kernels.png"


def kernel_grid(kernels, scale: int = 3, gap: int = 4, rows: int = 4, cols: int = 4) -> Image.Image:
    """Kernels as tiles of a grayscale grid: each scaled to its own maximum, enlarged ``scale`` times
    (nearest neighbour), ``gap`` mid-gray pixels between tiles."""
    size = kernels[0].shape[-1] * scale
    grid = Image.new("L", (cols * size + (cols - 1) * gap, rows * size + (rows - 1) * gap), 128)
    for i, k in enumerate(kernels[: rows * cols]):
        k = np.asarray(k, dtype=np.float64)
        tile = Image.fromarray(np.round(255 * k / k.max()).astype(np.uint8), mode="L")
        tile = tile.resize((size, size), resample=Image.Resampling.NEAREST)
        r, c = divmod(i, cols)
        grid.paste(tile, (c * (size + gap), r * (size + gap)))
    return grid


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num", type=positive_int, default=300, help="kernels to summarise")
    p.add_argument("--size", type=positive_int, default=61)
    p.add_argument("--intensity", type=float, default=0.5)
    p.add_argument("--seed-start", type=int, default=0, help="first seed (seeds are consecutive)")
    p.add_argument("--png", default=str(DEFAULT_PNG), help="where to write the 4x4 grid ('' for none)")
    args = p.parse_args(argv)
    from afdps.engine.motion import kernel_statistics, motion_kernel

    t0 = time.perf_counter()
    seeds = range(args.seed_start, args.seed_start + args.num)
    stats = [kernel_statistics(motion_kernel(args.size, args.intensity, seed=s)) for s in seeds]
    elapsed = time.perf_counter() - t0

    note = "" if (args.size, args.intensity) == (61, 0.5) else " (targets are for 61x61, intensity 0.5)"
    per_kernel = 1e3 * elapsed / max(args.num, 1)
    print(f"Medians over {args.num} kernels, seeds {seeds.start}..{seeds.stop - 1}, "
          f"{args.size}x{args.size}, intensity {args.intensity}{note}; "
          f"{elapsed:.2f} s ({per_kernel:.2f} ms/kernel)\n")
    print("| statistic | measured median | benchmark median | difference |")
    print("| --- | ---: | ---: | ---: |")
    for key, target in TARGETS.items():
        med = float(np.median([st[key] for st in stats]))
        unit = f" {UNITS[key]}" if UNITS[key] else ""
        print(f"| {key} | {med:.4g}{unit} | {target}{unit} | {100 * (med / target - 1):+.1f}% |")

    if args.png:
        kernels = [motion_kernel(args.size, args.intensity, seed=s).numpy() for s in range(16)]
        out = Path(args.png)
        out.parent.mkdir(parents=True, exist_ok=True)
        kernel_grid(kernels).save(out)
        print(f"\nwrote {out} (seeds 0..15)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
