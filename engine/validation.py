"""Input checks shared by the samplers: each raises one sentence naming the argument, the bad value and
what is allowed."""
from __future__ import annotations

import math
import numbers

import torch

__all__ = ["check_choice", "check_int", "check_real", "check_problem", "per_image_seeds", "available_memory", "check_memory",
           "PARTICLE_COPIES", "CG_COPIES"]

# Peak memory of a sampler run in units of the particle tensor (B * N * D * itemsize), measured with the
# PyTorch reference path on this project's CPU (3x128x128 images, Gaussian blur, 3 steps): 12.7 (SDE) and
# 15.1 (ODE + corrector) at N = 256, more at small N where fixed costs dominate. Rounded up.
PARTICLE_COPIES = 16
# the conjugate-gradient solves of guidance="implicit" hold five more (x, r, z, p, M p)
CG_COPIES = 5


def check_choice(name: str, value, allowed) -> str:
    """``value`` if it is one of ``allowed``, else ``ValueError``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")
    return value


def _number(value):
    """A 0-d tensor or array (``torch.tensor(0.05)``, ``np.array(3)``) as the Python number it holds; anything
    else as it is (a boolean one stays a tensor, and is refused as a bool would be)."""
    if not isinstance(value, numbers.Number) and getattr(value, "ndim", None) == 0 and hasattr(value, "item") \
            and "bool" not in str(getattr(value, "dtype", "")):
        return value.item()
    return value


def check_int(name: str, value, minimum: int, maximum: int | None = None, why: str = "") -> int:
    """``value`` as an int if it is an integer ``>= minimum`` (and ``<= maximum``; not a bool; ``16.0`` and 0-d
    tensors are accepted), else ``ValueError`` (with ``why``, the reason for ``maximum``)."""
    value = _number(value)
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) \
        and int(value) == value and value >= minimum and (maximum is None or value <= maximum)
    if not ok:
        most = "" if maximum is None else f" and <= {maximum}{why}"
        raise ValueError(f"{name} must be an integer >= {minimum}{most}, got {value!r}")
    return int(value)


# The most steps a run takes: its plan holds a few numbers per step (a billion steps ran out of memory with an empty
# MemoryError building the step list); the paper's runs take 100-1000.
MAX_STEPS = 1_000_000
STEPS_WHY = " (a run's plan holds every step's numbers; the paper's runs take 100-1000)"
# sigma_y's smallest value: 1 / sigma_y^2 (the likelihood's precision) must be a finite float32 (below about 5e-20 it
# overflows, and 1e-300 squared is 0 in float64: a ZeroDivisionError deep in a step).
MIN_SIGMA_Y = 1e-18


def check_seed(seed, name: str = "seed"):
    """``None`` (fresh entropy) or a non-negative integer seed of ``numpy.random.default_rng``."""
    return None if seed is None else check_int(name, seed, 0)


def check_real(name: str, value, *, low: float | None = None, high: float | None = None, positive: bool = False,
               allowed: str | None = None) -> float:
    """``value`` as a float if it is a finite real number (not a bool) in ``[low, high]`` (``> 0`` if
    ``positive``), else ``ValueError`` naming it and what is allowed. A 0-d tensor or array counts as its number."""
    value = _number(value)
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    ok = ok and (low is None or value >= low) and (high is None or value <= high) and (not positive or value > 0)
    if not ok:
        if allowed is None:
            allowed = ("a positive finite number" if positive else "a finite number") + (
                f" in [{low:g}, {high:g}]" if low is not None and high is not None else
                f" >= {low:g}" if low is not None else f" <= {high:g}" if high is not None else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def per_image_seeds(seed, B: int) -> list[int]:
    """One seed per image: an int for all, one int per image, or ``None``: one seed for all drawn from torch's
    global CPU generator, so ``torch.manual_seed`` makes the run reproducible, in ``[0, 2**63 - 1)`` as the integer
    seeds of the Philox streams."""
    def is_int(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    def in_range(seeds):
        bad = [v for v in seeds if not 0 <= v < 2**64]
        if bad:  # the Philox key takes 64 bits: seed 2**64 would silently be seed 0
            raise ValueError(f"seed must be in [0, 2**64), got {bad[0]!r}")
        return seeds

    if seed is None:
        return [int(torch.randint(0, 2**63 - 1, (), generator=torch.default_generator))] * B
    seed = _number(seed)
    if is_int(seed):
        return in_range([int(seed)] * B)
    if isinstance(seed, (str, bytes)) or not hasattr(seed, "__iter__"):
        raise ValueError(f"seed must be an int, a sequence of one int per image, or None, got {seed!r}")
    if isinstance(seed, torch.Tensor):  # (a tensor of seeds held 0-d tensors: refused, where NumPy's passed)
        if seed.is_floating_point() or seed.is_complex() or seed.dtype == torch.bool:
            raise ValueError(f"seed must be an int, a sequence of one int per image, or None; got a {seed.dtype} tensor")
        if seed.dim() != 1:  # (as an array of another shape is refused)
            raise ValueError(f"seed must be an int, a sequence of one int per image, or None; got a tensor of shape "
                             f"{tuple(seed.shape)}")
        seed = seed.tolist()
    seeds = list(seed)
    bad = [v for v in seeds if not is_int(v)]
    if bad:
        raise ValueError(f"seed must be an int, a sequence of one int per image, or None; the sequence holds "
                         f"{bad[0]!r}")
    seeds = in_range([int(v) for v in seeds])
    if len(seeds) != B:
        raise ValueError(f"seed must be an int or one int per image ({B}), got {len(seeds)} seeds")
    return seeds


SAMPLER_SCHEDULE = ("timesteps", "alpha", "sigma", "f", "g2", "rho")  # what afdps.sample takes from prior.schedule


def check_problem(prior, op, y, sigma_y, schedule_needs=SAMPLER_SCHEDULE):
    """Validate a posterior problem: ``(sigma_y as float, the prior's event shape)``. ``schedule_needs``: the
    methods the caller takes from ``prior.schedule`` (DPS needs no ``f`` or ``g2``).

    ``y`` must be a torch tensor of shape ``(B, *op.output_shape)`` with finite values (the public
    ``afdps.sample`` converts NumPy and CuPy arrays before it gets here).
    """
    sigma_y = check_real("sigma_y", sigma_y, positive=True)
    if sigma_y < MIN_SIGMA_Y:
        raise ValueError(f"sigma_y must be at least {MIN_SIGMA_Y:g} (1 / sigma_y^2, the likelihood's precision, "
                         f"overflows float32 below about 5e-20), got {sigma_y!r}")
    for what, obj, needs in (("prior", prior, ("score", "event_shape", "schedule")),
                             ("op", op, ("A", "A_adjoint", "input_shape", "output_shape"))):
        missing = [n for n in needs if not hasattr(obj, n)]
        if missing:
            raise TypeError(f"{what} must have {', '.join(needs)}; {type(obj).__name__} lacks {', '.join(missing)}")
    lacks = [n for n in schedule_needs if not hasattr(prior.schedule, n)]
    if lacks:
        raise TypeError(f"prior.schedule must be a diffusion schedule (afdps.VPSchedule, or an object with "
                        f"{', '.join(schedule_needs)}); a {type(prior.schedule).__name__} lacks {', '.join(lacks)}")
    event = tuple(prior.event_shape)
    if tuple(op.input_shape) != event:
        raise ValueError(f"operator input shape {tuple(op.input_shape)} does not match the prior's event shape {event}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch tensor here, got {type(y).__name__} (afdps.sample also takes NumPy "
                        "and CuPy arrays)")
    if y.device.type == "meta":
        raise ValueError("y is on the meta device, which holds no values; give the measurements on the CPU or a GPU")
    if y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y must hold real numbers, got dtype {y.dtype}")
    out_shape = tuple(op.output_shape)
    if y.dim() >= 1 and y.shape[0] == 0:
        raise ValueError(f"y holds no images (shape {tuple(y.shape)}); pass at least one measurement")
    if y.dim() != len(out_shape) + 1 or tuple(y.shape[1:]) != out_shape:
        raise ValueError(f"y must have shape (B, *{out_shape}) with a leading batch dimension, got {tuple(y.shape)}"
                         + (" (use y[None] for one image)" if tuple(y.shape) == out_shape else ""))
    if not torch.isfinite(y).all():
        bad = (~torch.isfinite(y)).reshape(y.shape[0], -1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"y has non-finite values (images {bad})")
    return sigma_y, event


def available_memory(device) -> int | None:
    """Bytes free for new tensors on ``device``: CUDA's free memory, or the CPU's ``MemAvailable``
    (``None`` where it cannot be read)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_memory(needed: int, device, what: str, lower: str) -> None:
    """Raise ``MemoryError`` before anything is allocated when ``needed`` bytes exceed what ``device`` has."""
    free = available_memory(device)
    if free is not None and needed > free:
        raise MemoryError(f"{what} needs about {needed / 2**30:.3g} GiB on {device}, which has {free / 2**30:.3g} GiB "
                          f"available; lower {lower}")
