"""The random streams of a training run, each split from one typed key.

A run has one key, `jax.random.key(config.seed)`. Every stream is that key with
the stream's name folded in (`fold_in(key, crc32(name))`), and a per-step stream
folds in the step as well; no stream is drawn from another stream's key, and no
key is `key(seed + 1)`, so the streams of seed s share nothing with those of
seed s + 1 (an ablation's seeds are independent draws).

Below, S(name) = fold_in(run, crc32(name)) and run = key(seed).

| stream        | key                    | draws                                          |
|---------------|------------------------|------------------------------------------------|
| backbone_init | S("backbone_init")     | a random backbone (`clip.source='random'`)     |
| model_init    | S("model_init")        | side nets, fusion and heads (vtfpar.init)      |
| dropout       | fold_in(S, step)       | drop-path in the train step                    |
| augmentation  | fold_in(S, step)       | crop and flip in the train step (preprocess)   |
| data_order    | S as a 63-bit integer  | the input pipeline's seed (`data_order_seed`)  |

The input pipeline is TensorFlow and numpy, which take integer seeds, so the
data-order stream hands it an integer drawn from its key; the pipeline then
seeds each epoch's shuffle from (that integer, epoch) and each example's frame
choice from (that integer, epoch, index), as input_pipeline/pipeline.py says.

Nothing here is stored in a checkpoint: every key is a function of the seed
(and the step), so a resumed run draws exactly what the uninterrupted run drew,
as long as it draws them the same way. `SCHEME` names the way above; a work
dir records it in config.json (`random_streams`) and resumes only under it
(vtfpar_jax.state.fingerprint), so a change to any row of the table, or to how
a stream is drawn, must come with a new name.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np

STREAMS = ("backbone_init", "model_init", "dropout", "augmentation", "data_order")
PER_STEP = ("dropout", "augmentation")
SCHEME = "named-streams/1"


def run_key(seed: int) -> jax.Array:
    """The run's one typed key."""
    return jax.random.key(seed)


def stream(run: jax.Array | int, name: str) -> jax.Array:
    """The key of stream `name` of a run (its key, or its seed)."""
    if name not in STREAMS:
        raise ValueError(f"random stream {name!r}; expected one of {STREAMS}")
    if isinstance(run, (int, np.integer)):
        run = run_key(run)
    return jax.random.fold_in(run, zlib.crc32(name.encode()))


def step_key(run: jax.Array, name: str, step: jax.Array | int) -> jax.Array:
    """The key of per-step stream `name` at `step` (traceable: the step may be traced)."""
    if name not in PER_STEP:
        raise ValueError(f"random stream {name!r} is not drawn per step; expected one of "
                         f"{PER_STEP}")
    return jax.random.fold_in(stream(run, name), step)


def data_order_seed(seed: int) -> int:
    """The input pipeline's integer seed, in [0, 2**63): from the data_order stream."""
    high, low = np.asarray(jax.random.bits(stream(seed, "data_order"), (2,), jnp.uint32),
                           np.uint64)
    return int(((high << np.uint64(32)) | low) >> np.uint64(1))
