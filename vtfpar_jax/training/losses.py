"""The published losses: BCE with logits, weighted by how rare each label value is (the
attribute head, train.py), and per-group cross-entropy (the group head, train_marco.py)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from vtfpar_jax.models import group_head, vtfpar


def weighted_bce(logits: jax.Array, labels: jax.Array, positive_ratio: jax.Array) -> jax.Array:
    """docs/published-model.md §8: w = exp(m (1 - r) + (1 - m) r) with m = [y > 0.5];
    loss = sum over batch and attributes of w * BCE(logit, y), divided by B.

    logits, labels (B, A); positive_ratio (A,) over the training labels.
    """
    logits = logits.astype(jnp.float32)
    labels = labels.astype(jnp.float32)
    positive = (labels > 0.5).astype(jnp.float32)
    weights = jnp.exp(positive * (1.0 - positive_ratio) + (1.0 - positive) * positive_ratio)
    per_example = (weights * optax.sigmoid_binary_cross_entropy(logits, labels)).sum(axis=-1)
    return per_example.mean()


def group_cross_entropy(logits: jax.Array, labels: jax.Array,
                        group_columns: Sequence[Sequence[int]]) -> jax.Array:
    """train_marco.py's loss (model.head = 'group'): for each group, the softmax
    cross-entropy of its logits against its true class (group_head.targets), averaged over
    the batch and divided by the group's class count; then summed over groups.

    logits (B, L) in group_head's layout, labels (B, A) 0/1.
    """
    classes = group_head.targets(labels, group_columns)
    blocks = group_head.split(logits.astype(jnp.float32), group_columns)
    per_example = sum(
        optax.softmax_cross_entropy_with_integer_labels(block, classes[:, g]) / block.shape[1]
        for g, block in enumerate(blocks))
    return per_example.mean()


def head_loss(cfg: vtfpar.VTFPARConfig, logits: jax.Array, labels: jax.Array,
              positive_ratio: jax.Array | None) -> jax.Array:
    """The published loss of cfg.head: weighted BCE (attribute), per-group cross-entropy
    (group)."""
    if cfg.head == "group":
        return group_cross_entropy(logits, labels, cfg.group_columns)
    return weighted_bce(logits, labels, positive_ratio)
