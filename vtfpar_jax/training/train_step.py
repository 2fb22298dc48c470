"""The pure training step, free of TensorFlow and ml_collections (benchmarks import it).

`train_step(state, batch, rng, frozen)` (the state and the frozen inputs:
vtfpar_jax.state.train_state): the batch is sharded over the `data`
mesh axis by its caller; its video is the host's decoded uint8 frames, which
the step resizes, augments and normalises itself (vtfpar_jax.models.preprocess);
params and optimiser state are replicated; `frozen`
(CLIP by default, the text features, the loss weights) is never donated and
no gradient or optimiser state touches it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from vtfpar_jax.models import preprocess, vtfpar
from vtfpar_jax.models import rng as random_streams
from vtfpar_jax.state import optim, sharding
from vtfpar_jax.state.train_state import Frozen, TrainState
from vtfpar_jax.training import losses


def jit_train_step(step_fn, mesh: jax.sharding.Mesh):
    """The jitted step as training runs it: state donated, outputs replicated."""
    return jax.jit(step_fn, donate_argnums=(0,), out_shardings=(sharding.replicated(mesh),) * 2)


def make_train_step(cfg: vtfpar.VTFPARConfig, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, backbone_frozen: bool, accumulate_steps: int = 1,
                    input_preprocess: preprocess.Preprocess | None = None):
    """The pure step: (state, batch, rng, frozen) -> (state, metrics).

    `rng` is the run's key (vtfpar_jax.models.rng.run_key): the step draws its dropout
    and augmentation keys from it, each its own named stream with the step folded in.

    `input_preprocess` turns the batch's uint8 frames into model input (None:
    the published recipe, `preprocess.Preprocess()`). A step whose loss or gradients are not
    finite is not applied; its `finite` metric is 0 so the loop can stop and
    name it.
    """
    image_size = (cfg.backbone.image_size,) * 2
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
                params["backbone"], video, frozen.text_features, train=True, rng=dropout_rng,
                backbone_frozen=backbone_frozen)
            loss = losses.head_loss(cfg, logits, batch["labels"], frozen.positive_ratio)
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
