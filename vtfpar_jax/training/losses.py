"""The published loss: BCE with logits, weighted by how rare each label value is."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def weighted_bce(logits: jax.Array, labels: jax.Array, positive_ratio: jax.Array,
                 mask: jax.Array | None = None) -> jax.Array:
    """docs/published-model.md §8: w = exp(m (1 - r) + (1 - m) r) with m = [y > 0.5];
    loss = sum over batch and attributes of w * BCE(logit, y), divided by B.

    logits, labels (B, A); positive_ratio (A,) over the training labels; mask
    (B,) drops padded rows (B then counts the real ones).
    """
    logits = logits.astype(jnp.float32)
    labels = labels.astype(jnp.float32)
    positive = (labels > 0.5).astype(jnp.float32)
    weights = jnp.exp(positive * (1.0 - positive_ratio) + (1.0 - positive) * positive_ratio)
    per_example = (weights * optax.sigmoid_binary_cross_entropy(logits, labels)).sum(axis=-1)
    if mask is None:
        return per_example.sum() / logits.shape[0]
    mask = mask.astype(jnp.float32)
    return (per_example * mask).sum() / jnp.maximum(mask.sum(), 1.0)
