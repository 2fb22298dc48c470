"""What a checkpoint holds and what every step reads unchanged: the train state, the frozen
inputs, and how a model's parameters split into them (`frozen_patterns`).

Training steps it (vtfpar_jax.training.train_step); a model dir restores it for inference
(vtfpar_jax.state.model_dir).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from vtfpar_jax.models import towers, vtfpar
from vtfpar_jax.state import optim


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    trainable: Any          # {'model': ..., 'backbone': ...} leaves not frozen
    batch_stats: Any
    opt_state: Any


@flax.struct.dataclass
class Frozen:
    """Inputs of every step that training never changes."""
    params: Any             # frozen leaves of {'model', 'backbone'}
    text_features: jax.Array
    positive_ratio: jax.Array


def initial_state(variables: dict, backbone_params: Any, frozen_patterns,
                  tx: optax.GradientTransformation) -> tuple[TrainState, Any]:
    """(step-0 state, frozen params): `frozen_patterns` split {'model', 'backbone'} params."""
    trainable, frozen = optim.partition({"model": variables["params"], "backbone": backbone_params},
                                        frozen_patterns)
    state = TrainState(step=jnp.asarray(0, jnp.int32), trainable=trainable,
                       batch_stats=variables["batch_stats"], opt_state=tx.init(trainable))
    return state, frozen


def step_frozen_params(cfg: vtfpar.VTFPARConfig, frozen: dict) -> dict:
    """The frozen params as the step reads them, to hold on the devices.

    From frozen CLIP leaves, drops the text tower (the step reads the text
    features computed once) and the vision params past the deepest block the
    side nets read; and, when CLIP computes in a lower precision, stores the
    matmul kernels in that dtype: `nn.Dense`/`nn.Conv` cast them to it anyway,
    so the numbers are bit-identical, with half the bytes on the device and no
    cast in every step.
    """
    if "backbone" not in frozen:
        return frozen
    backbone_frozen = {k: v for k, v in frozen["backbone"].items() if k != "text"}
    if "vision" in backbone_frozen:
        vision = towers.of(cfg.backbone).vision_tower.params_up_to(backbone_frozen["vision"],
                                                                   max(cfg.backbone_sources))
        dtype = vtfpar.DTYPES[cfg.backbone_dtype]
        backbone_frozen["vision"] = jax.tree_util.tree_map_with_path(
            lambda path, x: x.astype(dtype) if path[-1].key == "kernel" else x, vision)
    return {**frozen, "backbone": backbone_frozen}
