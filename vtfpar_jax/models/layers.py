"""Transformer building blocks shared by CLIP's towers and the side networks.

One pre-LayerNorm block serves both: CLIP's (QuickGELU, eps 1e-5) and timm's
side-ViT block (exact GELU, eps 1e-6, optional drop-path). The attention
projection is packed as one (W, 3W) `qkv` kernel laid out [q | k | v], heads
contiguous inside each, which is the layout of both OpenAI's `in_proj_weight`
and timm's `qkv`, so imports are a transpose.

LayerNorm and exact GELU are the lean ones of `lean_ops` (same math, smaller
saved activations); attention is `attention.dot_product_attention`, whose
implementation (`auto`, `xla`, `cudnn`) is a model option.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vtfpar_jax.models import lean_ops
from vtfpar_jax.models.attention import dot_product_attention


def quick_gelu(x: jax.Array) -> jax.Array:
    """CLIP's activation: x * sigmoid(1.702 x)."""
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": quick_gelu,
    "gelu": lean_ops.gelu,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


class Attention(nn.Module):
    """Multi-head self-attention over (B, N, W) tokens with a packed qkv projection."""

    width: int
    heads: int
    causal: bool = False
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"      # attention.IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, w = x.shape
        head_dim = self.width // self.heads
        qkv = nn.Dense(3 * self.width, dtype=self.dtype, name="qkv")(x)
        q, k, v = jnp.moveaxis(qkv.reshape(b, n, 3, self.heads, head_dim), 2, 0)
        out = dot_product_attention(q, k, v, causal=self.causal, implementation=self.attention)
        return nn.Dense(self.width, dtype=self.dtype, name="out")(out.reshape(b, n, w))


class TransformerBlock(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)); drop-path on both branches."""

    width: int
    heads: int
    mlp_dim: int
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    causal: bool = False
    drop_path_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"      # attention.IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        def ln(name):
            return lean_ops.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name=name)

        def dense(features, name):
            return nn.Dense(features, dtype=self.dtype, name=name)

        y = Attention(self.width, self.heads, self.causal, self.dtype, self.attention,
                      name="attn")(ln("ln_1")(x))
        x = x + self._drop_path(y, deterministic)
        y = dense(self.mlp_dim, "fc1")(ln("ln_2")(x))
        y = dense(self.width, "fc2")(ACTIVATIONS[self.activation](y))
        return x + self._drop_path(y, deterministic)

    def _drop_path(self, y: jax.Array, deterministic: bool) -> jax.Array:
        """Stochastic depth per sample (timm's DropPath), scaled by 1/keep in training."""
        if deterministic or self.drop_path_rate == 0.0:
            return y
        keep = 1.0 - self.drop_path_rate
        shape = (y.shape[0],) + (1,) * (y.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, y / keep, 0).astype(y.dtype)

