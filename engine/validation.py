"""Input checks shared by the samplers: each raises one sentence naming the argument, the bad value and
what is allowed."""
from __future__ import annotations

import math
import secrets

import torch

__all__ = ["check_choice", "check_int", "check_problem", "per_image_seeds"]


def check_choice(name: str, value, allowed) -> str:
    """``value`` if it is one of ``allowed``, else ``ValueError``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")
    return value


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int if it is an integer ``>= minimum`` (not a bool), else ``ValueError``."""
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def per_image_seeds(seed, B: int) -> list[int]:
    """One seed per image: an int for all, one int per image, or ``None`` (a fresh random seed for all)."""
    if seed is None:
        return [secrets.randbits(63)] * B
    if isinstance(seed, int) and not isinstance(seed, bool):
        return [seed] * B
    seeds = [int(s) for s in seed]
    if len(seeds) != B:
        raise ValueError(f"seed must be an int or one int per image ({B}), got {len(seeds)} seeds")
    return seeds


def check_problem(prior, op, y, sigma_y):
    """Validate a posterior problem: ``(sigma_y as float, the prior's event shape)``.

    ``y`` must be a torch tensor of shape ``(B, *op.output_shape)`` with finite values (the public
    ``afdps.sample`` converts NumPy and CuPy arrays before it gets here).
    """
    sigma_y = float(sigma_y)
    if not (sigma_y > 0 and math.isfinite(sigma_y)):
        raise ValueError(f"sigma_y must be positive and finite, got {sigma_y!r}")
    event = tuple(prior.event_shape)
    if tuple(op.input_shape) != event:
        raise ValueError(f"operator input shape {tuple(op.input_shape)} does not match the prior's event shape {event}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch tensor here, got {type(y).__name__} (afdps.sample also takes NumPy "
                        "and CuPy arrays)")
    out_shape = tuple(op.output_shape)
    if y.dim() != len(out_shape) + 1 or tuple(y.shape[1:]) != out_shape:
        raise ValueError(f"y must have shape (B, *{out_shape}) with a leading batch dimension, got {tuple(y.shape)}"
                         + (" (use y[None] for one image)" if tuple(y.shape) == out_shape else ""))
    if not torch.isfinite(y).all():
        bad = (~torch.isfinite(y)).reshape(y.shape[0], -1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"y has non-finite values (images {bad})")
    return sigma_y, event
