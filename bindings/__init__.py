"""afdps: approximation-free diffusion posterior sampling."""
__version__ = "0.1.0"
