"""Optimiser and learning-rate schedules; frozen params selected by path patterns.

The published recipe (docs/published-model.md §8): Adam(1e-3, 0.9/0.999, 1e-8), no
weight decay, learning rate set once per epoch e = 1..E:
    e < warmup:  warmup_lr + e * (lr - warmup_lr) / warmup
    else:        min_lr + (lr - min_lr) * (1 + cos(pi * e / E)) / 2
Params are split before the optimiser sees them (`partition`), so frozen ones
get neither gradients nor optimiser state. `opt` arguments are the
`config.optimizer` field (any object with those attributes: this module stays
free of ml_collections so the GPU benchmark can import it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import optax
from flax import traverse_util

from vtfpar_jax.errors import ConfigError


def published_epoch_lr(epoch: int, *, lr: float, num_epochs: int, warmup_epochs: int,
                       warmup_lr: float, min_lr: float) -> float:
    """The learning rate of (1-based) epoch `epoch`, as timm's CosineLRScheduler gives it."""
    if epoch < warmup_epochs:
        return warmup_lr + epoch * (lr - warmup_lr) / warmup_epochs
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * epoch / num_epochs))


def make_schedule(opt: Any, num_epochs: int,
                  steps_per_epoch: int) -> optax.Schedule:
    """Learning rate by optimiser update count: `published` (per epoch) or `cosine` (per step)."""
    if opt.schedule == "published":
        table = jnp.asarray([published_epoch_lr(
            e, lr=opt.lr, num_epochs=num_epochs, warmup_epochs=opt.warmup_epochs,
            warmup_lr=opt.warmup_lr, min_lr=opt.min_lr) for e in range(1, num_epochs + 1)])

        def schedule(count):
            epoch = jnp.minimum(count // steps_per_epoch, num_epochs - 1)
            return table[epoch]

        return schedule
    if opt.schedule == "cosine":
        total = num_epochs * steps_per_epoch
        return optax.warmup_cosine_decay_schedule(
            init_value=opt.warmup_lr, peak_value=opt.lr,
            warmup_steps=opt.warmup_epochs * steps_per_epoch, decay_steps=max(total, 1),
            end_value=opt.min_lr)
    if opt.schedule == "constant":
        return optax.constant_schedule(opt.lr)
    raise ConfigError(f"config.optimizer.schedule={opt.schedule!r}; expected 'published', "
                     "'cosine' or 'constant'")


def make_optimizer(opt: Any, schedule: optax.Schedule
                   ) -> optax.GradientTransformation:
    """Adam (published) or AdamW, optional global-norm clipping and gradient accumulation."""
    if opt.name == "adam":
        tx = optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    elif opt.name == "adamw":
        tx = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                         weight_decay=opt.weight_decay)
    else:
        raise ConfigError(f"config.optimizer.name={opt.name!r}; expected 'adam' or 'adamw'")
    if opt.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
    if opt.accumulate_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=opt.accumulate_steps)
    return tx


def partition(params: Mapping[str, Any], frozen_patterns: Sequence[str]
              ) -> tuple[dict, dict]:
    """(trainable, frozen) nested trees; a leaf is frozen when its '/'-joined path
    (e.g. 'backbone/vision/layers_3/fc1/kernel') fully matches one of the patterns."""
    try:
        patterns = [re.compile(p) for p in frozen_patterns]
    except re.error as e:
        raise ConfigError(f"config.frozen_patterns: bad regular expression ({e})") from None
    flat = traverse_util.flatten_dict(params, sep="/")
    frozen = {k: v for k, v in flat.items() if any(p.fullmatch(k) for p in patterns)}
    trainable = {k: v for k, v in flat.items() if k not in frozen}
    if not trainable:
        raise ConfigError(f"config.frozen_patterns {list(frozen_patterns)} freeze every parameter")
    return (traverse_util.unflatten_dict(trainable, sep="/"),
            traverse_util.unflatten_dict(frozen, sep="/"))


def merge(trainable: Mapping[str, Any], frozen: Mapping[str, Any]) -> dict:
    """The inverse of `partition`."""
    flat = traverse_util.flatten_dict(dict(frozen), sep="/")
    flat.update(traverse_util.flatten_dict(dict(trainable), sep="/"))
    return traverse_util.unflatten_dict(flat, sep="/")
