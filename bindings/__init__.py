"""afdps: approximation-free diffusion posterior sampling (weighted particle ensembles).

The public API: :func:`sample` (and its steppable parts :class:`ParticleState`, :class:`StepInfo`),
the schedules, :mod:`afdps.priors`, :mod:`afdps.ops`, :mod:`afdps.models`, :mod:`afdps.baselines`, the
loaders of learned priors and the bundled data.
"""
from . import baselines, distributed, models, ops, priors, sampler
from .api import load_classifier, load_mnist_test, load_prior, sample
from .engine.data import from_unit, load_photo, prior_photos, to_unit
from .engine.metrics import psnr, ssim
from .engine.sampler import ParticleState, Result, StepInfo, clear_graph_cache, sample_prior, tempering_schedule
from .engine.schedules import VESchedule, VPSchedule

__version__ = "0.1.0"

__all__ = ["sample", "sample_prior", "Result", "ParticleState", "StepInfo", "VPSchedule", "VESchedule", "priors",
           "ops", "models", "baselines", "sampler", "distributed", "tempering_schedule", "load_prior", "load_classifier", "load_mnist_test",
           "load_photo", "prior_photos", "to_unit", "from_unit", "psnr", "ssim", "clear_graph_cache"]
