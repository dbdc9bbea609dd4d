"""The steppable sampler (re-exported from :mod:`afdps.engine.sampler`): ``prepare`` a run, ``init`` its
Stage-I ensemble, ``step`` it, ``finish`` it. Torch tensors only; :func:`afdps.sample` is this loop. ``adaptive_lam`` is the rule of
``tempering="adaptive"``."""
from .engine.sampler import (ParticleState, Plan, StepInfo, UnusedOptionsWarning, adaptive_lam, finish, init,
                              prepare, step)

__all__ = ["ParticleState", "Plan", "StepInfo", "prepare", "init", "step", "finish", "adaptive_lam",
           "UnusedOptionsWarning"]
