"""The group head's layout (model.head = 'group', the published train_marco.py recipe).

`group_columns` lists, for each attribute group in order, the label columns it covers
(`AttributeSet.head_groups`). A binary attribute (one column) is a 2-way group whose
class 1 means present; a multi-class group has one class per column. The logits (B, L)
hold the groups' classes one group after the other, L = sum of `class_counts`.

    targets(labels, group_columns)                 # (B, G) class index per group
    column_probabilities(logits, group_columns)    # (B, A) softmax within each group
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

GroupColumns = Sequence[Sequence[int]]


def class_counts(group_columns: GroupColumns) -> tuple[int, ...]:
    """Classes per group: 2 for a binary attribute, else one per column."""
    return tuple(2 if len(columns) == 1 else len(columns) for columns in group_columns)


def check_layout(group_columns: GroupColumns, num_attributes: int) -> None:
    """Refuse a layout the head cannot run: group g reads the fused token of attribute
    phrase g, so there are at most as many groups as attributes, and every label column
    belongs to exactly one group."""
    if not group_columns:
        raise ValueError("config: head='group' needs the attribute set's groups "
                         "(group_columns is empty)")
    if len(group_columns) > num_attributes:
        raise ValueError(f"config: head='group' with {len(group_columns)} groups but "
                         f"{num_attributes} attributes; group g reads attribute phrase g's token")
    covered = sorted(c for columns in group_columns for c in columns)
    if covered != list(range(num_attributes)):
        raise ValueError(f"config: group_columns {group_columns} do not cover the label "
                         f"columns 0..{num_attributes - 1} exactly once")


def targets(labels: jax.Array, group_columns: GroupColumns) -> jax.Array:
    """0/1 labels (B, A) -> the true class of each group (B, G) int32.

    As the published split_gt_to_indices: a binary column p becomes [1 - p, p] and
    every group takes the argmax (the first class on a tie).
    """
    return jnp.stack([(labels[:, columns[0]] > 0.5).astype(jnp.int32) if len(columns) == 1
                      else jnp.argmax(labels[:, list(columns)], axis=1).astype(jnp.int32)
                      for columns in group_columns], axis=1)


def split(logits: jax.Array, group_columns: GroupColumns) -> list[jax.Array]:
    """Logits (B, L) -> one (B, classes) block per group."""
    bounds = np.cumsum(class_counts(group_columns))[:-1]
    return jnp.split(logits, bounds, axis=1)


def column_probabilities(logits: np.ndarray, group_columns: GroupColumns) -> np.ndarray:
    """Group-head logits (B, L) -> per-column probabilities (B, A) float64, on the host.

    The softmax within each group; a binary column gets its class 1 (present). A binary
    column's probability is then above 0.5 exactly when the argmax says present.
    """
    logits = np.asarray(logits, np.float64)
    counts = class_counts(group_columns)
    if logits.ndim != 2 or logits.shape[1] != sum(counts):
        raise ValueError(f"group-head logits {logits.shape}: expected (B, {sum(counts)})")
    num_attributes = sum(len(columns) for columns in group_columns)
    probs = np.empty((logits.shape[0], num_attributes))
    blocks = np.split(logits, np.cumsum(counts)[:-1], axis=1)
    for columns, block in zip(group_columns, blocks, strict=True):
        e = np.exp(block - block.max(axis=1, keepdims=True))
        softmax = e / e.sum(axis=1, keepdims=True)
        probs[:, list(columns)] = softmax[:, 1:] if len(columns) == 1 else softmax
    return probs
