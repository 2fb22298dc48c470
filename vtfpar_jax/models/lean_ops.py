"""LayerNorm and exact GELU whose backward passes keep only what they must.

docs/performance.md ("Lean LayerNorm and GELU") says why: autodiff of flax's versions keeps
float32 copies of LayerNorm's input and three MLP-wide tensors for GELU. These keep LayerNorm's
input in the compute dtype plus per-row float32 mean and reciprocal std, and GELU's input;
the backward passes recompute the rest. In float32 they compute what flax's modules compute,
to float32 rounding (the variance here is the two-pass one, flax's E[x^2] - E[x]^2).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float) -> jax.Array:
    """LayerNorm over the last axis, computed in float32, returned in x's dtype. `scale`
    and `bias` broadcast against x (e.g. (C,), or (S, 1, C) for one per stream)."""
    return _layer_norm_fwd(x, scale, bias, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, epsilon):
    xf = x.astype(jnp.float32)
    mean = xf.mean(axis=-1, keepdims=True)
    centred = xf - mean
    rstd = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + epsilon)
    y = (centred * rstd * scale + bias).astype(x.dtype)
    return y, (x, mean, rstd, scale)


def _layer_norm_bwd(epsilon, residuals, g):
    x, mean, rstd, scale = residuals
    x_hat = (x.astype(jnp.float32) - mean) * rstd
    g = g.astype(jnp.float32)
    d_bias = _sum_to_shape(g, scale.shape)
    d_scale = _sum_to_shape(g * x_hat, scale.shape)
    g_hat = g * scale
    d_x = rstd * (g_hat - g_hat.mean(axis=-1, keepdims=True)
                  - x_hat * (g_hat * x_hat).mean(axis=-1, keepdims=True))
    return d_x.astype(x.dtype), d_scale, d_bias


def _sum_to_shape(t: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sum t over the axes that broadcasting a `shape` parameter against it added.

    One reduction over all of them: under data parallelism the partitioner then
    all-reduces the parameter-sized result, not a partial sum still holding rows.
    """
    lead = t.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1)
    return t.sum(axis=axes).reshape(shape)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
    """`nn.LayerNorm`'s parameters (scale, bias) and math, with lean residuals.

    The input is cast to `dtype` (the compute dtype), so what the backward pass
    keeps is in that dtype; statistics and the affine map are float32.
    """

    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        return layer_norm(x.astype(self.dtype), scale, bias, self.epsilon)


_SQRT_HALF = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, x * Phi(x), computed in float32, returned in x's dtype."""
    xf = x.astype(jnp.float32)
    return (xf * 0.5 * (1 + jax.lax.erf(xf * _SQRT_HALF))).astype(x.dtype)


def _gelu_fwd(x):
    return gelu(x), x


def _gelu_bwd(x, g):
    xf = x.astype(jnp.float32)
    cdf = 0.5 * (1 + jax.lax.erf(xf * _SQRT_HALF))
    pdf = jnp.exp(-0.5 * xf * xf) * _INV_SQRT_2PI
    return ((g.astype(jnp.float32) * (cdf + xf * pdf)).astype(x.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)
