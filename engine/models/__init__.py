"""Networks: the ADM UNet of the public guided-diffusion checkpoints (score networks) and the digit classifier."""
from .adm import ADM_PRESETS, ADMUNet, adm_config
from .classifier import MNISTClassifier, classify

__all__ = ["ADMUNet", "adm_config", "ADM_PRESETS", "MNISTClassifier", "classify"]
