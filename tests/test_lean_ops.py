"""The lean LayerNorm and GELU (models/lean_ops.py): flax's / jax's math, smaller residuals.

References are flax's `nn.LayerNorm` and `jax.nn.gelu(approximate=False)`, the modules
the model used before; what a backward pass keeps is read off `jax.vjp`'s residuals.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vtfpar_jax.models import lean_ops

SHAPE = (3, 7, 48)


def residuals(f, *args) -> list[jax.ShapeDtypeStruct]:
    """What the backward pass of f keeps: the leaves of its VJP closure (shapes only)."""
    return jax.tree.leaves(jax.eval_shape(lambda *a: jax.vjp(f, *a)[1], *args))


def _inputs(dtype):
    k = jax.random.split(jax.random.key(0), 4)
    x = (3 * jax.random.normal(k[0], SHAPE) + 1).astype(dtype)
    scale = 1 + 0.1 * jax.random.normal(k[1], SHAPE[-1:])
    bias = 0.1 * jax.random.normal(k[2], SHAPE[-1:])
    cotangent = jax.random.normal(k[3], SHAPE)
    return x, {"params": {"scale": scale, "bias": bias}}, cotangent


def _value_and_grads(module, params, x, cotangent):
    y, vjp = jax.vjp(lambda p, x: module.apply(p, x), params, x)
    return (y, *vjp(cotangent.astype(y.dtype)))


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_layer_norm_equals_flax(dtype, tol):
    x, params, cotangent = _inputs(dtype)
    eps = 1e-6
    got = _value_and_grads(lean_ops.LayerNorm(epsilon=eps, dtype=dtype), params, x, cotangent)
    want = _value_and_grads(nn.LayerNorm(epsilon=eps, dtype=dtype), params, x, cotangent)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        # bf16: within bf16 rounding of values of order 1 (parameter gradients sum 21 rows).
        scale = max(1.0, float(np.abs(np.asarray(w, np.float32)).max()))
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32),
                                   atol=tol * scale, rtol=tol)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)])
def test_gelu_equals_jax_exact_gelu(dtype, tol):
    x, _, cotangent = _inputs(dtype)
    y, vjp = jax.vjp(lean_ops.gelu, x)
    y_ref, vjp_ref = jax.vjp(lambda x: jax.nn.gelu(x, approximate=False), x)
    assert y.dtype == dtype
    for g, w in ((y, y_ref), (vjp(cotangent.astype(dtype))[0],
                              vjp_ref(cotangent.astype(dtype))[0])):
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32),
                                   atol=tol, rtol=tol)


def test_bfloat16_residuals_are_the_input_and_row_statistics():
    """flax's LayerNorm keeps three float32 copies of a bf16 input; exact GELU three
    tensors. The lean ones keep the bf16 input (plus two per-row float32 statistics)."""
    x, params, _ = _inputs(jnp.bfloat16)
    full = [r for r in residuals(lambda p, x: nn.LayerNorm(dtype=jnp.bfloat16).apply(p, x),
                                 params, x) if r.shape == SHAPE]
    assert [r.dtype for r in full] == [jnp.float32] * 3  # what the lean version avoids

    lean = residuals(lambda p, x: lean_ops.LayerNorm(dtype=jnp.bfloat16).apply(p, x), params, x)
    wide = [r for r in lean if r.shape == SHAPE]
    assert [r.dtype for r in wide] == [jnp.bfloat16]
    rows = [r for r in lean if r.shape == SHAPE[:-1] + (1,)]
    assert [r.dtype for r in rows] == [jnp.float32] * 2
    assert all(r.shape in (SHAPE, SHAPE[:-1] + (1,), SHAPE[-1:]) for r in lean)

    assert len([r for r in residuals(lambda x: jax.nn.gelu(x, approximate=False), x)
                if r.shape == SHAPE]) == 3
    assert [(r.shape, r.dtype) for r in residuals(lean_ops.gelu, x)] == [(SHAPE, jnp.bfloat16)]
