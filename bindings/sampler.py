"""The steppable sampler (re-exported from :mod:`afdps.engine.sampler`): ``prepare`` a run, ``init`` its
Stage-I ensemble, ``step`` it, ``finish`` it. Torch tensors only; :func:`afdps.sample` is this loop."""
from .engine.sampler import ParticleState, Plan, StepInfo, finish, init, prepare, step

__all__ = ["ParticleState", "Plan", "StepInfo", "prepare", "init", "step", "finish"]
