"""AFDPS: weighted particle ensembles following the exactly derived guided reverse diffusion.

:func:`sample` runs, for each image of a batch, ``N`` particles from an exact Stage-I start through
``num_steps`` steps of the guided reverse SDE (or the probability-flow ODE with a Langevin corrector),
updating log-weights and resampling when the effective sample size drops (spec sections 2 to 6).

The sampler is steppable, as blackjax's SMC and k-diffusion's samplers are: :func:`prepare` fixes a
run's constants (:class:`Plan`), :func:`init` draws the Stage-I ensemble (:class:`ParticleState`),
:func:`step` advances it by one timestep and reports a :class:`StepInfo`, and :func:`finish` applies
the optional final denoising. :func:`sample` is validation, :func:`prepare`, and that loop.
"""
from __future__ import annotations

import math
import secrets
import time
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..kernels import backend as _backend
from ..kernels.langevin import langevin_step
from ..kernels.particle_step import particle_step
from ..kernels.philox import PURPOSE, randn_rows, stream_keys
from ..kernels.resample import SCHEMES, normalize_log_weights, resample, resample_and_gather
from . import potentials as pot
from .distributed import check_agree
from .io import progress_bar
from .ops import check_operator
from .schedules import ancestral_step
from .validation import (CG_COPIES, MAX_STEPS, STEPS_WHY, PARTICLE_COPIES, available_memory, check_choice, check_int, check_memory, check_problem,
                         check_real, per_image_seeds)

__all__ = ["sample", "sample_prior", "EnsembleDied", "UnusedOptionsWarning", "default_potential", "default_guidance", "memory_estimate", "Result", "ParticleState", "StepInfo", "Plan", "prepare", "init", "step",
           "finish", "tempering_schedule", "adaptive_lam", "clear_graph_cache", "GRAPH_CACHE_SIZE"]

METHODS = ("sde", "ode")
PRIOR_METHODS = ("sde", "ode", "ddpm")
TEMPERINGS = ("none", "linear", "ve-linear", "adaptive", "adaptive-linear")
ADAPTIVE = ("adaptive", "adaptive-linear")  # lam chosen during the run (adaptive_lam)
VE_SIGMA_MAX = 80.0  # the authors' annealing constant of "ve-linear" tempering
GUIDANCES = ("exact", "implicit", "euler")
CORRECTORS = ("split", "song")
RESAMPLINGS = SCHEMES + ("none",)


def _check_flag(name: str, value) -> bool:
    """``value`` as a bool if it is ``True`` or ``False`` (a NumPy bool too), else ``ValueError`` (a string such
    as ``"no"`` is truthy, so it is refused rather than read)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


class Result:
    """A weighted ensemble per image.

    The engine's results hold torch tensors; the public ``afdps.sample`` hands them back as the kind of
    ``y`` that was passed in (torch tensor, NumPy array or CuPy array) through :meth:`as_kind`.

    Attributes
    ----------
    particles : (B, N, *event) final particles.
    log_weights : (B, N) float64 final log-weights (unnormalised; ``-inf`` for dead particles: a particle
        whose state, score or log-weight increment became non-finite, see :attr:`dead`).
    ess : (num_steps, B) normalised effective sample size after each step, before any resampling.
    resampled : (num_steps, B) bool, where an image's ensemble was resampled.
    seeds : the per-image seeds used (pass them back to reproduce the run).
    nfe : score evaluations per particle (the Tweedie potential adds one vector-Jacobian product per step).
    potential : the potential the run used (``potential=None`` resolved), ``None`` for DPS.
    lam : (B, num_steps + 1) float64, each image's tempering ``lam`` at each grid time (the schedule's, or
        the path ``tempering="adaptive"`` chose); ``None`` for DPS.
    timings : seconds spent in ``stage1``, ``score``, ``operator``, ``update``, ``resample``
        (when ``profile=True``).
    guidance_jump : the Tweedie potential's largest guidance move of a live particle, relative to ``max(1, its
        RMS)`` before the ``MAX_MOVE`` cap; ``None`` for other potentials, ``guidance="euler"`` and DPS.
    """

    def __init__(self, particles, log_weights, ess, resampled, seeds, nfe, timings=None):
        self._particles, self._log_weights = particles, log_weights
        self._ess, self._resampled = ess, resampled
        self.seeds, self.nfe, self.timings = seeds, nfe, dict(timings or {})
        self.potential = None  # the potential a sampler run used (sample() sets it)
        self.guidance_jump = None  # sample() sets it for the Tweedie potential
        self._lam = None  # (B, K + 1) the lam path of a sampler run (sample() sets it)
        self.kind, self._convert = "torch", None

    def as_kind(self, kind: str, convert) -> "Result":
        """This result with every array property passed through ``convert(tensor)`` (named ``kind``)."""
        self.kind, self._convert = kind, convert
        return self

    def _out(self, t):
        return t if self._convert is None else self._convert(t)

    @property
    def particles(self):
        return self._out(self._particles)

    @property
    def log_weights(self):
        return self._out(self._log_weights)

    @property
    def ess(self):
        return self._out(self._ess)

    @property
    def resampled(self):
        return self._out(self._resampled)

    @property
    def lam(self):
        return None if self._lam is None else self._out(self._lam)

    @property
    def resample_steps(self) -> list[list[int]]:
        """For each image, the steps after which it was resampled."""
        return [torch.nonzero(self._resampled[:, b]).flatten().tolist() for b in range(self._resampled.shape[1])]

    def _weights(self) -> torch.Tensor:
        return normalize_log_weights(self._log_weights)[0]

    @property
    def weights(self):
        """(B, N) normalised weights (float64)."""
        return self._out(self._weights())

    @property
    def dead(self):
        """(B,) int64: how many particles of each image died (log-weight ``-inf``); they never enter
        :attr:`best`, :attr:`mean` or :attr:`std`. (An array of the input's kind, as every array field.)"""
        return self._out((~torch.isfinite(self._log_weights)).sum(1).cpu())

    def _w(self) -> torch.Tensor:
        w = self._weights().to(self._particles.device)
        return w.reshape(*w.shape, *([1] * (self._particles.dim() - 2)))

    def _live_particles(self) -> torch.Tensor:
        """The particles in float64 with dead ones zeroed, so that their zero weight cannot meet a NaN."""
        p = self._particles.to(torch.float64)
        live = torch.isfinite(self._log_weights).to(p.device)
        return torch.where(live.reshape(*live.shape, *([1] * (p.dim() - 2))), p, 0.0)

    @property
    def best(self):
        """(B, *event) the highest-weight particle of each image."""
        p = self._particles
        idx = torch.argmax(self._log_weights, dim=1).to(p.device)
        return self._out(p[torch.arange(p.shape[0], device=idx.device), idx])

    @property
    def mean(self):
        """(B, *event) weighted mean (the MMSE estimate)."""
        return self._out((self._w() * self._live_particles()).sum(1).to(self._particles.dtype))

    @property
    def std(self):
        """(B, *event) weighted per-pixel standard deviation (an uncertainty map)."""
        p = self._live_particles()
        w = self._w()
        m = (w * p).sum(1, keepdim=True)
        return self._out((w * (p - m).square()).sum(1).sqrt().to(self._particles.dtype))

    def __repr__(self):
        B, N = self._log_weights.shape
        return f"Result(images={B}, particles={N}, event={tuple(self._particles.shape[2:])}, nfe={self.nfe}, kind={self.kind!r})"


@dataclass
class ParticleState:
    """The ensemble between steps: particles ``x (B, N, *event)``, log-weights ``logw (B, N)`` float64
    (``-inf`` for dead particles) and ``k``, the number of steps taken."""

    x: torch.Tensor
    logw: torch.Tensor
    k: int = 0
    lam: torch.Tensor | None = None  # (B,) float64 with tempering="adaptive": each image's lam at step k
    # x's transform, kept by the guidance step that made x (Plan.keep_spectrum); the next step's gradient takes it
    # instead of transforming x again, unless x has changed since (another tensor, or written in place)
    spectrum: "_Kept | None" = field(default=None, repr=False, compare=False)
    # the token of the plan whose init() or step() made it (Plan.token): step() refuses another plan's state; a
    # state built by hand (None) is taken as it is
    plan: int | None = field(default=None, repr=False, compare=False)
    finished: bool = field(default=False, repr=False, compare=False)  # made by finish(): the final ensemble


@dataclass(frozen=True)
class _Kept:
    """``X``, the operator's transform of the particles ``of`` at their in-place version ``version``."""

    X: torch.Tensor
    of: torch.Tensor
    version: int

    @staticmethod
    def of_state(X, x) -> "_Kept | None":
        # (an inference tensor, made under torch.inference_mode, has no version counter to show an in-place write:
        # nothing is kept for it. Writes PyTorch does not see, e.g. through .numpy(), are not seen here either.)
        return None if X is None or x.is_inference() else _Kept(X, x, x._version)

    def valid_for(self, x: torch.Tensor) -> bool:
        return x is self.of and x._version == self.version


# Why a particle died (spec section 5 and the non-finite rule): codes of StepInfo.cause.
CAUSES = {0: "alive", 1: "non-finite state", 2: "non-finite score", 3: "non-finite increment"}


class UnusedOptionsWarning(UserWarning):
    """A note that an option changes nothing in this run (``corrector_snr`` with the SDE, say): about the options,
    not about any image, so a caller that runs many images says it once."""


class EnsembleDied(FloatingPointError):
    """Every particle (every DPS sample) of image ``image`` of a call died. ``template`` is the message with
    ``{image}`` where the image's index goes, so that a caller that runs images in batches (``afdps eval``) can
    name the image of its own list and say what ran."""

    def __init__(self, template: str, image: int, detail: str = ""):
        self.template = template + detail.replace("{", "{{").replace("}", "}}")  # (``detail`` is taken literally)
        self.image = int(image)
        super().__init__(self.template.format(image=self.image))


@dataclass
class StepInfo:
    """What one step did: ``ess (B,)`` normalised ESS after the step (before any resampling; NaN where
    every particle is dead), ``resampled (B,)`` bool, ``cause (B, N)`` int8 (:data:`CAUSES`: why a particle
    died in this step, 0 if it did not), and ``timings`` (seconds per part when profiling)."""

    ess: torch.Tensor
    resampled: torch.Tensor
    cause: torch.Tensor | None = None
    timings: dict = field(default_factory=dict)




@dataclass
class Plan:
    """A run's constants, fixed by :func:`prepare`: the problem, the options, the time grid, the tempering
    schedule and every Philox key of the run (made once: no host-to-device traffic inside the loop)."""

    prior: object
    op: object
    y: torch.Tensor  # (B, 1, *out): broadcasts over particles
    sigma_y: float
    method: str
    potential: str
    eta: float
    num_particles: int
    num_steps: int
    guidance: str
    resample: str
    ess_threshold: float
    corrector_steps: int
    corrector: str
    corrector_snr: float | tuple  # as given: r, or (r_early, r_late)
    corrector_rs: list  # the corrector's r at each step (corrector_schedule)
    tempering: str
    tempering_ess: float
    weights: bool
    use_triton: bool
    dtype: torch.dtype
    denoise: bool
    seeds: list
    times: list
    lam: list
    members: list  # the potential's member at each grid time (engine/potentials.py)
    laps: list  # tr F of each member (before lam)
    stage1_keys: torch.Tensor
    step_keys: torch.Tensor
    resample_keys: torch.Tensor
    corrector_keys: tuple
    timer: "_Timer"
    group: object = None  # a ParticleGroup (engine/distributed.py): this rank holds particles row0 .. row0 + N - 1
    row0: int = 0
    # the Tweedie guidance step's largest relative move per step (device scalars): step() appends, sample() reads
    # and clears them; a caller running step() itself owns the list
    jumps: list = field(default_factory=list)
    # carry each particle's spectrum from a step's exact guidance to the next step's gradient (ParticleState.spectrum):
    # an operator that keeps one (the circular blur), a potential with d = 0, one lam per step, one process
    keep_spectrum: bool = False
    # this plan's, in its states: random (not a counter), so a state saved in one process is not taken as a plan's of
    # another; drawn from the OS, so no random stream a run depends on moves
    token: int = field(default_factory=lambda: secrets.randbits(63), compare=False)

    @property
    def batch(self) -> int:
        return self.y.shape[0]

    @property
    def event(self) -> tuple:
        return tuple(self.prior.event_shape)

    @property
    def keys(self) -> tuple:
        """The tensors a CUDA-graph replay copies new values into: ``y`` and the keys."""
        return (self.y, self.stage1_keys, self.step_keys, self.resample_keys, *self.corrector_keys)

    def with_keys(self, y, stage1_keys, step_keys, resample_keys, *corrector_keys) -> "Plan":
        return replace(self, y=y, stage1_keys=stage1_keys, step_keys=step_keys, resample_keys=resample_keys,
                       corrector_keys=tuple(corrector_keys))


def tempering_schedule(kind: str, schedule, times: torch.Tensor) -> list[float]:
    """``lam`` at each grid time, 1 at the last (so the final target is the posterior):

    - ``none``: 1 everywhere;
    - ``linear``: linear in the noise level ``sigma``, 0 at the first (noisiest) time;
    - ``ve-linear``: linear in the VE noise level ``sigma / alpha`` as in the authors' code,
      ``(sigma_max - sigma / alpha) / sigma_max`` with ``sigma_max = 80``, clipped to [0, 1] (close to 1
      over most of a VP grid: 0.98 at ``tau = 0.36``).

    (``adaptive`` and ``adaptive-linear`` have no schedule before the run: each image's ``lam`` is chosen
    during it, from 0 at the first time to 1 at the last, by :func:`adaptive_lam`, never above the linear
    schedule with ``adaptive-linear``; ``Result.lam`` records it.)
    """
    if kind in ADAPTIVE:
        raise ValueError(f"tempering={kind!r} chooses lam during the run from the particles' potentials (see "
                         "adaptive_lam); Result.lam records the path it took")
    if kind == "none":
        return [1.0] * len(times)
    sig = schedule.sigma(times)
    if kind == "ve-linear":
        lam = ((VE_SIGMA_MAX - sig / schedule.alpha(times)) / VE_SIGMA_MAX).clamp(0.0, 1.0).tolist()
        return lam[:-1] + [1.0]
    lam = (sig[0] - sig) / (sig[0] - sig[-1])
    return lam.clamp(0.0, 1.0).tolist()


def adaptive_lam(live: torch.Tensor, b: torch.Tensor, lam_k: torch.Tensor, target: float,
                 iters: int = 50) -> torch.Tensor:
    """The next ``lam`` of adaptive tempering: per image, the largest ``lam_n in [lam_k, 1]`` whose
    tempering increment ``w_i = exp(-(lam_n - lam_k) b_i)`` over the live particles has

        ESS / N = (sum_i w_i)^2 / (N sum_i w_i^2) >= target,

    found by bisection on ``[0, 1 - lam_k]`` (``iters`` halvings: a tolerance of ``2^-iters``). The ESS is
    the increment's own, not the conditional ESS against the current weights: where those are degenerate
    (one particle holds the weight), the conditional ESS is about 1 for any increment and would let ``lam``
    jump to 1 at once. ``live (B, N)`` bool; ``b (B, N)``: ``nu / lam`` of the next time's member at each
    particle (float64); ``lam_k (B,)``. ``lam_n = 1`` where even that keeps the ESS above the target."""
    bb = torch.where(live, b, 0.0).to(torch.float64)
    bb = bb - torch.where(live, bb, torch.inf).amin(1, keepdim=True).nan_to_num(0.0, posinf=0.0)  # no overflow
    zero = torch.where(live, 0.0, -torch.inf).to(torch.float64)
    n_live = live.sum(1).clamp(min=1).to(torch.float64)

    def log_ess(d):
        e = zero - d[:, None] * bb
        return 2 * torch.logsumexp(e, 1) - torch.logsumexp(2 * e, 1) - n_live.log()

    log_target = math.log(target)
    lo = torch.zeros_like(lam_k, dtype=torch.float64)
    hi = (1.0 - lam_k).to(torch.float64).clamp(min=0.0)
    full = log_ess(hi) >= log_target
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        ok = log_ess(mid) >= log_target
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    return torch.where(full, 1.0, (lam_k + lo).clamp(max=1.0))


def _per_image(lam, fn, *tensors):
    """``fn(lam_b, *tensors[b])`` for each image ``b`` where ``lam`` is a (B,) tensor with different values
    (adaptive tempering: the operators' exact steps take one scalar); one call where it is a float or
    the same for every image."""
    if not torch.is_tensor(lam):
        return fn(lam, *tensors)
    vals = lam.tolist()
    if all(v == vals[0] for v in vals):
        return fn(vals[0], *tensors)
    return torch.cat([fn(v, *(t[b:b + 1] for t in tensors)) for b, v in enumerate(vals)])


class _Timer:
    """Seconds per part of a step (``score``, ``operator``, ``update``, ``resample``), synchronising CUDA
    around each part; a no-op unless enabled."""

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled, self.device, self.t = enabled, device, {}

    def __call__(self, name):
        timer = self

        class _Ctx:
            def __enter__(self):
                if timer.enabled:
                    if timer.device.type == "cuda":
                        torch.cuda.synchronize(timer.device)
                    self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if timer.enabled:
                    if timer.device.type == "cuda":
                        torch.cuda.synchronize(timer.device)
                    timer.t[name] = timer.t.get(name, 0.0) + time.perf_counter() - self.t0

        return _Ctx()


def memory_estimate(prior, y: torch.Tensor, num_particles: int, dtype=torch.float32, guidance: str = "exact",
                    potential: str | None = None):
    """``(bytes, what to lower)``: the memory a run on ``y (B, ...)`` with ``num_particles`` particles per
    image (this process's) is expected to need at its peak: :data:`PARTICLE_COPIES` copies of the particle
    tensor (plus :data:`CG_COPIES` for the implicit guidance) and, for a network prior, its activations for
    the rows of one network call (chosen from the free memory with ``batch_size="auto"``), with their autograd
    graph for ``potential="tweedie"``."""
    event = tuple(prior.event_shape)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    copies = PARTICLE_COPIES + (CG_COPIES if guidance == "implicit" else 0)
    needed = copies * y.shape[0] * num_particles * math.prod(event) * itemsize
    lower = "num_particles, or pass fewer images per call"
    if hasattr(prior, "network_batch"):  # a network prior: its activations per call count too
        free = available_memory(y.device)
        grad = potential == "tweedie" and hasattr(prior, "graph_bytes_per_image")
        rows = prior.network_batch(y.shape[0] * num_particles, None if free is None else max(free - needed, 0),
                                   **({"grad": True} if grad else {}))
        needed += (max(rows, y.shape[0]) * prior.graph_bytes_per_image() if grad  # (a slice: every image's particle)
                   else rows * prior.activation_bytes_per_image())
        lower += ", or set the prior's batch_size (images per network call; 'auto' fits it to the memory)"
    return needed, lower


def default_guidance(op) -> str:
    """The guidance that ``guidance=None`` means: ``"exact"`` where the operator diagonalises ``A^T A``,
    ``"implicit"`` (backward Euler by conjugate gradients) otherwise, e.g. for ``Blur(boundary="valid")``."""
    return "exact" if getattr(op, "supports_exact", False) else "implicit"


def default_potential(method: str, eta: float, cuda_graph: bool = False, tempering: str = "linear") -> str:
    """The potential that ``potential=None`` means: ``"tweedie"`` for the SDE with ``eta = 0.5`` (the
    best measured configuration, docs/quality.md; it needs that ``eta``), ``"scaled"`` otherwise (and for
    CUDA-graph runs, which cannot capture the Tweedie potential's backward pass, and with ``tempering="none"``,
    whose ``lam = 1`` from the start the Tweedie potential does not take: its Stage I is exact only from 0)."""
    return ("tweedie" if method == "sde" and float(eta) == 0.5 and not cuda_graph and tempering != "none"
            else "scaled")


# The ODE corrector's r: 0.1 for the first half of the steps, 0.2 for the rest. On the 100 MNIST development
# digits it is at least r = 0.1 on every task, and it passes the analytic exactness tests, which r = 0.3 does not
# (docs/quality.md).
DEFAULT_CORRECTOR_SNR = (0.1, 0.2)


MAX_SNR = 100.0  # the corrector's r: beyond it the step 2 (r sigma)^2 is thousands of sigma^2 (1e300 overflowed)


def corrector_schedule(corrector_snr, num_steps: int) -> tuple:
    """``(value, rs)``: the corrector's ``r`` as given (a float, or a pair of floats) and its value at each
    of the ``num_steps`` steps. A pair ``(r_early, r_late)`` uses ``r_early`` for the first
    ``num_steps // 2`` steps and ``r_late`` for the rest (docs/quality.md: a large ``r`` early loses box
    inpainting, a large ``r`` late biases the unadjusted corrector)."""
    allowed = (f"a positive number or a pair (r_early, r_late) of positive numbers, each at most {MAX_SNR:g} (the "
               "corrector's step is 2 (r sigma)^2: Song's r is about 0.16)")
    pair = isinstance(corrector_snr, (list, tuple))
    if pair and len(corrector_snr) != 2:
        raise ValueError(f"corrector_snr must be {allowed}, got {corrector_snr!r}")
    rs = tuple(check_real("corrector_snr", v, positive=True, high=MAX_SNR, allowed=allowed)
               for v in (corrector_snr if pair else (corrector_snr,)))
    if not pair:
        return rs[0], [rs[0]] * num_steps
    half = num_steps // 2
    return rs, [rs[0]] * half + [rs[1]] * (num_steps - half)


def _changes_nothing(given: list[str], why: str) -> list[str]:
    return [f"{', '.join(given)} change{'s' if len(given) == 1 else ''} nothing {why}"] if given else []


def _unused_options(method, eta, corrector_steps, corrector, corrector_snr, tempering, tempering_ess, ess_threshold,
                    resample, weights) -> list[str]:
    """A note for each option given a value other than its default that this run does not use (it changes nothing,
    which the caller should know rather than believe otherwise). The values are the checked ones (a NumPy number
    as its float, a pair of ``corrector_snr`` as a tuple)."""
    notes = []
    if method == "ode" and eta != 0.5:
        notes.append(f"eta={eta!r} changes nothing with method='ode' (eta weighs the SDE's guidance by its noise; the "
                     "ODE's predictor has none)")
    corrector_given = [f"{k}={v!r}" for k, v, d in (("corrector", corrector, "split"),
                                                   ("corrector_snr", corrector_snr, DEFAULT_CORRECTOR_SNR)) if v != d]
    if method == "sde":
        notes += _changes_nothing(([f"corrector_steps={corrector_steps!r}"] if corrector_steps != 1 else [])
                                  + corrector_given, "with method='sde' (the corrector is the ODE's)")
    elif corrector_steps == 0:
        notes += _changes_nothing(corrector_given, "with corrector_steps=0 (no corrector step runs)")
    if tempering not in ADAPTIVE and tempering_ess != 0.5:
        notes.append(f"tempering_ess={tempering_ess!r} changes nothing with tempering={tempering!r} (it is the target of "
                     "the adaptive temperings)")
    resampling = [f"{k}={v!r}" for k, v, d in (("resample", resample, "systematic"),
                                               ("ess_threshold", ess_threshold, 0.5)) if v != d]
    if not weights:
        notes += _changes_nothing(resampling, "with weights=False (the unweighted baseline never resamples)")
    elif resample == "none":
        notes += _changes_nothing(resampling[1:], "with resample='none' (never resampled)")
    elif ess_threshold == 0.0 and resample != "systematic":
        notes.append(f"resample={resample!r} changes nothing with ess_threshold=0 (never resampled)")
    return notes


def prepare(prior, op, y, sigma_y: float, *, method="sde", potential=None, eta=0.5, num_particles=16,
            num_steps=100, tempering="linear", guidance=None, resample="systematic", ess_threshold=0.5, corrector_steps=1,
            corrector="split", corrector_snr=DEFAULT_CORRECTOR_SNR, weights=True, seed=None, backend=None, dtype=torch.float32, time_power=2.0,
            denoise=False, profile=False, particle_group=None, tempering_ess=0.5) -> Plan:
    """Validate a run and fix its constants: the :class:`Plan` that :func:`init`, :func:`step` and
    :func:`finish` take. ``y (B, *op.output_shape)`` is a torch tensor; the options are those of
    :func:`sample` (which calls this), with ``seed`` and ``backend`` resolved here. ``y`` is detached: the run is
    not differentiable, and a ``y`` with an autograd graph kept every step's graph alive (memory grew with the
    steps)."""
    if isinstance(y, torch.Tensor):
        y = y.detach()
    if particle_group is not None:  # first (before any check one rank might fail alone): ranks given other problems
        # would exchange particles of different posteriors
        check_agree({"y": y, "sigma_y": sigma_y, "operator": (type(op).__name__, getattr(op, "output_shape", None)),
                     "prior": (type(prior).__name__, getattr(prior, "event_shape", None)),
                     "options": (method, potential, eta, num_particles, num_steps, tempering, tempering_ess, guidance,
                                 resample, ess_threshold, corrector_steps, corrector, corrector_snr, weights, seed,
                                 backend, str(dtype), time_power, denoise)},
                    "afdps.sample(particle_group=...)", getattr(y, "device", None), particle_group.group)
    check_choice("method", method, METHODS)
    eta = check_real("eta", eta, low=0.0)
    weights = _check_flag("weights", weights)
    denoise = _check_flag("denoise", denoise)
    if potential is None:
        potential = default_potential(method, eta, tempering=tempering)
    check_choice("potential", potential, pot.POTENTIALS)
    check_choice("tempering", tempering, TEMPERINGS)
    if guidance is None:
        guidance = default_guidance(op)
    check_choice("guidance", guidance, GUIDANCES)
    check_choice("resample", resample, RESAMPLINGS)
    N = check_int("num_particles", num_particles, 1)
    row0 = 0
    if particle_group is not None:
        N, row0 = particle_group.split(N)  # this rank's share; the random streams follow the global index
        if method == "ode" and corrector == "song" and corrector_steps:
            raise ValueError("corrector='song' averages its step size over each image's particles, which a "
                             "particle-parallel run does not gather; use corrector='split'")
    K = check_int("num_steps", num_steps, 1, MAX_STEPS, STEPS_WHY)
    check_int("corrector_steps", corrector_steps, 0)
    check_choice("corrector", corrector, CORRECTORS)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    ess_threshold = check_real("ess_threshold", ess_threshold, low=0.0, high=1.0)
    corrector_snr, corrector_rs = corrector_schedule(corrector_snr, K)
    check_real("time_power", time_power, low=1.0)
    tempering_ess = check_real("tempering_ess", tempering_ess, low=0.0, high=1.0)
    unused = _unused_options(method, eta, int(corrector_steps), corrector, corrector_snr, tempering, tempering_ess,
                             ess_threshold, resample, weights)
    if tempering in ADAPTIVE:
        if not 0.0 < tempering_ess < 1.0:
            raise ValueError(f"tempering_ess must be in (0, 1) for tempering={tempering!r}, got {tempering_ess!r}")
        if not weights:
            raise ValueError(f"tempering={tempering!r} chooses lam from the particles' potentials, which the unweighted "
                             "baseline ignores; with weights=False use a fixed tempering ('linear')")
        if method == "ode" and corrector == "song" and corrector_steps:
            raise ValueError(f"tempering={tempering!r} gives each image its own lam, which corrector='song' (one fused "
                             "kernel with one lam) does not take; use corrector='split'")
    sigma_y, event = check_problem(prior, op, y, sigma_y)
    y_run = y.to(dtype, copy=True)  # (the plan's own: a caller's y changed in place afterwards changed the run)
    if not bool(torch.isfinite(y_run).all()):
        raise ValueError(f"y has values beyond {str(dtype).replace('torch.', '')}'s range (the largest magnitude is "
                         f"{float(y.abs().max()):.3g}); the run computes in {str(dtype).replace('torch.', '')} "
                         "(dtype=torch.float64 takes it, or rescale y)")
    if guidance == "exact" and not getattr(op, "supports_exact", False):
        raise ValueError(f"guidance='exact' needs an operator that diagonalises A^T A; {type(op).__name__} does not "
                         "(use guidance='implicit' or 'euler')")
    needed, lower = memory_estimate(prior, y, N, dtype, guidance, potential)
    check_memory(needed, y.device,
                 f"afdps.sample with {N} particles of {'x'.join(map(str, event))} for {y.shape[0]} image(s)", lower)
    if potential == "tweedie" and not (method == "sde" and float(eta) == 0.5):
        raise ValueError(f"potential='tweedie' has no closed-form Laplacian, so it runs with method='sde' and eta=0.5 "
                         f"(where that term cancels); got method={method!r}, eta={eta!r}")
    if method == "ode" and corrector == "split" and guidance == "euler" and not getattr(op, "supports_exact", False):
        raise ValueError(f"corrector='split' integrates the likelihood flow exactly, or implicitly with "
                         f"guidance='implicit'; {type(op).__name__} has no exact flow, so with guidance='euler' use "
                         "corrector='song' (or guidance='implicit')")
    if potential == "inflated" and not getattr(op, "supports_exact", False):
        raise ValueError(f"potential='inflated' weights the residual by a function of A A^T, which "
                         f"{type(op).__name__} cannot diagonalise; use potential='noisy' or 'scaled'")
    if potential == "inflated" and guidance == "implicit":
        raise ValueError("guidance='implicit' has no step for potential='inflated' (its conjugate gradients solve "
                         "with I + h kappa A^T A, not with the inflated weighting); use guidance='exact' (the default "
                         f"for {type(op).__name__}) or 'euler'")
    needs = {"frobenius_sq": f"potential={potential!r}"} if potential in ("noisy", "scaled") else {}
    if potential == "inflated":
        needs.update({m: "potential='inflated'" for m in ("spectral_trace", "output_spectral_apply")})
    check_operator(op, dtype, y.device, needs, batch=y.shape[0])
    device = y.device
    use_triton = _backend.use_triton(backend, device, "afdps.sample")
    seeds = per_image_seeds(seed, y.shape[0])
    sched = prior.schedule
    times = sched.timesteps(K, float(time_power))
    M = int(corrector_steps) if method == "ode" else 0
    path = pot.members(potential, sched, times.tolist(), sigma_y)
    # adaptive tempering: 0 at the start and 1 at the end; "adaptive-linear" keeps the linear schedule as a cap
    lam = ([0.0] * K + [1.0] if tempering == "adaptive" else
           tempering_schedule("linear" if tempering == "adaptive-linear" else tempering, sched, times))
    if potential == "tweedie" and lam[0] != 0.0:
        raise ValueError(f"potential='tweedie' starts from lam = 0 (Stage I is then exact); tempering={tempering!r} "
                         f"gives lam = {lam[0]:.3g} at the first time (use 'linear')")

    if particle_group is not None and seed is None:  # each rank drew its own unless torch.manual_seed was the same
        check_agree({"seeds (seed=None draws one on each rank: pass seed=)": seeds},
                    "afdps.sample(particle_group=...)", device, particle_group.group)
    if unused:  # (after every refusal: a run that raises does not warn first)
        warnings.warn("; ".join(unused), UnusedOptionsWarning, stacklevel=3)

    def keys(purpose):
        return torch.stack([stream_keys(seeds, k + 1, purpose, device) for k in range(K)])

    return Plan(prior=prior, op=op, y=y_run.unsqueeze(1), sigma_y=sigma_y, method=method, potential=potential,
                eta=float(eta),
                num_particles=N, num_steps=K, guidance=guidance, resample=resample,
                ess_threshold=float(ess_threshold), corrector_steps=M, corrector=corrector,
                corrector_snr=corrector_snr, corrector_rs=corrector_rs, tempering=tempering, tempering_ess=float(tempering_ess),
                weights=bool(weights), use_triton=use_triton, dtype=dtype, denoise=bool(denoise), seeds=seeds,
                times=times.tolist(), lam=lam, members=path,
                laps=[0.0 if potential == "tweedie" else pot.laplacian(op, m) for m in path],
                stage1_keys=stream_keys(seeds, 0, PURPOSE["stage1"], device), step_keys=keys(PURPOSE["step"]),
                resample_keys=keys(PURPOSE["resample"]),
                corrector_keys=tuple(keys(PURPOSE["corrector"] + m) for m in range(M)),
                timer=_Timer(profile, device), group=particle_group, row0=row0,
                keep_spectrum=(guidance == "exact" and bool(getattr(op, "keeps_spectrum", False))
                               and potential in ("noisy", "scaled") and tempering not in ADAPTIVE
                               and particle_group is None))


MAX_MOVE = 1.0
"""The Tweedie potential's guidance step moves a particle by at most this many times ``max(1, its RMS)`` per
coordinate. Its damping (``damped_guidance_step``) covers the directions the operator sees; the network's Jacobian
also carries the gradient into the others (a box's inside), where a coarse step is undamped and, without this cap,
ran away (shipped MNIST prior, default settings, 4 particles: box inpainting at 20 steps reached |x| = 1,080, 70%
missing at 40 steps |x| = 12 in 2 of 10 digits); with it those runs stay in the data range (box at 20 steps 12.1
dB, 70% missing at 40 steps 22.7 dB, 4 digits), a cap of 2 did not hold them. Particles within it keep their values
bit for bit; at 100 steps it shortened only moves of particles that resampling then dropped (box inpainting, 16
particles, 10 digits: the same particles and weights as without it)."""
WARN_MOVE = 3.0
""":func:`sample` warns when a live particle's guidance move was over this many times ``max(1, its RMS)`` (cut to
``MAX_MOVE``). At 100 steps single low-weight particles reach 1.8 (box inpainting, 16 particles, 10 digits) and are
resampled away (the run equals the uncapped one); the runs that ran away without the cap started at 4-12."""


def _cap_move(before: torch.Tensor, after: torch.Tensor, cap: float):
    """``after`` with each particle's move ``after - before`` shortened to at most ``cap`` times ``max(1,
    RMS(before))`` (RMS per coordinate); particles within the cap keep ``after`` bit for bit. Returns it and each
    particle's relative move before the cap, ``(B, N)``."""
    rms = lambda t: t.flatten(2).float().square().mean(-1).sqrt()  # noqa: E731
    delta = after - before
    ratio = rms(delta) / rms(before).clamp(min=1.0)  # (B, N)
    shrink = (cap / ratio).clamp(max=1.0).view(*ratio.shape, *([1] * (after.dim() - 2)))
    return torch.where(shrink < 1.0, before + delta * shrink.to(delta.dtype), after), ratio


def _checked(s, x: torch.Tensor, k, t: float) -> torch.Tensor:
    """The prior's score ``s = score(x, t)`` at step ``k`` (or a label, e.g. ``"the final denoising"``), refused
    unless it is a torch tensor of ``x``'s shape."""
    return pot.score_like(s, x, t, f"at step {k}" if isinstance(k, int) else f"in {k}")


def _same_plan(state: ParticleState, plan: Plan, verb: str) -> None:
    """Refuse a state that ``init`` or ``step`` of another plan made (a state built by hand has no plan)."""
    if state.plan is not None and state.plan != plan.token:
        raise ValueError(f"the state comes from another plan (init() or step() of another prepare(...)): {verb} a "
                         "state with the plan that made it")


def init(plan: Plan) -> ParticleState:
    """Stage I (spec sections 3, 9): an exact sample of ``N(0, rho^2 I) exp(-nu_T)``, uniform weights."""
    B, N, event = plan.batch, plan.num_particles, plan.event
    with plan.timer("stage1"):
        D, numel = math.prod(event), getattr(plan.op, "stage1_noise_numel", math.prod(event))
        noise = randn_rows(plan.stage1_keys, N, numel, row0=plan.row0).to(plan.dtype)
        # the operator's own noise layout where Stage I needs more than one white vector per particle
        noise = noise.reshape(B, N, *event) if numel == D else noise.reshape(B, N, numel)
        x = pot.stage1_sample(plan.op, plan.y, plan.members[0], plan.lam[0], plan.prior.schedule.rho, noise)
    finite = torch.isfinite(x).reshape(B, N, -1).all(-1)
    logw = torch.where(finite, 0.0, -torch.inf).to(device=x.device, dtype=torch.float64)
    lam = torch.zeros(B, dtype=torch.float64, device=x.device) if plan.tempering in ADAPTIVE else None
    return ParticleState(x=x, logw=logw, k=0, lam=lam, plan=plan.token)


def step(state: ParticleState, plan: Plan) -> tuple[ParticleState, StepInfo]:
    """One AFDPS timestep ``tau_k -> tau_{k+1}`` (spec sections 2, 4, 5): the fused particle update, the
    exact guidance flow, the log-weight increment, the Langevin corrector (ODE) and ESS-triggered
    resampling (never after the last step)."""
    k, x, logw = state.k, state.x, state.logw
    prior, op, sched, timer, yb = plan.prior, plan.op, plan.prior.schedule, plan.timer, plan.y
    B, N, event = plan.batch, plan.num_particles, plan.event
    if state.finished:
        raise ValueError("the state is finish()'s result: the run is over (init() starts another)")
    if not 0 <= k < plan.num_steps:
        raise ValueError(f"the state has taken {k} of the plan's {plan.num_steps} steps; a finished run goes to "
                         "finish(state, plan)" if k >= plan.num_steps else f"the state's step count is {k}")
    if tuple(x.shape) != (B, N, *event):
        raise ValueError(f"the state's particles have shape {tuple(x.shape)}, the plan's are {(B, N, *event)} (images, "
                         "particles, event): step a state with the plan init() made it from")
    _same_plan(state, plan, "step")  # another y, sigma_y, seed or method would run silently
    D = math.prod(event)
    t, tn = plan.times[k], plan.times[k + 1]
    h = t - tn
    adaptive = state.lam is not None  # tempering="adaptive": lam_k (B,) per image; lam_n is chosen below
    lam_k, lam_n = (state.lam, None) if adaptive else (plan.lam[k], plan.lam[k + 1])
    lam_kb = lam_k.view(B, 1) if adaptive else lam_k  # broadcasts over an image's particles
    m_k, m_n = plan.members[k], plan.members[k + 1]
    f, g2 = float(sched.f(t)), float(sched.g2(t))
    v2 = g2 if plan.method == "sde" else 0.0
    before = dict(timer.t)
    tweedie = plan.potential == "tweedie"
    kept = state.spectrum if plan.keep_spectrum else None
    spec = kept.X if kept is not None and kept.valid_for(x) else None  # x's transform, or None: transform again
    with timer("score"):
        if tweedie:
            s, g_tw, half_k, half_n, next_bad = pot.tweedie_terms(prior, op, x, yb, t, tn, plan.sigma_y,
                                                                  last=k + 1 == plan.num_steps)
        else:
            s = _checked(prior.score(x, t), x, k, t)
    # the non-finite rule: a particle whose state, score or increment is not finite dies (log-weight -inf);
    # states are checked where they are made (Stage I, the end of each step), so not again here
    score_bad = ~torch.isfinite(s).reshape(B, N, -1).all(-1)
    if tweedie:  # the score at the next grid time, which the potential there takes
        score_bad |= next_bad
    # the potential's change over the step at the old state, -(nu_{k+1}(x) - nu_k(x)): for one member
    # with a new lam it is (lam_k - lam_n) nu(x) / lam from the residual norm; across members, from A x
    same = m_k == m_n and not tweedie
    need_value = plan.weights and same and (adaptive or lam_n != lam_k)
    # the potential at the next time is lam_n b(x) - (terms without lam_n): b (B, N) float64 per particle, and
    # nu_k(x) = lam_k a(x); the weight takes -(lam_n b - lam_k a), and adaptive tempering chooses lam_n from b
    if tweedie:
        gk, a_val, b_val = g_tw, half_k, half_n
    else:
        with timer("operator"):
            # members that differ only in how y is scaled (d = 0): both potentials from the gradient's pass
            pair = plan.weights and not same and m_k.d == 0.0 and m_n.d == 0.0
            gk, raw = pot.gradient(op, x, yb, m_k, with_value=need_value or pair, use_triton=plan.use_triton,
                                   spectrum=spec, also=m_n if pair else None)
            if need_value and adaptive:  # (a fixed schedule takes tempering_change(raw) below)
                a_val = b_val = pot.half_value(m_k, raw)
            elif pair:
                a_val, b_val = pot.half_value(m_k, raw[0]), pot.half_value(m_n, raw[1])
            elif plan.weights and not same:
                Ax = op.A(x)
                a_val, b_val = pot.value_from_Ax(op, Ax, yb, m_k), pot.value_from_Ax(op, Ax, yb, m_n)
    spec = None  # the update below moves x
    kappa = plan.eta * v2 * lam_k
    with timer("update"):
        # with a lam per image the kernel takes lam = 1 and gm = lam_b grad_mu; its Laplacian term is then
        # added per image: h (0.5 - eta) v2 lam_b tr F (a constant over an image's particles)
        g_rows = (gk * lam_k.view(B, *([1] * (gk.dim() - 1))).to(gk.dtype)) if adaptive else gk
        x_new, dlw = particle_step(
            x.reshape(B * N, D), s.reshape(B * N, D), g_rows.reshape(B * N, D), plan.step_keys[k],
            num_particles=N, f=f, g2=g2, v2=v2, eta=plan.eta, h=h, lam=1.0 if adaptive else lam_k,
            lap_mu=0.0 if adaptive else plan.laps[k],
            euler=plan.guidance == "euler", use_triton=plan.use_triton, row0=plan.row0)
        x = x_new.reshape(B, N, *event)
        dlw = dlw.view(B, N)
        if adaptive and plan.laps[k] != 0.0:
            dlw = dlw + h * (0.5 - plan.eta) * v2 * plan.laps[k] * lam_kb
    implicit = plan.guidance == "implicit"
    if plan.guidance != "euler" and v2 * plan.eta != 0.0:
        with timer("operator"):
            if tweedie:
                damp = pot.implicit_damped_step if implicit else pot.damped_guidance_step
                scale = float(sched.alpha(t)) ** 2 * plan.sigma_y ** 2
                x_old = x
                x = _per_image(kappa, lambda kap, xb, gb: xb if kap == 0.0 else damp(op, xb, gb, h, kap, scale), x, gk)
                x, ratio = _cap_move(x_old, x, MAX_MOVE)
                live = torch.isfinite(logw) & torch.isfinite(ratio)  # a particle dying in this step is not a jump
                plan.jumps.append(torch.where(live, ratio, 0.0).max())
            elif plan.keep_spectrum:  # one kappa for the batch (a fixed lam): keep the result's spectrum
                if kappa != 0.0:
                    x, spec = pot.guidance_step(op, x, yb, m_k, h, kappa, use_triton=plan.use_triton, keep_spectrum=True)
            else:
                flow = pot.implicit_guidance_step if implicit else pot.guidance_step
                x = _per_image(kappa, lambda kap, xb, yy: xb if kap == 0.0 else
                               flow(op, xb, yy, m_k, h, kap, use_triton=plan.use_triton), x, yb)
    new_logw = logw  # weights=False, the unweighted baseline: uniform weights over the live particles
    if plan.weights:
        new_logw = logw + dlw
        if need_value or not same:
            if adaptive:  # the weights before the tempering increment, then the largest lam_n the CESS allows
                base = new_logw - lam_kb * (b_val - a_val)
                if k + 1 == plan.num_steps:
                    lam_n = torch.ones_like(lam_k)
                else:
                    gather = plan.group.all_gather if plan.group is not None else (lambda t: t)
                    lam_n = adaptive_lam(gather(torch.isfinite(base)), gather(b_val), lam_k, plan.tempering_ess)
                    if plan.tempering == "adaptive-linear":
                        lam_n = lam_n.clamp(max=max(plan.lam[k + 1], 0.0)).maximum(lam_k)
                new_logw = base - (lam_n - lam_k).view(B, 1) * b_val
            elif need_value:
                new_logw = new_logw - pot.tempering_change(m_k, raw, lam_n - lam_k)
            else:
                new_logw = new_logw - (lam_n * b_val - lam_k * a_val)
    inc_bad = ~torch.isfinite(dlw.view(B, N)) | ~torch.isfinite(new_logw)
    newly = torch.isfinite(logw) & (score_bad | inc_bad)
    cause = torch.where(score_bad, 2, 3).to(torch.int8) * newly
    logw = torch.where(newly | ~torch.isfinite(logw), -torch.inf, new_logw)
    corrector_score_bad = torch.zeros_like(score_bad)  # a corrector's non-finite score: the cause of the death it makes
    for m in range(plan.corrector_steps):
        finite = torch.isfinite(x).reshape(B, N, -1).all(-1)  # (a non-finite state's score is its state's fault)
        with timer("score"):
            s = _checked(prior.score(x, tn), x, k, tn)
        corrector_score_bad |= finite & ~torch.isfinite(s).reshape(B, N, -1).all(-1)
        if plan.corrector == "song":
            with timer("operator"):
                gn, _ = pot.gradient(op, x, yb, m_n, use_triton=plan.use_triton, spectrum=spec)
            spec = None
            with timer("update"):
                x_new, _ = langevin_step(x.reshape(B * N, D), s.reshape(B * N, D), gn.reshape(B * N, D),
                                         plan.corrector_keys[m][k], num_particles=N, lam=lam_n,
                                         snr=plan.corrector_rs[k], use_triton=plan.use_triton,
                                         live=torch.isfinite(logw).reshape(B * N))  # dead particles do not set e
                x = x_new.reshape(B, N, *event)
        else:
            # "split": Langevin towards Q_{k+1} with the stiff likelihood part integrated exactly. The prior
            # part x + e s + sqrt(2 e) z is the fused step with f = g2 = 0, v2 = 2, h = e (no guidance, lam 0);
            # then the flow dx/dt = -lam_n grad nu over time e. e = 2 (snr sigma)^2: Song's rule for the
            # prior score alone, whose norm is about |z| / sigma.
            e = 2.0 * (plan.corrector_rs[k] * float(sched.sigma(tn))) ** 2
            with timer("update"):
                flat = s.reshape(B * N, D)
                x_new, _ = particle_step(x.reshape(B * N, D), flat, flat, plan.corrector_keys[m][k], num_particles=N,
                                         f=0.0, g2=0.0, v2=2.0, eta=0.0, h=e, lam=0.0, lap_mu=0.0, euler=False,
                                         use_triton=plan.use_triton, row0=plan.row0)
                x = x_new.reshape(B, N, *event)
                spec = None
            with timer("operator"):
                if plan.keep_spectrum:
                    if lam_n != 0.0:
                        x, spec = pot.guidance_step(op, x, yb, m_n, e, lam_n, use_triton=plan.use_triton,
                                                    keep_spectrum=True)
                else:
                    flow = pot.implicit_guidance_step if implicit else pot.guidance_step
                    x = _per_image(lam_n, lambda lam, xb, yy: xb if lam == 0.0 else
                                   flow(op, xb, yy, m_n, e, lam, use_triton=plan.use_triton), x, yb)
    # a particle whose new state is not finite dies now, before resampling could copy it
    new_bad = torch.isfinite(logw) & ~torch.isfinite(x).reshape(B, N, -1).all(-1)
    cause = torch.where(new_bad, torch.where(corrector_score_bad, 2, 1).to(cause.dtype), cause)
    logw = torch.where(new_bad, -torch.inf, logw)
    with timer("resample"):
        last = k == plan.num_steps - 1
        resampling = plan.weights and plan.resample != "none" and not last
        scheme = "systematic" if plan.resample == "none" else plan.resample
        threshold = plan.ess_threshold if resampling else -1.0
        if plan.group is None:
            x, logw, ess, did = resample_and_gather(x, logw, plan.resample_keys[k], scheme=scheme, threshold=threshold,
                                                    use_triton=plan.use_triton, also=() if spec is None else (spec,))
        else:  # every rank resamples the gathered log-weights alike, then the moved rows travel
            anc, new_logw, ess, did = resample(plan.group.all_gather(logw), plan.resample_keys[k], scheme=scheme,
                                               threshold=threshold, use_triton=plan.use_triton)
            x = plan.group.exchange(x, anc)
            logw = new_logw[:, plan.row0:plan.row0 + N]
    timings = {name: v - before.get(name, 0.0) for name, v in timer.t.items()} if timer.enabled else {}
    return (ParticleState(x=x, logw=logw, k=k + 1, lam=lam_n if adaptive else None, spectrum=_Kept.of_state(spec, x),
                          plan=state.plan),
            StepInfo(ess=ess, resampled=did, cause=cause, timings=timings))


def finish(state: ParticleState, plan: Plan) -> tuple[ParticleState, torch.Tensor]:
    """The final ensemble and why particles died in it (``cause (B, N)``, :data:`CAUSES`): ``state.x``, or
    with ``denoise`` the Tweedie estimate ``x0 = (x + sigma^2 s) / alpha`` at ``tau_min``; a particle whose
    final state (or final score) is not finite dies, as in :func:`step`."""
    x, B, N = state.x, plan.batch, plan.num_particles
    _same_plan(state, plan, "finish")
    if state.finished:  # (denoise=True denoised it again)
        raise ValueError("the state is finish()'s result already: finish the state of the last step once")
    if state.k != plan.num_steps:  # (Stage I's start came back as the final ensemble)
        raise ValueError(f"finish takes the state after the plan's last step (k = {plan.num_steps}); this one has "
                         f"taken {state.k}: step it on first")
    score_bad = torch.zeros(B, N, dtype=torch.bool, device=x.device)
    if plan.denoise:
        sched, tmin = plan.prior.schedule, plan.times[-1]
        with plan.timer("score"):
            s = _checked(plan.prior.score(x, tmin), x, "the final denoising", tmin)
        score_bad = ~torch.isfinite(s).reshape(B, N, -1).all(-1)
        x = (x + float(sched.sigma(tmin)) ** 2 * s) / float(sched.alpha(tmin))
    state_bad = ~torch.isfinite(x).reshape(B, N, -1).all(-1)
    newly = torch.isfinite(state.logw) & (state_bad | score_bad)
    cause = torch.where(score_bad, 2, 1).to(torch.int8) * newly
    logw = torch.where(newly | torch.isnan(state.logw), -torch.inf, state.logw)  # (argmax took a NaN for best)
    return ParticleState(x=x, logw=logw, k=state.k, plan=state.plan, finished=True), cause


QUANTISATION_SIGMA = 2.0 / 255 / math.sqrt(12)  # the standard deviation of rounding to 8 bits on [-1, 1]


def _death_hint(code: int, plan) -> str:
    """Why an ensemble died, and what to try: only the changes this run has not made already."""
    if code == 2:
        return "the prior's score returned NaN or inf for them"
    tries = [f"more steps (it had {plan.num_steps})"]
    if plan.guidance != "exact" and getattr(plan.op, "supports_exact", False):
        tries.append("guidance='exact'")
    if plan.tempering == "none":
        tries.append("tempering='linear'")
    if plan.sigma_y < QUANTISATION_SIGMA:
        tries.append(f"a larger sigma_y: {plan.sigma_y:.3g} is below the noise of 8-bit quantisation on [-1, 1] "
                     f"({QUANTISATION_SIGMA:.2g}), and so tight a likelihood is stiff")
    what = ("the particles left the floating-point range" if code == 1
            else "their log-weight increments overflowed")
    return f"{what} (try {', or '.join(tries)})"


GRAPH_CACHE_SIZE = 4
_GRAPHS: "OrderedDict[tuple, _Graphed]" = OrderedDict()


class _Graphed:
    """A captured run: its input buffers, output tensors, and weak references to the prior and operator."""

    def __init__(self, refs, inputs, outputs, graph):
        self.refs, self.inputs, self.outputs, self.graph = refs, inputs, outputs, graph


def clear_graph_cache() -> None:
    """Free every CUDA graph captured by ``sample(..., cuda_graph=True)``."""
    _GRAPHS.clear()


def _graphed_call(key, owners, run, inputs):
    """Replay the graph of ``key`` on ``inputs``; on a miss, run eagerly (which also warms up kernels,
    FFT plans and caches) and capture ``run`` on copies of the inputs for the next call."""
    entry = _GRAPHS.get(key)
    if entry is not None and all(r() is o for r, o in zip(entry.refs, owners)):
        _GRAPHS.move_to_end(key)
        for buf, value in zip(entry.inputs, inputs):
            buf.copy_(value)
        entry.graph.replay()
        return tuple(t.clone() for t in entry.outputs)
    out = run(*inputs)
    static = [t.clone() for t in inputs]
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = run(*static, eager=False)
    _GRAPHS[key] = _Graphed([weakref.ref(o) for o in owners], static, static_out, graph)
    while len(_GRAPHS) > GRAPH_CACHE_SIZE:
        _GRAPHS.popitem(last=False)
    return out


def sample(prior, op, y, sigma_y, *, method: str = "sde", potential: str | None = None, eta: float = 0.5,
           num_particles: int = 16,
           num_steps: int = 100, tempering: str = "linear", guidance: str | None = None, resample: str = "systematic",
           ess_threshold: float = 0.5, corrector_steps: int = 1, corrector: str = "split", corrector_snr: float | tuple = DEFAULT_CORRECTOR_SNR,
           weights: bool = True,
           seed=None, progress=None, backend: str | None = None, dtype: torch.dtype = torch.float32,
           time_power: float = 2.0, denoise: bool = False, profile: bool = False,
           cuda_graph: bool = False, callback=None, particle_group=None, tempering_ess: float = 0.5) -> Result:
    """Sample the posterior ``p(x | y) ∝ p(x) exp(-||y - A x||^2 / (2 sigma_y^2))`` with AFDPS
    (Chen et al. 2025, arXiv 2506.03979).

    The defaults are the best configuration measured with the shipped MNIST prior on the development
    digits (docs/quality.md): the SDE with ``eta = 0.5`` and the Tweedie potential (DPS's guidance with
    exact weights), linear tempering, the time grid power 2, 16 particles, 100 steps. ``potential=None``
    means that potential for the SDE with ``eta = 0.5`` and ``"scaled"`` otherwise
    (:func:`default_potential`; ``Result.potential`` records it). The exactness tests on analytic priors
    pin their own settings (``potential="noisy"``, no tempering, a uniform grid).

    Parameters
    ----------
    prior : a diffusion prior (``score(x, t)``, ``event_shape``, ``schedule``).
    op : a linear operator of :mod:`afdps.ops` with ``input_shape == prior.event_shape``.
    y : (B, *op.output_shape) measurements, one per image (a torch tensor; the public ``afdps.sample``
        also takes NumPy and CuPy arrays and returns results of the same kind).
    sigma_y : measurement noise standard deviation (> 0).
    method : ``"sde"`` (``V = g``; ``eta = 1`` is AFDPS-SDE, ``eta = 0.5`` the FK-corrector baseline) or
        ``"ode"`` (probability-flow predictor plus ``corrector_steps`` Langevin steps, AFDPS-ODE).
    potential : where the likelihood is evaluated along the path (spec section 9, :mod:`afdps.engine.potentials`):
        ``"noisy"`` (``nu = lam mu(x)``, the paper's equations), ``"scaled"`` (``lam mu(x / alpha)``, the
        authors' code), ``"inflated"`` (the residual weighted by ``(alpha^2 sigma_y^2 + sigma^2 A A^T)^-1``)
        or ``"tweedie"`` (``lam mu(x0_hat(x))``, DPS's guidance with exact weights; needs ``eta=0.5``,
        tempering from 0 and a differentiable score; one network VJP and one more call per step). Every
        family ends at ``mu``, so the weights stay exact.
    eta : guidance weight of the SDE (spec section 2), a finite number >= 0 (0: the unguided prior SDE with
        reweighting); unused by ``"ode"``.
    corrector_steps, corrector, corrector_snr : the ODE's Langevin corrector towards the target at the new
        time: ``corrector_steps`` steps (1), by the rule ``"split"`` (the default: a prior Langevin step of
        size ``e = 2 (corrector_snr sigma)^2`` followed by the likelihood flow integrated exactly over ``e``,
        so the stiff likelihood does not shrink the step) or ``"song"`` (Song et al.'s rule on the whole
        drift, ``e = 2 (snr |z| / |s - lam grad nu|)^2`` per image, means over the live particles).
        ``corrector_snr`` is ``r``, or a pair ``(r_early, r_late)``: ``r_early`` for the first
        ``num_steps // 2`` steps, ``r_late`` for the rest (:func:`corrector_schedule`). The default
        ``(0.1, 0.2)`` is at least r = 0.1 on every MNIST development task and exact on the analytic tests,
        which a constant 0.3 is not (docs/quality.md).
    tempering : ``"none"`` (``lam = 1``), ``"linear"`` (``lam`` linear in the noise level), ``"ve-linear"``
        (linear in the VE noise level ``sigma / alpha``, the authors' annealing; see :func:`tempering_schedule`)
        ``"adaptive"`` (each image's next ``lam`` the largest that keeps the ESS of its tempering increment
        at least ``tempering_ess``, by bisection, as in tempered SMC samplers; 0 at the start, 1 at the last
        step; :func:`adaptive_lam`) or ``"adaptive-linear"`` (the same, never above the linear schedule).
        ``Result.lam`` records the path.
    tempering_ess : the ESS target (a fraction of ``N``) of ``tempering="adaptive"``, in (0, 1) (0.5).
    guidance : ``"exact"`` (the guidance flow integrated exactly over each step; the operator must
        diagonalise ``A^T A``), ``"implicit"`` (backward Euler, ``(I + h kappa A^T A)^-1`` applied by conjugate
        gradients: stable for every step, for operators that cannot diagonalise ``A^T A`` such as
        ``Blur(boundary="valid")``; not with ``"inflated"`` or ``cuda_graph``) or ``"euler"`` (explicit).
        ``None``: ``"exact"`` where the operator supports it, else ``"implicit"`` (:func:`default_guidance`).
    resample : ``"systematic"``, ``"stratified"``, ``"multinomial"``, ``"residual"`` or ``"none"``;
        triggered per image when the normalised ESS falls below ``ess_threshold`` (0 disables). The
        ensemble is not resampled after the last step, so the final weights are kept.
    weights : ``True`` or ``False`` (a NumPy bool too); ``False`` ignores the weights (the unweighted guided
        baseline): no reweighting, no resampling, uniform final weights.
    seed : int (every image uses the same random streams, so an image's result depends only on the
        seed and its own measurement, whatever else is in the batch, up to rounding: the prior's batched
        arithmetic rounds differently for other batch sizes), a sequence of one int per image,
        or ``None`` (one seed drawn from torch's global CPU generator, so ``torch.manual_seed`` makes the run
        reproducible; recorded in ``Result.seeds``).
    progress : show a progress bar (``None``: when stderr is a terminal).
    backend : ``"auto"``, ``"torch"`` or ``"triton"`` (default: ``AFDPS_BACKEND`` or ``auto``).
    dtype : particle dtype (float32 or float64).
    time_power : time grid ``tau_k = tau_min + (T - tau_min) (1 - k / K)^time_power`` (VP); 1 is uniform,
        2 puts shorter steps near the data end.
    denoise : ``True`` or ``False``: finish with a Tweedie denoising step ``x0 = (x + sigma^2 s) / alpha`` at
        ``tau_min``.
    profile : time score, operator, update and resampling separately (synchronises; slower). With the
        Tweedie potential the operator work inside its network VJP (``A`` of the Tweedie estimate and its
        backward) counts as score: the two are one autograd pass.
    cuda_graph : capture the whole run (Stage I and every step) in a CUDA graph and replay it in later
        calls with the same prior, operator, shapes and options (new ``y`` and seeds are copied into the
        graph's buffers). The first call runs eagerly and then captures; later calls launch one graph
        instead of thousands of kernels. Needs a CUDA device and the Triton backend; no progress bar
        or ``profile`` in replays; dead ensembles are reported after the run. Graphs are kept for the
        last :data:`GRAPH_CACHE_SIZE` configurations; :func:`clear_graph_cache` frees them.
    callback : ``fn(k, state, info)`` called after step ``k`` (0-based) with the :class:`ParticleState`
        after the step (and after any resampling) and its :class:`StepInfo`: trajectories, live plots,
        custom stopping (raise to stop). Not with ``cuda_graph=True``.
    particle_group : a :class:`afdps.engine.distributed.ParticleGroup`: spread each image's
        ``num_particles`` over its ranks (every rank calls ``sample`` with the same arguments; each computes
        its share, the random streams follow the global particle index, resampling gathers the log-weights
        and exchanges the moved rows). Every rank returns the whole ensemble, equal to a one-process run's
        (bit-identical with an analytic prior). ``callback`` sees the rank's own particles.

    Returns
    -------
    :class:`Result`.
    """
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(k, state, info), got {type(callback).__name__}")
    profile = _check_flag("profile", profile)
    cuda_graph = _check_flag("cuda_graph", cuda_graph)
    if progress is not None:
        progress = _check_flag("progress", progress)  # None: a bar when stderr is a terminal
    if potential is None:
        potential = default_potential(method, check_real("eta", eta, low=0.0), bool(cuda_graph), tempering)
    plan = prepare(prior, op, y, sigma_y, method=method, potential=potential, eta=eta, num_particles=num_particles,
                   num_steps=num_steps,
                   tempering=tempering, guidance=guidance, resample=resample, ess_threshold=ess_threshold,
                   corrector_steps=corrector_steps, corrector=corrector, corrector_snr=corrector_snr, weights=weights,
                   seed=seed,
                   backend=backend, dtype=dtype, time_power=time_power, denoise=denoise, profile=profile,
                   particle_group=particle_group, tempering_ess=tempering_ess)
    device, B, K, N = y.device, plan.batch, plan.num_steps, plan.num_particles
    group = plan.group
    if cuda_graph:
        if device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs y on a CUDA device, got {device}")
        if not plan.use_triton:
            raise ValueError("cuda_graph=True needs the Triton backend (the PyTorch reference resampling synchronises "
                             f"with the host); got backend={_backend.requested_backend(backend)!r}")
        if profile:
            raise ValueError("profile=True times each part with host synchronisations; it cannot run in a CUDA graph")
        if callback is not None:
            raise ValueError("callback= runs Python after each step, which a CUDA-graph replay cannot; use one or "
                             "the other")
        if potential == "tweedie":
            raise ValueError("potential='tweedie' differentiates through the network, which is not captured in a "
                             "CUDA graph here; use cuda_graph=False")
        if group is not None:
            raise ValueError("cuda_graph=True captures one process's run; a particle-parallel run communicates "
                             "between ranks every step (use cuda_graph=False)")
        if tempering in ADAPTIVE:
            raise ValueError(f"tempering={tempering!r} chooses each step's lam on the host from the weights, which a "
                             "CUDA graph cannot; use a fixed tempering ('linear') or cuda_graph=False")
        if plan.guidance == "implicit":
            raise ValueError("guidance='implicit' tests its conjugate-gradient convergence on the host each iteration, "
                             "which a CUDA graph cannot; use cuda_graph=False")
    check_every = 1 if device.type == "cpu" else 16  # host checks for dead ensembles (a sync) on GPUs
    t_list = plan.times

    def raise_if_dead(dead_step, dead_cause):
        dead = dead_step >= 0
        if bool(dead.any()):
            b = int(dead.nonzero()[0])
            k_dead, code = int(dead_step[b]), int(dead_cause[b])
            when = (f"after step {k_dead} (tau={t_list[k_dead]:.4g} -> {t_list[k_dead + 1]:.4g})" if k_dead < K
                    else "in the final state" + (" (the final denoising)" if denoise else ""))
            raise EnsembleDied(f"every particle of image {{image}} has died {when}: {CAUSES[code]}: ", b,
                               detail=_death_hint(code, plan))

    # the tempering path on the device before any capture (a host-to-device copy cannot be captured); the
    # closure keeps it alive for the graph's replays
    lam_path = torch.tensor(plan.lam, dtype=torch.float64, device=device)

    def run(*inputs, eager=True):
        """Stage I and the K steps; ``eager=False`` (CUDA-graph capture): no host checks, no progress bar."""
        run_plan = plan.with_keys(*inputs)
        dead_step = torch.full((B,), -1, dtype=torch.long, device=device)
        dead_cause = torch.zeros(B, dtype=torch.int8, device=device)
        ess_trace = torch.ones(K, B, dtype=torch.float64, device=device)
        resampled = torch.zeros(K, B, dtype=torch.bool, device=device)
        lam_trace = lam_path[:, None].repeat(1, B)
        sync_each_step = eager and check_every == 1

        def record(k, logw, cause):
            # per image: whether a particle lives, and which causes of death this step saw, reported as a
            # non-finite score first (the most telling), then a non-finite state, then an increment; across
            # ranks one small gather of these flags (whether an image emptied is about all its particles)
            flags = torch.stack([torch.isfinite(logw).any(1), (cause == 2).any(1), (cause == 1).any(1)], 1)
            if group is not None:
                flags = group.all_gather(flags[:, None], dim=1).any(1)
            alive = flags[:, 0]
            if sync_each_step and bool(alive.all()):
                return  # the CPU checks every step: nothing to record unless an image emptied (one small test)
            emptied = ~alive & (dead_step < 0)
            code = torch.where(flags[:, 1], 2, torch.where(flags[:, 2], 1, 3)).to(torch.int8)
            dead_step.copy_(torch.where(emptied, k, dead_step))
            dead_cause.copy_(torch.where(emptied, code, dead_cause))

        state = init(run_plan)
        bar = progress_bar(K, f"afdps-{method}", progress if eager else False)
        try:
            for k in range(K):
                state, info = step(state, run_plan)
                ess_trace[k] = info.ess
                resampled[k] = info.resampled
                if state.lam is not None:
                    lam_trace[k + 1] = state.lam
                record(k, state.logw, info.cause)
                if eager and ((k + 1) % check_every == 0 or k == K - 1):
                    raise_if_dead(dead_step, dead_cause)
                if callback is not None:
                    callback(k, state, info)
                bar.update(1)
                if eager and (k + 1) % check_every == 0:
                    bar.set_postfix(ess=f"{float(ess_trace[k].min()):.2f}")
        finally:
            bar.close()
        state, cause = finish(state, run_plan)
        record(K, state.logw, cause)
        if group is not None:
            return (group.all_gather(state.x), group.all_gather(state.logw), ess_trace, resampled, dead_step, dead_cause,
                    lam_trace)
        return state.x, state.logw, ess_trace, resampled, dead_step, dead_cause, lam_trace

    if cuda_graph:
        key = (id(prior), id(op), tuple(y.shape), str(device), dtype, method, potential, float(eta), N, K, tempering,
               guidance,
               resample, float(ess_threshold), plan.corrector_steps, corrector, plan.corrector_snr, weights,
               float(time_power),
               denoise, plan.sigma_y, plan.use_triton)
        x, logw, ess_trace, resampled, dead_step, dead_cause, lam_trace = _graphed_call(key, (prior, op), run, plan.keys)
    else:
        x, logw, ess_trace, resampled, dead_step, dead_cause, lam_trace = run(*plan.keys)
    raise_if_dead(dead_step, dead_cause)
    jump = None
    if plan.jumps:
        j = torch.stack(plan.jumps).max().reshape(1, 1)
        jump = float((plan.group.all_gather(j) if plan.group is not None else j).max())  # over every rank's particles
        plan.jumps.clear()
    if jump is not None and not jump <= WARN_MOVE:
        warnings.warn(f"potential='tweedie': a guidance step would have moved particles by {jump:.3g} times their RMS "
                      f"and was shortened to {MAX_MOVE:g} (afdps.engine.sampler.MAX_MOVE): the time grid is coarse for "
                      f"this prior and operator, and the weights are exact only as the steps shrink. More steps "
                      f"(num_steps={K} now; at 60 every move of a live particle stayed within the cap on the shipped MNIST "
                      f"prior's box and 70%-missing tasks, 10 digits) or "
                      f"potential='scaled' avoid it", RuntimeWarning, stacklevel=3)
    nfe = K * (1 + plan.corrector_steps) + int(denoise) + (K - 1 if potential == "tweedie" else 0)
    res = Result(particles=x, log_weights=logw, ess=ess_trace.cpu(), resampled=resampled.cpu(), seeds=plan.seeds,
                 nfe=nfe, timings=plan.timer.t)
    res.potential = plan.potential
    res.guidance_jump = jump
    res._lam = lam_trace.T.contiguous().cpu()
    return res


@torch.no_grad()
def sample_prior(prior, num_samples: int, *, num_steps: int = 100, method: str = "sde", seed=None, progress=None,
                 dtype: torch.dtype = torch.float32, device=None, batch_size: int | None = None,
                 clip_denoised: bool = True, timesteps=None) -> torch.Tensor:
    """Unconditional samples ``(num_samples, *event)`` from ``N(0, rho^2 I)`` on ``prior.schedule``'s grid,
    with the Philox streams of :func:`sample` (an int ``seed`` gives the same draws every time; ``None`` draws
    the seed from torch's global CPU generator, so ``torch.manual_seed`` makes it reproducible).

    ``method``: ``"sde"`` (reverse SDE, Euler-Maruyama), ``"ode"`` (probability flow, Euler) or ``"ddpm"``
    (ancestral sampling, Ho et al. 2020: each step estimates ``x0 = (x + sigma^2 s) / alpha``, clipped to
    [-1, 1] if ``clip_denoised``, and draws :func:`afdps.engine.schedules.ancestral_step`; the last step
    returns ``x0``). The point estimate of ``x0`` leaves out its posterior spread, so coarse DDPM grids
    under-disperse (a Gaussian of standard deviation 0.5 comes out near 0.47 with 100 steps).
    ``timesteps`` (a decreasing sequence of times) replaces the grid ``schedule.timesteps(num_steps)``;
    ``batch_size`` bounds the rows per score call; ``device`` defaults to the network's (else the CPU).
    """
    check_choice("method", method, PRIOR_METHODS)
    n = check_int("num_samples", num_samples, 1)
    sched = prior.schedule
    if timesteps is None:
        t_list = sched.timesteps(check_int("num_steps", num_steps, 1, MAX_STEPS, STEPS_WHY)).tolist()
    else:
        t_list = [float(t) for t in timesteps]
        if len(t_list) < 2 or any(b >= a for a, b in zip(t_list, t_list[1:])):
            raise ValueError(f"timesteps must be at least two decreasing times, got {t_list[:5]}")
        if not (0.0 < t_list[-1] and t_list[0] <= sched.T * (1 + 1e-12)):
            raise ValueError(f"timesteps must lie in (0, {sched.T:g}] (the schedule's times; t = 0 is the data), got "
                             f"{t_list[0]:g} down to {t_list[-1]:g}")
    K = len(t_list) - 1
    chunk = check_int("batch_size", batch_size, 1) if batch_size is not None else n
    event = tuple(prior.event_shape)
    D = math.prod(event)
    if seed is not None and not isinstance(seed, (str, bytes)) and np.ndim(seed) > 0:  # (it said "one int per image")
        raise ValueError(f"seed must be an int or None (one stream draws all {n} samples), got {seed!r}")
    if dtype not in (torch.float32, torch.float64):  # as sample() (float16 was taken here)
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    seeds = per_image_seeds(seed, 1)
    if device is None:
        params = list(prior.net.parameters()) if isinstance(getattr(prior, "net", None), torch.nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    device = torch.device(device)
    if getattr(prior, "batch_size", None) == "auto" and hasattr(prior, "network_batch"):  # as sample() chooses it
        free = available_memory(device)
        itemsize = torch.empty(0, dtype=dtype).element_size()
        prior.network_batch(n, None if free is None else max(free - PARTICLE_COPIES * n * D * itemsize, 0))

    def score(x, t):
        return torch.cat([prior.score(x[i:i + chunk], t) for i in range(0, n, chunk)])

    def noise(k):
        return randn_rows(stream_keys(seeds, k, PURPOSE["step"], device), n, D).to(dtype).reshape(n, *event)

    x = sched.rho * randn_rows(stream_keys(seeds, 0, PURPOSE["stage1"], device), n, D).to(dtype).reshape(n, *event)
    bar = progress_bar(K, f"prior-{method}", progress)
    try:
        for k in range(K):
            t, tn = t_list[k], t_list[k + 1]
            h = t - tn
            f, g2 = float(sched.f(t)), float(sched.g2(t))
            s = score(x, t)
            if method == "sde":
                x = x + h * (-f * x + g2 * s) + math.sqrt(g2 * h) * noise(k + 1)
            elif method == "ode":
                x = x + h * (-f * x + 0.5 * g2 * s)
            else:
                x0 = (x + float(sched.sigma(t)) ** 2 * s) / float(sched.alpha(t))
                if clip_denoised:
                    x0 = x0.clamp(-1.0, 1.0)
                x = x0 if k == K - 1 else ancestral_step(sched, x, x0, t, tn, noise(k + 1))
            bar.update(1)
    finally:
        bar.close()
    return x
