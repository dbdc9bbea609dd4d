"""Seeded random motion-blur kernels with the distribution of the DPS benchmark's kernels.

The DPS motion-deblurring benchmark draws its kernels with LeviBorodenko's ``motionblur`` package,
``Kernel(size=(61, 61), intensity=0.5)``. :func:`motion_kernel` is an independent implementation of the
same generative recipe (written from a description of it, not from its code), driven by one
``numpy.random.default_rng(seed)`` so that a seed always gives the same kernel.
:func:`kernel_statistics` gives the shape summaries used to check the two distributions agree
(``bench/motion_kernel_stats.py``, ``docs/motion_kernels.md``).

Only numpy, torch and PIL are imported.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from .validation import check_seed

__all__ = ["motion_kernel", "kernel_statistics"]

# Steps are drawn in blocks of this many (the draws, and so the kernel of a seed, depend on it).
_STEP_BLOCK = 64


def _check_args(size, intensity) -> tuple[int, float]:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 3 or size % 2 == 0:
        raise ValueError(f"motion kernel size must be an odd integer >= 3, got {size!r}.")
    if isinstance(intensity, bool) or not isinstance(intensity, numbers.Real) or not 0 <= intensity <= 1:
        raise ValueError(f"motion kernel intensity must be in [0, 1], got {intensity!r}.")
    return int(size), float(intensity)


def _step_lengths(rng: np.random.Generator, total: float, scale: float) -> np.ndarray:
    """Beta(1, 30) * scale step lengths, drawn until they reach ``total``; the last one is trimmed so
    that they sum to ``total`` exactly. There is always at least one step (of length 0 if total is 0)."""
    steps = np.empty(0)
    while True:
        block = rng.beta(1.0, 30.0, size=_STEP_BLOCK) * scale
        before = steps.sum() if steps.size else 0.0
        reach = before + np.cumsum(block)
        hit = np.flatnonzero(reach >= total)
        if hit.size:
            n = int(hit[0]) + 1
            block = block[:n].copy()
            block[-1] = max(total - before - block[:-1].sum(), 0.0)
            return np.concatenate([steps, block])
        steps = np.concatenate([steps, block])


def _path(rng: np.random.Generator, diagonal: float, intensity: float) -> np.ndarray:
    """The motion path, as complex vertices centred on their mean (centre of mass), not yet rotated."""
    max_length = 0.75 * diagonal * (rng.uniform(0.0, 1.0) + rng.uniform(0.0, intensity**2))
    steps = _step_lengths(rng, max_length, (1.0 - intensity + 0.1) * diagonal)
    n = steps.size

    max_angle = rng.uniform(0.0, intensity * math.pi)
    flip_prob = rng.beta(2.0, 20.0)
    angles = np.empty(n)
    angles[0] = rng.uniform(-max_angle, max_angle)
    if n > 1:
        magnitudes = rng.triangular(0.0, intensity * max_angle, max_angle + 0.1, size=n - 1)
        flips = rng.uniform(0.0, 1.0, size=n - 1) < flip_prob
        # Each angle takes the previous angle's sign, flipped with probability flip_prob. The sign of
        # an angle of exactly 0 (the first one when max_angle is 0, i.e. intensity 0) is 0, so such a
        # path is straight.
        signs = np.sign(angles[0]) * np.cumprod(np.where(flips, -1.0, 1.0))
        angles[1:] = signs * magnitudes

    vertices = np.concatenate([[0.0 + 0.0j], np.cumsum(steps * np.exp(1j * angles))])
    return vertices - vertices.mean()


def motion_kernel(size: int = 61, intensity: float = 0.5, seed: int | None = 0) -> torch.Tensor:
    """A random motion-blur kernel, drawn like the DPS benchmark's kernels.

    The generator follows the recipe of the ``motionblur`` package (LeviBorodenko) that the DPS
    benchmark uses as ``Kernel(size=(61, 61), intensity=0.5)``, and reproduces the distribution of its
    kernels: at 61x61 and intensity 0.5 the medians of the statistics of :func:`kernel_statistics`
    match those measured on 300 kernels of the real package (rms radius about 11.0 px, support 137
    pixels, maximum 0.019, entropy 4.54 nats, axis ratio 0.12) within 5% (within 3% over 18000
    kernels; a median over only 300 kernels scatters by about 5% from one seed set to another). See
    ``tests/test_motion.py`` and ``docs/motion_kernels.md``.

    With I = ``intensity``, all draws from ``numpy.random.default_rng(seed)``:

    1. The path is drawn on a canvas twice the kernel size (122x122 for size 61); D is the canvas
       diagonal.
    2. The maximum path length is L = 0.75 * D * (U(0, 1) + U(0, I^2)).
    3. Step lengths are drawn as Beta(1, 30) * (1 - I + 0.1) * D until they sum to L; the last step is
       trimmed so that the total is exactly L.
    4. A maximum angle A ~ U(0, I*pi) and a sign-flip probability p ~ Beta(2, 20) are drawn. The first
       angle is U(-A, A); each later angle has magnitude Triangular(left=0, mode=I*A, right=A + 0.1)
       and the previous angle's sign, flipped with probability p (an angle of exactly 0 has sign 0, so
       at I = 0 the path is a straight line).
    5. The increments step * exp(i*angle) are summed cumulatively into the path (starting at 0), which
       is centred on the mean of its vertices (its centre of mass), rotated by U(0, pi) and moved to
       the canvas centre (canvas size / 2: PIL truncates drawing coordinates to pixel indices, so
       this puts the centre of mass on the kernel's centre pixel after downsampling).
    6. The path is drawn as a white polyline on a black grayscale ("L") canvas with PIL's
       ``ImageDraw.line``, of width D/150, and blurred with ``ImageFilter.GaussianBlur`` of radius
       0.01*D (PIL's radius is the Gaussian's standard deviation). Both are truncated to whole
       pixels: width int(D/150), at least 1 (PIL draws nothing at width 0, which sizes up to 53
       would get), and radius int(0.01*D); for size 61 both are 1, and sizes up to 35 get no blur.
       The truncated radius is the one that matches the benchmark: with the exact 0.01*D = 1.73 the
       kernels come out about 1.5 times too wide (median support about 200 pixels, not 137).
    7. The canvas is downsampled to the kernel size with ``Image.resize`` and
       ``Image.Resampling.LANCZOS`` (PIL clips the filter's overshoot to 0..255, so no value is
       negative) and normalised to sum 1 in float64.

    Parameters
    ----------
    size : int, default 61
        Side of the square kernel, an odd integer >= 3 (small sizes such as 5, 7, 9 work).
    intensity : float, default 0.5
        Blur intensity in [0, 1]: longer, more curved paths for larger values; 0 gives a straight
        streak.
    seed : int or None, default 0
        Seed of ``numpy.random.default_rng``; None draws fresh entropy.

    Returns
    -------
    torch.Tensor
        A float64 tensor of shape (size, size), non-negative, summing to 1.

    Raises
    ------
    ValueError
        If ``size`` is not an odd integer >= 3 or ``intensity`` is not in [0, 1].
    """
    size, intensity = _check_args(size, intensity)
    rng = np.random.default_rng(check_seed(seed))
    canvas = 2 * size
    diagonal = math.hypot(canvas, canvas)

    path = _path(rng, diagonal, intensity)
    centre = canvas / 2.0
    path = path * np.exp(1j * rng.uniform(0.0, math.pi)) + complex(centre, centre)

    image = Image.new("L", (canvas, canvas), 0)
    width = max(1, int(diagonal / 150.0))
    ImageDraw.Draw(image).line([(float(z.real), float(z.imag)) for z in path], fill=255, width=width)
    image = image.filter(ImageFilter.GaussianBlur(radius=int(0.01 * diagonal)))
    image = image.resize((size, size), resample=Image.Resampling.LANCZOS)

    kernel = np.asarray(image, dtype=np.float64)
    total = kernel.sum()
    if not total > 0.0:  # unreachable (even a zero-length path draws a pixel); keeps a valid kernel
        kernel = np.zeros((size, size))
        kernel[size // 2, size // 2] = 1.0
        total = 1.0
    return torch.from_numpy(kernel / total)


def kernel_statistics(k) -> dict:
    """Shape statistics of a blur kernel (normalised to sum 1 first).

    Parameters
    ----------
    k : torch.Tensor or numpy.ndarray
        A 2-D non-negative kernel with a positive sum.

    Returns
    -------
    dict
        ``rms_radius``: square root of the weighted mean squared distance (pixels) from the kernel's
        centre of mass; ``support``: number of pixels above 1% of the maximum; ``max``: the maximum
        value; ``entropy``: -sum k log k over k > 0, in nats; ``axis_ratio``: square root of the ratio
        of the smaller to the larger eigenvalue of the weighted second-moment (covariance) matrix about
        the centre of mass (1 for a kernel with a zero matrix, e.g. a single pixel).
    """
    if isinstance(k, torch.Tensor):
        k = k.detach().cpu().numpy()
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2:
        raise ValueError(f"kernel_statistics needs a 2-D kernel, got shape {k.shape}.")
    total = k.sum()
    if not total > 0.0:
        raise ValueError(f"kernel_statistics needs a kernel with a positive sum, got {total}.")
    k = k / total
    rows, cols = np.indices(k.shape, dtype=np.float64)
    my, mx = (k * rows).sum(), (k * cols).sum()
    dy, dx = rows - my, cols - mx
    cov = np.array([[(k * dy * dy).sum(), (k * dy * dx).sum()], [(k * dy * dx).sum(), (k * dx * dx).sum()]])
    lo, hi = np.linalg.eigvalsh(cov)
    peak = k.max()
    positive = k[k > 0]
    return {
        "rms_radius": float(math.sqrt(max(cov[0, 0] + cov[1, 1], 0.0))),
        "support": int((k > 0.01 * peak).sum()),
        "max": float(peak),
        "entropy": float(-(positive * np.log(positive)).sum()),
        "axis_ratio": float(math.sqrt(max(lo, 0.0) / hi)) if hi > 0 else 1.0,
    }
