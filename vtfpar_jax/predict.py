"""Prediction: logits and probabilities for clips, from a trained or converted model."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vtfpar_jax.models import clip, vtfpar


@functools.partial(jax.jit, static_argnums=0)
def _logits(cfg: vtfpar.VTFPARConfig, variables, video, text_features):
    model_vars = {k: v for k, v in variables.items() if k != "clip"}
    logits, _ = vtfpar.apply(cfg, model_vars, variables["clip"], video, text_features)
    return logits


def compute_logits(config: vtfpar.VTFPARConfig, variables: Mapping[str, Any],
                   video: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Evaluation-mode logits (B, A) for video (B, T, H, W, 3) float32 already
    normalised and attribute token ids (A, 77); `variables` holds 'params',
    'batch_stats' and the CLIP tree under 'clip'."""
    text = clip.text_features(config.clip, variables["clip"], jnp.asarray(tokens),
                              vtfpar.DTYPES[config.clip_dtype])
    return np.asarray(_logits(config, variables, jnp.asarray(video, jnp.float32), text))
