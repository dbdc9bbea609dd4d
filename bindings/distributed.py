"""Many processes (re-exported from :mod:`afdps.engine.distributed`): ``init_from_env`` joins torchrun's
process group; ``ParticleGroup`` spreads each image's particles across its ranks (``afdps.sample(...,
particle_group=ParticleGroup())``); ``shard`` splits a list of images between ranks; ``check_agree`` refuses, on
every rank alike, work that differs between ranks."""
from .engine.distributed import ParticleGroup, check_agree, env_world, init_from_env, shard

__all__ = ["ParticleGroup", "check_agree", "env_world", "init_from_env", "shard"]
