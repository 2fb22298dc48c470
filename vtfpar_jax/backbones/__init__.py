"""The frozen backbones outside their Flax towers: one module per backbone (clip.py,
siglip.py) with its entry in `registry`, their weight files (HF, OpenAI), tokenizers, and the
attribute text features computed once per run.

Importing the package registers the backbones it ships.
"""

from vtfpar_jax.backbones import clip, siglip  # noqa: F401  (each registers itself)
