"""The pure training step, free of TensorFlow and ml_collections (benchmarks import it).

`train_step(state, batch, rng, frozen)`: the batch is sharded over the `data`
mesh axis by its caller; its video is the host's decoded uint8 frames, which
the step resizes, augments and normalises itself (vtfpar_jax.preprocess);
params and optimiser state are replicated; `frozen`
(CLIP by default, the text features, the loss weights) is never donated and
no gradient or optimiser state touches it.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from vtfpar_jax import losses, optim, preprocess
from vtfpar_jax import rng as random_streams
from vtfpar_jax.models import backbones, vtfpar


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    trainable: Any          # {'model': ..., 'clip': ...} leaves not frozen
    batch_stats: Any
    opt_state: Any


@flax.struct.dataclass
class Frozen:
    """Inputs of every step that training never changes."""
    params: Any             # frozen leaves of {'model', 'clip'}
    text_features: jax.Array
    positive_ratio: jax.Array


def jit_train_step(step_fn, mesh: jax.sharding.Mesh):
    """The jitted step as training runs it: state donated, outputs replicated."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(step_fn, donate_argnums=(0,), out_shardings=(replicated, replicated))


def initial_state(variables: dict, clip_params: Any, frozen_patterns,
                  tx: optax.GradientTransformation) -> tuple[TrainState, Any]:
    """(step-0 state, frozen params): `frozen_patterns` split {'model', 'clip'} params."""
    trainable, frozen = optim.partition({"model": variables["params"], "clip": clip_params},
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
    if "clip" not in frozen:
        return frozen
    clip_frozen = {k: v for k, v in frozen["clip"].items() if k != "text"}
    if "vision" in clip_frozen:
        vision = backbones.of(cfg.clip).vision_params_up_to(clip_frozen["vision"],
                                                            max(cfg.clip_sources))
        dtype = vtfpar.DTYPES[cfg.clip_dtype]
        clip_frozen["vision"] = jax.tree_util.tree_map_with_path(
            lambda path, x: x.astype(dtype) if path[-1].key == "kernel" else x, vision)
    return {**frozen, "clip": clip_frozen}


def make_train_step(cfg: vtfpar.VTFPARConfig, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, clip_frozen: bool, accumulate_steps: int = 1,
                    input_preprocess: preprocess.Preprocess | None = None):
    """The pure step: (state, batch, rng, frozen) -> (state, metrics).

    `rng` is the run's key (vtfpar_jax.rng.run_key): the step draws its dropout
    and augmentation keys from it, each its own named stream with the step folded in.

    `input_preprocess` turns the batch's uint8 frames into model input (None:
    the published recipe, `preprocess.Preprocess()`). A step whose loss or gradients are not
    finite is not applied; its `finite` metric is 0 so the loop can stop and
    name it.
    """
    image_size = (cfg.clip.image_size,) * 2
    input_preprocess = input_preprocess or preprocess.Preprocess()
    input_preprocess.check(image_size)

    def train_step(state: TrainState, batch: dict, rng: jax.Array, frozen: Frozen):
        video = preprocess.model_input(batch["video"], image_size, input_preprocess,
                                       rng=random_streams.step_key(rng, "augmentation",
                                                                   state.step))
        dropout_rng = random_streams.step_key(rng, "dropout", state.step)

        def loss_fn(trainable):
            params = optim.merge(trainable, frozen.params)
            logits, updates = vtfpar.apply(
                cfg, {"params": params["model"], "batch_stats": state.batch_stats},
                params["clip"], video, frozen.text_features, train=True, rng=dropout_rng,
                clip_frozen=clip_frozen)
            loss = losses.weighted_bce(logits, batch["labels"], frozen.positive_ratio)
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable)
        updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = state.replace(step=state.step + 1,
                            trainable=optax.apply_updates(state.trainable, updates),
                            batch_stats=batch_stats, opt_state=opt_state)
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite,
                   "lr": schedule(state.step // accumulate_steps)}
        return new, metrics

    return train_step
