"""Score networks (priors): the ADM UNet of the public guided-diffusion checkpoints."""
from .adm import ADM_PRESETS, ADMUNet, adm_config

__all__ = ["ADMUNet", "adm_config", "ADM_PRESETS"]
