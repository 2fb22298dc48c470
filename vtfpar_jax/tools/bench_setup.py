"""What the benchmark and the deviceless compiles run: the published model's train step
and evaluation forward, their inputs, jitted over a `data` mesh.

TensorFlow- and ml_collections-free (the GPU machine has neither). `make_inputs`
is pure JAX, so `jax.eval_shape` of it gives every input's shape without making
one (vtfpar_jax.tools.aot); `bench.build` makes and places them instead.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np

DTYPES = ("float32", "bfloat16", "float16")

# The published recipe (configs/common.py), as a plain object: optim only reads
# attributes, and ml_collections is not installed on the GPU machine.
PUBLISHED_OPTIMIZER = types.SimpleNamespace(
    name="adam", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, schedule="published",
    warmup_epochs=5, warmup_lr=1e-5, min_lr=2e-6, grad_clip_norm=0.0, accumulate_steps=1)
FROZEN_PATTERNS = ("backbone/.*",)


def model_config(backbone_cfg, *, frames: int = 6, dtype: str = "float32",
                 backbone_dtype: str | None = None, remat: str | None = None,
                 attention: str | None = None, num_attributes: int = 43, **model_options):
    """The benchmarked model: the published one, with the project's defaults for what
    `remat` and `attention` leave as None (the fast settings: VTFPARConfig's), and any
    other VTFPARConfig field given in `model_options`."""
    from vtfpar_jax.models import vtfpar
    from vtfpar_jax.models.side_nets import INTERACTION_MAPS

    # A CLIP shallower than 12 blocks (tiny: 4) cannot feed the default map; the
    # demo config's map '0' reads indices 0..4.
    maps = {} if backbone_cfg.vision.layers >= 12 else dict(
        spatial_map=INTERACTION_MAPS["0"], temporal_map=INTERACTION_MAPS["0"])
    options = {k: v for k, v in dict(remat=remat, attention=attention).items() if v is not None}
    options = {**maps, **options, **model_options}
    return vtfpar.VTFPARConfig(backbone=backbone_cfg, num_attributes=num_attributes, frames=frames,
                               dtype=dtype, backbone_dtype=backbone_dtype or dtype, **options)


def optimizer():
    """The published optimiser and schedule (steps per epoch only places the learning
    rate on the schedule)."""
    from vtfpar_jax.state import optim
    schedule = optim.make_schedule(PUBLISHED_OPTIMIZER, 30, 100)
    return optim.make_optimizer(PUBLISHED_OPTIMIZER, schedule), schedule


def make_inputs(model_cfg, *, batch: int, seed: int = 0, backbone_params=None, variables=None,
                text_features=None, video=None):
    """(state, frozen, batch, rng) of one train step, not yet placed on devices.

    Random backbone params, side-net variables, text features, clip and labels unless
    given. Pure JAX, so `jax.eval_shape` of it gives the shapes for free (aot).
    """
    from vtfpar_jax.models import rng as random_streams
    from vtfpar_jax.models import towers, vtfpar
    from vtfpar_jax.state.train_state import Frozen, initial_state, step_frozen_params

    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    backbone_cfg, a = model_cfg.backbone, model_cfg.num_attributes
    if backbone_params is None:
        backbone_params = towers.of(backbone_cfg).init_params(backbone_cfg, keys[0])
    if variables is None:
        variables = vtfpar.init(model_cfg, keys[1])
    if text_features is None:
        text_features = jax.random.normal(keys[2], (a, backbone_cfg.projection_dim))
    size = backbone_cfg.image_size
    if video is None:  # decoded frames, as the input pipeline sends them
        video = jax.random.randint(keys[3], (batch, model_cfg.frames, size, size, 3), 0,
                                   256).astype(jnp.uint8)
    positive_ratio = jax.random.uniform(keys[4], (a,), minval=0.05, maxval=0.5)
    labels = (jax.random.uniform(keys[5], (batch, a)) < positive_ratio).astype(jnp.float32)
    tx, _ = optimizer()
    state, frozen_params = initial_state(variables, backbone_params, FROZEN_PATTERNS, tx)
    frozen = Frozen(params=step_frozen_params(model_cfg, frozen_params),
                    text_features=jnp.asarray(text_features), positive_ratio=positive_ratio)
    # uint8 frames are preprocessed in the step; float ones are model input as given.
    batch = {"video": jnp.asarray(video), "labels": labels}
    # The step's key, as a training run's (vtfpar_jax.models.rng): its own streams, folded from it.
    return state, frozen, batch, random_streams.run_key(seed)


def jitted(model_cfg, mesh):
    """(train step, evaluation forward, CLIP forward alone), jitted over `mesh`: the
    first two exactly as train.Trainer and evaluate.Evaluator jit them."""
    from vtfpar_jax.evaluation import evaluate
    from vtfpar_jax.models import preprocess, vtfpar
    from vtfpar_jax.state import optim
    from vtfpar_jax.training.train_step import jit_train_step, make_train_step

    tx, schedule = optimizer()
    train_step = jit_train_step(make_train_step(model_cfg, tx, schedule, backbone_frozen=True),
                                mesh)
    predict = evaluate.jit_eval_logits(model_cfg, mesh)

    def backbone_forward(trainable, frozen, video):
        # The frozen CLIP of the step, in the step's shapes: its share of the step.
        video = preprocess.model_input(video, (model_cfg.backbone.image_size,) * 2,
                                       preprocess.Preprocess(augment=False))
        return vtfpar.backbone_tokens(model_cfg, optim.merge(trainable, frozen.params)["backbone"],
                                  video)

    return train_step, predict, jax.jit(backbone_forward)


def count_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
