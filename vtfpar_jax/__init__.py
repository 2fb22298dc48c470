"""VTFPAR++ in JAX/Flax: video pedestrian attribute recognition by side-tuning a frozen CLIP."""

__version__ = "0.1.0"
