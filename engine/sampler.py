"""AFDPS: weighted particle ensembles following the exactly derived guided reverse diffusion.

:func:`sample` runs, for each image of a batch, ``N`` particles from an exact Stage-I start through
``num_steps`` steps of the guided reverse SDE (or the probability-flow ODE with a Langevin corrector),
updating log-weights and resampling when the effective sample size drops (spec sections 2 to 6).
"""
from __future__ import annotations

import math
import secrets
import sys
import time
import weakref
from collections import OrderedDict
from typing import Sequence

import torch

from afdps.kernels import backend as _backend
from afdps.kernels.particle_step import langevin_step, particle_step
from afdps.kernels.philox import PURPOSE, randn_rows, stream_keys
from afdps.kernels.resample import SCHEMES, normalize_log_weights, resample_and_gather

__all__ = ["sample", "sample_prior", "Result", "tempering_schedule", "clear_graph_cache", "GRAPH_CACHE_SIZE"]

METHODS = ("sde", "ode")
TEMPERINGS = ("none", "linear")
GUIDANCES = ("exact", "euler")
RESAMPLINGS = SCHEMES + ("none",)


class Result:
    """A weighted ensemble per image.

    Arrays come back as the kind of ``y`` that was passed in (torch tensor, NumPy array or CuPy array).

    Attributes
    ----------
    particles : (B, N, *event) final particles.
    log_weights : (B, N) float64 final log-weights (unnormalised; ``-inf`` for dead particles).
    ess : (num_steps, B) normalised effective sample size after each step, before any resampling.
    resampled : (num_steps, B) bool, where an image's ensemble was resampled.
    seeds : the per-image seeds used (pass them back to reproduce the run).
    nfe : score evaluations per particle.
    timings : seconds spent in ``stage1``, ``score``, ``operator``, ``update``, ``resample``
        (when ``profile=True``).
    """

    def __init__(self, particles, log_weights, ess, resampled, seeds, nfe, timings=None, kind="torch"):
        self._particles, self._log_weights = particles, log_weights
        self._ess, self._resampled = ess, resampled
        self.seeds, self.nfe, self.timings, self.kind = seeds, nfe, dict(timings or {}), kind

    def _out(self, t):
        if self.kind == "torch":
            return t
        from afdps.interop import from_torch

        return from_torch(t, self.kind)

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
    def resample_steps(self) -> list[list[int]]:
        """For each image, the steps after which it was resampled."""
        return [torch.nonzero(self._resampled[:, b]).flatten().tolist() for b in range(self._resampled.shape[1])]

    def _weights(self) -> torch.Tensor:
        return normalize_log_weights(self._log_weights)[0]

    @property
    def weights(self):
        """(B, N) normalised weights (float64)."""
        return self._out(self._weights())

    def _w(self) -> torch.Tensor:
        w = self._weights().to(self._particles.device)
        return w.reshape(*w.shape, *([1] * (self._particles.dim() - 2)))

    @property
    def best(self):
        """(B, *event) the highest-weight particle of each image."""
        p = self._particles
        idx = torch.argmax(self._log_weights, dim=1).to(p.device)
        return self._out(p[torch.arange(p.shape[0], device=idx.device), idx])

    @property
    def mean(self):
        """(B, *event) weighted mean (the MMSE estimate)."""
        return self._out((self._w() * self._particles.to(torch.float64)).sum(1).to(self._particles.dtype))

    @property
    def std(self):
        """(B, *event) weighted per-pixel standard deviation (an uncertainty map)."""
        p = self._particles.to(torch.float64)
        w = self._w()
        m = (w * p).sum(1, keepdim=True)
        return self._out((w * (p - m).square()).sum(1).sqrt().to(self._particles.dtype))

    def __repr__(self):
        B, N = self._log_weights.shape
        return f"Result(images={B}, particles={N}, event={tuple(self._particles.shape[2:])}, nfe={self.nfe}, kind={self.kind!r})"


def tempering_schedule(kind: str, schedule, times: torch.Tensor) -> list[float]:
    """``lam`` at each grid time: ``none`` -> 1 everywhere; ``linear`` -> linear in the noise level
    ``sigma``, 0 at the first (noisiest) time and 1 at the last, so the final target is the posterior."""
    if kind == "none":
        return [1.0] * len(times)
    sig = schedule.sigma(times)
    lam = (sig[0] - sig) / (sig[0] - sig[-1])
    return lam.clamp(0.0, 1.0).tolist()


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")


def _check_int(name, value, minimum):
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _seeds(seed, B: int) -> list[int]:
    if seed is None:
        return [secrets.randbits(63)] * B
    if isinstance(seed, int) and not isinstance(seed, bool):
        return [seed] * B
    seeds = [int(s) for s in seed]
    if len(seeds) != B:
        raise ValueError(f"seed must be an int or one int per image ({B}), got {len(seeds)} seeds")
    return seeds


class _Timer:
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


def _progress(progress, total, desc):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def _check_problem(prior, op, y, sigma_y):
    """Validate a posterior problem shared by the samplers: ``(y as torch, its kind, sigma_y, event shape)``."""
    sigma_y = float(sigma_y)
    if not (sigma_y > 0 and math.isfinite(sigma_y)):
        raise ValueError(f"sigma_y must be positive and finite, got {sigma_y!r}")
    event = tuple(prior.event_shape)
    if tuple(op.input_shape) != event:
        raise ValueError(f"operator input shape {tuple(op.input_shape)} does not match the prior's event shape {event}")
    from afdps.interop import to_torch

    y, kind = to_torch(y)
    out_shape = tuple(op.output_shape)
    if y.dim() != len(out_shape) + 1 or tuple(y.shape[1:]) != out_shape:
        raise ValueError(f"y must have shape (B, *{out_shape}) with a leading batch dimension, got {tuple(y.shape)}"
                         + (" (use y[None] for one image)" if tuple(y.shape) == out_shape else ""))
    if not torch.isfinite(y).all():
        bad = (~torch.isfinite(y)).reshape(y.shape[0], -1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"y has non-finite values (images {bad})")
    return y, kind, sigma_y, event


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


def sample(prior, op, y, sigma_y, *, method: str = "sde", eta: float = 1.0, num_particles: int = 64,
           num_steps: int = 100, tempering: str = "none", guidance: str = "exact", resample: str = "systematic",
           ess_threshold: float = 0.5, corrector_steps: int = 1, corrector_snr: float = 0.1, weights: bool = True,
           seed=None, progress=None, backend: str | None = None, dtype: torch.dtype = torch.float32,
           time_power: float = 1.0, denoise: bool = False, profile: bool = False,
           cuda_graph: bool = False) -> Result:
    """Sample the posterior ``p(x | y) ∝ p(x) exp(-||y - A x||^2 / (2 sigma_y^2))`` with AFDPS
    (Chen et al. 2025, arXiv 2506.03979).

    Parameters
    ----------
    prior : a diffusion prior (``score(x, t)``, ``event_shape``, ``schedule``).
    op : a linear operator of :mod:`afdps.ops` with ``input_shape == prior.event_shape``.
    y : (B, *op.output_shape) measurements, one per image: a torch tensor, NumPy array or CuPy array
        (shared without a copy); the result's arrays are of the same kind.
    sigma_y : measurement noise standard deviation (> 0).
    method : ``"sde"`` (``V = g``; ``eta = 1`` is AFDPS-SDE, ``eta = 0.5`` the FK-corrector baseline) or
        ``"ode"`` (probability-flow predictor plus ``corrector_steps`` Langevin steps, AFDPS-ODE).
    eta : guidance weight of the SDE (spec section 2); any real value; unused by ``"ode"``.
    tempering : ``"none"`` (``lam = 1``) or ``"linear"`` (``lam`` linear in the noise level).
    guidance : ``"exact"`` (the guidance flow integrated exactly over each step; the operator must
        diagonalise ``A^T A``) or ``"euler"`` (explicit).
    resample : ``"systematic"``, ``"stratified"``, ``"multinomial"``, ``"residual"`` or ``"none"``;
        triggered per image when the normalised ESS falls below ``ess_threshold`` (0 disables). The
        ensemble is not resampled after the last step, so the final weights are kept.
    weights : ``False`` ignores the weights (the unweighted guided baseline): no reweighting, no
        resampling, uniform final weights.
    seed : int (every image uses the same random streams, so an image's result depends only on the
        seed and its own measurement, whatever else is in the batch), a sequence of one int per image,
        or ``None`` (a fresh random seed, recorded in ``Result.seeds``).
    progress : show a progress bar (``None``: when stderr is a terminal).
    backend : ``"auto"``, ``"torch"`` or ``"triton"`` (default: ``AFDPS_BACKEND`` or ``auto``).
    dtype : particle dtype (float32 or float64).
    time_power : time grid ``tau_k = tau_min + (T - tau_min) (1 - k / K)^time_power`` (VP); 1 is uniform,
        2 puts shorter steps near the data end.
    denoise : finish with a Tweedie denoising step ``x0 = (x + sigma^2 s) / alpha`` at ``tau_min``.
    profile : time score, operator, update and resampling separately (synchronises; slower).
    cuda_graph : capture the whole run (Stage I and every step) in a CUDA graph and replay it in later
        calls with the same prior, operator, shapes and options (new ``y`` and seeds are copied into the
        graph's buffers). The first call runs eagerly and then captures; later calls launch one graph
        instead of thousands of kernels. Needs a CUDA device and the Triton backend; no progress bar
        or ``profile`` in replays; dead ensembles are reported after the run. Graphs are kept for the
        last :data:`GRAPH_CACHE_SIZE` configurations; :func:`clear_graph_cache` frees them.

    Returns
    -------
    :class:`Result`.
    """
    # ---- validation -------------------------------------------------------------------------
    _check_choice("method", method, METHODS)
    _check_choice("tempering", tempering, TEMPERINGS)
    _check_choice("guidance", guidance, GUIDANCES)
    _check_choice("resample", resample, RESAMPLINGS)
    N = _check_int("num_particles", num_particles, 1)
    K = _check_int("num_steps", num_steps, 1)
    M = _check_int("corrector_steps", corrector_steps, 0)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if not math.isfinite(float(eta)):
        raise ValueError(f"eta must be finite, got {eta!r}")
    if not (0.0 <= float(ess_threshold) <= 1.0):
        raise ValueError(f"ess_threshold must be in [0, 1], got {ess_threshold!r}")
    if not (float(corrector_snr) > 0 and math.isfinite(float(corrector_snr))):
        raise ValueError(f"corrector_snr must be positive and finite, got {corrector_snr!r}")
    y, kind, sigma_y, event = _check_problem(prior, op, y, sigma_y)
    if guidance == "exact" and not getattr(op, "supports_exact", False):
        raise ValueError(f"guidance='exact' needs an operator that diagonalises A^T A; {type(op).__name__} does not "
                         "(use guidance='euler')")
    device = y.device
    use_triton = _backend.use_triton_for(device, backend)
    if cuda_graph:
        if device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs y on a CUDA device, got {device}")
        if not use_triton:
            raise ValueError("cuda_graph=True needs the Triton backend (the PyTorch reference resampling synchronises "
                             f"with the host); got backend={_backend.requested_backend(backend)!r}")
        if profile:
            raise ValueError("profile=True times each part with host synchronisations; it cannot run in a CUDA graph")
    y = y.to(dtype)
    B = y.shape[0]
    D = math.prod(event)
    seeds = _seeds(seed, B)
    sde = method == "sde"
    eta = float(eta)

    sched = prior.schedule
    times = sched.timesteps(K, float(time_power))
    t_list = times.tolist()
    lam = tempering_schedule(tempering, sched, times)
    lap_mu = op.frobenius_sq() / sigma_y**2
    timer = _Timer(profile, device)

    # Every key of the run, made once: no host-to-device traffic inside the loop.
    def keys(purpose):
        return torch.stack([stream_keys(seeds, k + 1, purpose, device) for k in range(K)])

    inputs = (y, stream_keys(seeds, 0, PURPOSE["stage1"], device), keys(PURPOSE["step"]), keys(PURPOSE["resample"]),
              *[keys(PURPOSE["corrector"] + m) for m in range(M if not sde else 0)])
    check_every = 1 if device.type == "cpu" else 16  # host checks for dead ensembles (a sync) on GPUs

    def raise_if_dead(first_dead):
        dead = first_dead >= 0
        if bool(dead.any()):
            b = int(dead.nonzero()[0])
            k_dead = int(first_dead[b])
            raise FloatingPointError(
                f"every particle of image {b} has a non-finite log-weight after step {k_dead} "
                f"(tau={t_list[k_dead]:.4g} -> {t_list[k_dead + 1]:.4g}); the ensemble is dead (try more steps, "
                "guidance='exact', or tempering='linear')")

    def run(y, stage1_keys, step_keys, resample_keys, *corrector_keys, eager=True):
        """Stage I and the K steps; ``eager=False`` (CUDA-graph capture): no host checks, no progress bar."""
        yb = y.unsqueeze(1)  # (B, 1, *out) broadcasts over particles
        first_dead = torch.full((B,), -1, dtype=torch.long, device=device)
        # ---- Stage I: exact sample of N(0, rho^2 I) exp(-lam(T) mu) -------------------------------
        with timer("stage1"):
            noise = randn_rows(stage1_keys, N, D).to(dtype).reshape(B, N, *event)
            x = op.stage1_sample(yb, sigma_y, lam[0], sched.rho, noise)
        logw = torch.zeros(B, N, dtype=torch.float64, device=device)
        ess_trace = torch.ones(K, B, dtype=torch.float64, device=device)
        resampled = torch.zeros(K, B, dtype=torch.bool, device=device)
        bar = _progress(progress, K, f"afdps-{method}") if eager else None
        try:
            for k in range(K):
                t, tn = t_list[k], t_list[k + 1]
                h = t - tn
                lam_k, lam_n = lam[k], lam[k + 1]
                f, g2 = float(sched.f(t)), float(sched.g2(t))
                v2 = g2 if sde else 0.0
                with timer("score"):
                    s = prior.score(x, t)
                need_mu = weights and lam_n != lam_k
                with timer("operator"):
                    r, rnorm = op.normal_residual(x, yb, with_norm=need_mu, use_triton=use_triton)
                kappa = eta * v2 * lam_k / sigma_y**2
                with timer("update"):
                    x_new, dlw = particle_step(
                        x.reshape(B * N, D), s.reshape(B * N, D), (r / sigma_y**2).reshape(B * N, D),
                        step_keys[k], num_particles=N, f=f, g2=g2, v2=v2,
                        eta=eta, h=h, lam=lam_k, lap_mu=lap_mu, euler=guidance == "euler", use_triton=use_triton)
                    x = x_new.reshape(B, N, *event)
                if guidance == "exact" and kappa != 0.0:
                    with timer("operator"):
                        x = op.exact_guidance_step(x, yb, h, kappa, use_triton=use_triton)
                if weights:
                    logw = logw + dlw.view(B, N)
                    if need_mu:
                        logw = logw - (lam_n - lam_k) * rnorm / (2.0 * sigma_y**2)
                for m in range(len(corrector_keys)):
                    with timer("score"):
                        s = prior.score(x, tn)
                    with timer("operator"):
                        r, _ = op.normal_residual(x, yb, use_triton=use_triton)
                    with timer("update"):
                        x_new, _ = langevin_step(
                            x.reshape(B * N, D), s.reshape(B * N, D), (r / sigma_y**2).reshape(B * N, D),
                            corrector_keys[m][k], num_particles=N,
                            lam=lam_n, snr=float(corrector_snr), use_triton=use_triton)
                        x = x_new.reshape(B, N, *event)
                if weights:
                    with timer("resample"):
                        threshold = ess_threshold if (resample != "none" and k < K - 1) else -1.0
                        x, logw, ess, did = resample_and_gather(
                            x, logw, resample_keys[k], scheme="systematic" if resample == "none" else resample,
                            threshold=threshold, use_triton=use_triton)
                        first_dead = torch.where(torch.isnan(ess) & (first_dead < 0), k, first_dead)
                        ess_trace[k] = ess
                        resampled[k] = did
                        if eager and ((k + 1) % check_every == 0 or k == K - 1):
                            raise_if_dead(first_dead)
                if bar is not None:
                    bar.update(1)
                    if (k + 1) % check_every == 0:
                        bar.set_postfix(ess=f"{float(ess_trace[k].min()):.2f}")
        finally:
            if bar is not None:
                bar.close()
        if denoise:
            tmin = t_list[-1]
            with timer("score"):
                s = prior.score(x, tmin)
            x = (x + float(sched.sigma(tmin)) ** 2 * s) / float(sched.alpha(tmin))
        return x, logw, ess_trace, resampled, first_dead

    if cuda_graph:
        key = (id(prior), id(op), tuple(y.shape), str(device), dtype, method, eta, N, K, tempering, guidance, resample,
               float(ess_threshold), M, float(corrector_snr), weights, float(time_power), denoise, sigma_y,
               use_triton)
        x, logw, ess_trace, resampled, first_dead = _graphed_call(key, (prior, op), run, inputs)
        raise_if_dead(first_dead)
    else:
        x, logw, ess_trace, resampled, first_dead = run(*inputs)
    nfe = K * (1 + (0 if sde else M)) + int(denoise)
    return Result(particles=x, log_weights=logw, ess=ess_trace.cpu(), resampled=resampled.cpu(), seeds=seeds,
                  nfe=nfe, timings=timer.t, kind=kind)


def sample_prior(prior, num_samples: int, *, num_steps: int = 100, method: str = "sde", seed=None,
                 progress=None, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Unconditional samples ``(num_samples, *event)`` by the reverse SDE (Euler-Maruyama) or the
    probability-flow ODE (Euler) from ``N(0, rho^2 I)``, with the same Philox streams as :func:`sample`."""
    _check_choice("method", method, METHODS)
    n = _check_int("num_samples", num_samples, 1)
    K = _check_int("num_steps", num_steps, 1)
    event = tuple(prior.event_shape)
    D = math.prod(event)
    seeds = _seeds(seed, 1)
    sched = prior.schedule
    t_list = sched.timesteps(K).tolist()
    device = torch.device(device) if device is not None else torch.device("cpu")
    x = sched.rho * randn_rows(stream_keys(seeds, 0, PURPOSE["stage1"], device), n, D).to(dtype).reshape(n, *event)
    bar = _progress(progress, K, "prior")
    for k in range(K):
        t, tn = t_list[k], t_list[k + 1]
        h = t - tn
        f, g2 = float(sched.f(t)), float(sched.g2(t))
        s = prior.score(x, t)
        if method == "sde":
            z = randn_rows(stream_keys(seeds, k + 1, PURPOSE["step"], device), n, D).to(dtype).reshape(x.shape)
            x = x + h * (-f * x + g2 * s) + math.sqrt(g2 * h) * z
        else:
            x = x + h * (-f * x + 0.5 * g2 * s)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return x
