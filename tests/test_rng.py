"""A run's random streams (vtfpar_jax/models/rng.py): one key, named streams that share nothing."""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vtfpar_jax.models import clip, rng
from vtfpar_jax.state import build

SEEDS = (0, 1, 2, 3)


def _data(key) -> tuple[int, ...]:
    return tuple(np.asarray(jax.random.key_data(key)).ravel().tolist())


def _direct(seed: int, name: str) -> jax.Array:
    """The documented derivation, written out with jax.random alone."""
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()))


def test_streams_differ_from_each_other_and_across_seeds():
    """Every stream of every seed, and every per-step key, is its own; none is any
    seed's bare key (the old step key was key(seed + 1), the next seed's init key)."""
    keys = {(seed, name): _data(rng.stream(seed, name)) for seed in SEEDS for name in rng.STREAMS}
    keys.update({(seed, name, step): _data(rng.step_key(rng.run_key(seed), name, step))
                 for seed in SEEDS for name in rng.PER_STEP for step in range(3)})
    keys.update({("bare", seed): _data(jax.random.key(seed)) for seed in range(len(SEEDS) + 1)})
    assert len(set(keys.values())) == len(keys)
    seeds = {rng.data_order_seed(seed) for seed in SEEDS}
    assert len(seeds) == len(SEEDS) and all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize("seed", [0, 12240321])
def test_streams_are_the_documented_derivation(seed):
    for name in rng.STREAMS:
        assert _data(rng.stream(seed, name)) == _data(_direct(seed, name))
    step = jnp.asarray(5, jnp.int32)
    for name in rng.PER_STEP:
        assert _data(rng.step_key(rng.run_key(seed), name, step)) == _data(
            jax.random.fold_in(_direct(seed, name), 5))
    high, low = (int(x) for x in jax.random.bits(_direct(seed, "data_order"), (2,), jnp.uint32))
    assert rng.data_order_seed(seed) == ((high << 32) | low) >> 1


def test_per_step_keys_trace_with_the_step():
    run = rng.run_key(3)
    traced = jax.jit(lambda step: rng.step_key(run, "dropout", step))(jnp.asarray(7))
    assert _data(traced) == _data(rng.step_key(run, "dropout", 7))


def test_random_backbone_draws_from_its_stream():
    config = ml_collections.ConfigDict({"backbone": {
        "name": "clip", "source": "random", "preset": "tiny", "image_size": 32, "patch_size": 8}})
    cfg, params = build.load_backbone(config, 4)
    want = clip.init_params(cfg, _direct(4, "backbone_init"))
    jax.tree.map(np.testing.assert_array_equal, params, want)


def test_unknown_streams_are_refused():
    with pytest.raises(ValueError, match="random stream 'init'"):
        rng.stream(0, "init")
    with pytest.raises(ValueError, match="not drawn per step"):
        rng.step_key(rng.run_key(0), "model_init", 1)
