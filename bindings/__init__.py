"""afdps: approximation-free diffusion posterior sampling (weighted particle ensembles).

The public API: :func:`sample`, the schedules, :mod:`afdps.priors` and :mod:`afdps.ops`.
"""
from afdps.engine.loading import load_classifier, load_prior
from afdps.engine.sampler import Result, clear_graph_cache, sample, sample_prior, tempering_schedule
from afdps.engine.schedules import VESchedule, VPSchedule

from . import baselines, ops, priors

__version__ = "0.1.0"

__all__ = ["sample", "sample_prior", "Result", "VPSchedule", "VESchedule", "priors", "ops", "tempering_schedule",
           "load_prior", "load_classifier", "baselines",
           "clear_graph_cache"]
