"""What each `model.remat` policy keeps for the backward pass of a side block.

Read off `jax.vjp`'s residuals of one timm side block (XLA attention, float32), so
each policy's promise is checked on what autodiff really saves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from vtfpar_jax.models.side_nets import REMAT_POLICIES, side_block

N, T, W, HEADS = 2, 5, 16, 2


def saved(policy: str) -> list[tuple[tuple[int, ...], str]]:
    block = side_block(W, HEADS, jnp.float32, "block", remat=policy, attention="xla")
    x = jnp.ones((N, T, W))
    params = jax.eval_shape(lambda: block.init(jax.random.key(0), x, True))

    def run(params, x):
        return block.apply(params, x, True)

    closure = jax.eval_shape(lambda p, x: jax.vjp(run, p, x)[1], params, x)
    param_shapes = {leaf.shape for leaf in jax.tree.leaves(params)}
    # Activations only: the parameters themselves are inputs, kept by every policy.
    return sorted((r.shape, str(r.dtype)) for r in jax.tree.leaves(closure)
                  if r.shape not in param_shapes and r.ndim >= 3)


def test_the_policies_are_these():
    assert REMAT_POLICIES == ("none", "blocks", "dots")


def test_none_keeps_attention_probabilities_and_every_activation():
    shapes = [s for s, _ in saved("none")]
    assert any(s[-2:] == (T, T) for s in shapes)  # XLA attention's probabilities
    assert (N, T, 4 * W) in shapes             # fc1 / GELU activations


def test_dots_keeps_the_matmul_outputs_and_the_input_only():
    """qkv, attention projection, fc1 and fc2 outputs (no batch dimensions in their
    matmuls), plus the block input; nothing of attention's (T, T) scores."""
    got = saved("dots")
    assert not any(s[-2:] == (T, T) for s, _ in got)
    assert sorted({s for s, _ in got}) == sorted({(N, T, W), (N, T, 3 * W), (N, T, 4 * W)})
    assert len([s for s, _ in got if s == (N, T, 4 * W)]) == 1   # fc1's output, not GELU's


def test_blocks_keeps_only_the_block_input():
    assert saved("blocks") == [((N, T, W), "float32")]


def test_unknown_policy_is_named():
    with pytest.raises(ValueError, match="model.remat='all'; expected one of"):
        side_block(W, HEADS, jnp.float32, "block", remat="all")
