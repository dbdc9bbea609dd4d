"""Many processes (re-exported from :mod:`afdps.engine.distributed`): ``init_from_env`` joins torchrun's
process group; ``ParticleGroup`` spreads each image's particles across its ranks (``afdps.sample(...,
particle_group=ParticleGroup())``); ``shard`` splits a list of images between ranks; ``check_agree`` refuses, on
every rank alike, work that differs between ranks; ``check_shared_folder`` refuses a folder that the ranks do not
share."""
from .engine.distributed import ParticleGroup, check_agree, check_shared_folder, env_world, init_from_env, shard

__all__ = ["ParticleGroup", "check_agree", "check_shared_folder", "env_world", "init_from_env", "shard"]
