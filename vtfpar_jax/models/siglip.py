"""SigLIP's vision and text towers in Flax, for frozen feature extraction.

They follow transformers' `SiglipModel` exactly (pre-LN blocks with tanh GELU,
LayerNorm eps from the config), so imported weights give the reference's
numbers to float32 rounding. The blocks are CLIP's `TransformerBlock` (same
packed qkv, same shared attention); what differs from CLIP is around them:

- vision: the patch embedding has a bias, there is no class token and no
  pre-LayerNorm; the image embedding is a multi-head attention pooling head
  (a learned probe attending over the post-LayerNorm patch tokens);
- text: no causal mask; the pooled token is the last position (SigLIP is
  trained on ids padded to max_length 64), then a Linear with bias.

Parameters live in one tree:

    {'vision': {...}, 'text': {...}, 'logit_scale': (1,), 'logit_bias': (1,)}

Public functions:
    image_features(cfg, params, images)   -> (L+1, N, P, W)
    text_features(cfg, params, token_ids) -> (A, E)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vtfpar_jax.models.attention import dot_product_attention
from vtfpar_jax.models.clip import TowerConfig
from vtfpar_jax.models.layers import ACTIVATIONS, TransformerBlock, params_up_to_block
from vtfpar_jax.models.lean_ops import LayerNorm

Params = dict[str, Any]
# transformers' name for the tanh approximation, and ours (layers.ACTIVATIONS).
_HF_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu": "gelu",
                   "quick_gelu": "quick_gelu"}


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
    """The shape of a SigLIP; hashable, so it can be a static jit argument."""

    vision: TowerConfig
    text: TowerConfig
    image_size: int = 224
    patch_size: int = 16
    vocab_size: int = 32000
    context_length: int = 64
    projection_dim: int = 768       # the text head's output (transformers' projection_size)
    vision_use_head: bool = True

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @classmethod
    def from_hf(cls, hf_config: Any) -> SiglipConfig:
        """From a transformers `SiglipConfig` (or its dict form)."""
        if not isinstance(hf_config, dict):
            hf_config = hf_config.to_dict()
        v, t = hf_config["vision_config"], hf_config["text_config"]

        def tower(c):
            act = c.get("hidden_act", "gelu_pytorch_tanh")
            return TowerConfig(width=c["hidden_size"], layers=c["num_hidden_layers"],
                               heads=c["num_attention_heads"], mlp_dim=c["intermediate_size"],
                               activation=_HF_ACTIVATIONS.get(act, act),
                               layer_norm_eps=c.get("layer_norm_eps", 1e-6))

        return cls(vision=tower(v), text=tower(t), image_size=_square(v["image_size"]),
                   patch_size=_square(v["patch_size"]), vocab_size=t["vocab_size"],
                   context_length=t["max_position_embeddings"],
                   projection_dim=t.get("projection_size") or t["hidden_size"],
                   vision_use_head=v.get("vision_use_head", True))

    def to_hf(self):
        """The equivalent transformers `SiglipConfig` (for saving and parity checks)."""
        from transformers import SiglipConfig as HFSiglipConfig

        # Reversed, so that where two HF names map to one of ours the first listed wins.
        hf_act = {ours: hf for hf, ours in reversed(_HF_ACTIVATIONS.items())}

        def tower(c: TowerConfig) -> dict:
            return dict(hidden_size=c.width, num_hidden_layers=c.layers,
                        num_attention_heads=c.heads, intermediate_size=c.mlp_dim,
                        hidden_act=hf_act[c.activation], layer_norm_eps=c.layer_norm_eps)

        return HFSiglipConfig(
            vision_config=dict(tower(self.vision), image_size=self.image_size,
                               patch_size=self.patch_size, vision_use_head=self.vision_use_head),
            text_config=dict(tower(self.text), vocab_size=self.vocab_size,
                             max_position_embeddings=self.context_length,
                             projection_size=self.projection_dim,
                             # SigLIP's SentencePiece ids: no start token, '</s>' (1) ends
                             # and pads (transformers' defaults are CLIP's, past the vocab).
                             bos_token_id=None, eos_token_id=1, pad_token_id=1))


def _square(size) -> int:
    """transformers allows (h, w) sizes; this SigLIP runs square images only."""
    if isinstance(size, list | tuple):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"image/patch size {size} is not square")
        return int(size[0])
    return int(size)


def _tower(width: int, layers: int, heads: int, mlp_dim: int) -> TowerConfig:
    return TowerConfig(width, layers, heads, mlp_dim, activation="gelu_tanh", layer_norm_eps=1e-6)


def base16() -> SiglipConfig:
    """google/siglip-base-patch16-224: the same 12 x 768 ViT and 14 x 14 grid as CLIP B/16."""
    return SiglipConfig(vision=_tower(768, 12, 12, 3072), text=_tower(768, 12, 12, 3072),
                        image_size=224, patch_size=16, vocab_size=32000, projection_dim=768)


def so400m14() -> SiglipConfig:
    """google/siglip-so400m-patch14-384 (the shape-optimised ViT, 27 layers, 16 x 16 heads)."""
    return SiglipConfig(vision=_tower(1152, 27, 16, 4304), text=_tower(1152, 27, 16, 4304),
                        image_size=384, patch_size=14, vocab_size=32000, projection_dim=1152)


def tiny(image_size: int = 64, patch_size: int = 8, vocab_size: int = 320) -> SiglipConfig:
    """A small random SigLIP for demos and tests (same code paths). The vocabulary holds
    the byte ids of `siglip_tokens.byte_tokens` (256 bytes after 3 special ids)."""
    return SiglipConfig(vision=_tower(64, 4, 4, 256), text=_tower(64, 2, 4, 256),
                        image_size=image_size, patch_size=patch_size, vocab_size=vocab_size,
                        projection_dim=64)


def _block(c: TowerConfig, dtype, name: str, attention: str = "auto") -> TransformerBlock:
    return TransformerBlock(width=c.width, heads=c.heads, mlp_dim=c.mlp_dim,
                            activation=c.activation, layer_norm_eps=c.layer_norm_eps,
                            dtype=dtype, attention=attention, name=name)


class AttentionPoolingHead(nn.Module):
    """SigLIP's image embedding: a learned probe attends over the tokens (torch
    `nn.MultiheadAttention`, packed [q | k | v] in-projection), then x + mlp(ln(x))."""

    c: TowerConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, _, w = x.shape
        heads, head_dim = self.c.heads, w // self.c.heads
        probe = self.param("probe", nn.initializers.normal(0.02), (1, 1, w))
        kernel = self.param("qkv_kernel", nn.initializers.lecun_normal(), (w, 3 * w))
        bias = self.param("qkv_bias", nn.initializers.zeros, (3 * w,))
        kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
        q = probe.astype(self.dtype) @ kernel[:, :w] + bias[:w]
        kv = x.astype(self.dtype) @ kernel[:, w:] + bias[w:]
        k, v = jnp.split(kv, 2, axis=-1)
        q = jnp.broadcast_to(q, (n, 1, w)).reshape(n, 1, heads, head_dim)
        k, v = (t.reshape(n, -1, heads, head_dim) for t in (k, v))
        # One query against P keys: XLA's attention, always. Flash attention gains nothing
        # on one query, and its odd-length padding (attention.py) assumes self-attention.
        y = dot_product_attention(q, k, v, implementation="xla").reshape(n, 1, w)
        y = nn.Dense(w, dtype=self.dtype, name="out")(y)
        h = LayerNorm(epsilon=self.c.layer_norm_eps, dtype=self.dtype, name="layernorm")(y)
        h = nn.Dense(self.c.mlp_dim, dtype=self.dtype, name="fc1")(h)
        h = nn.Dense(w, dtype=self.dtype, name="fc2")(ACTIVATIONS[self.c.activation](h))
        return (y + h)[:, 0]


class VisionTower(nn.Module):
    """Patch embedding (with bias) plus positions, then the residual blocks; no class token."""

    cfg: SiglipConfig
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"     # attention.IMPLEMENTATIONS

    @nn.compact
    def __call__(self, images: jax.Array, collect: Sequence[int] | None = None,
                 project: bool = False) -> list[jax.Array] | jax.Array:
        """images (N, H, W, 3) normalised. Returns the tokens (N, P, W) after each index
        in `collect` (0: the embeddings, k: after block k; default all), running only as
        many blocks as the deepest index needs; or, with `project`, the pooled image
        embeddings (N, W) of the attention pooling head."""
        c = self.cfg.vision
        if collect is None:
            collect = range(c.layers + 1)
        collect = tuple(collect)
        if collect and not 0 <= max(collect) <= c.layers:
            raise ValueError(f"SigLIP layer index {max(collect)} out of range 0..{c.layers}")
        if project and not self.cfg.vision_use_head:
            raise ValueError("this SigLIP has no vision head (vision_use_head=False)")
        p = self.cfg.patch_size
        x = nn.Conv(c.width, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                    name="patch_embed")(images)
        n = x.shape[0]
        x = x.reshape(n, -1, c.width)
        pos = self.param("position_embedding", nn.initializers.normal(0.02),
                         (self.cfg.grid_size ** 2, c.width))
        x = x + pos.astype(x.dtype)
        outputs = {0: x}
        depth = c.layers if project else max(collect, default=0)
        for i in range(depth):
            x = _block(c, self.dtype, f"layers_{i}", attention=self.attention)(x)
            outputs[i + 1] = x
        post_ln = LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="post_layernorm")
        if project or self.is_initializing():
            x = post_ln(x)
            if self.cfg.vision_use_head:
                embeds = AttentionPoolingHead(c, self.dtype, name="head")(x)
                if project:
                    return embeds
        return [outputs[i] for i in collect]


class TextTower(nn.Module):
    """Token and position embeddings, blocks (no causal mask), final LayerNorm, a Linear
    head on the last position."""

    cfg: SiglipConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, token_ids: jax.Array) -> jax.Array:
        c = self.cfg.text
        x = nn.Embed(self.cfg.vocab_size, c.width, embedding_init=nn.initializers.normal(0.02),
                     dtype=self.dtype, name="token_embedding")(token_ids)
        pos = self.param("position_embedding", nn.initializers.normal(0.02),
                         (self.cfg.context_length, c.width))
        x = x + pos[: token_ids.shape[1]].astype(x.dtype)
        for i in range(c.layers):
            x = _block(c, self.dtype, f"layers_{i}")(x)
        x = LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="final_layernorm")(x)
        # transformers pools the last position, padding or not (ids are padded to 64).
        return nn.Dense(self.cfg.projection_dim, dtype=self.dtype, name="head")(x[:, -1])


def vision_params_up_to(vision: Params, depth: int) -> Params:
    """The vision params a run collecting indices <= `depth` reads: the embeddings and
    blocks 0..depth-1 (no deeper block, post-LN or pooling head)."""
    return params_up_to_block(vision, depth, ("post_layernorm", "head"))


def init_params(cfg: SiglipConfig, rng: jax.Array) -> Params:
    """Random SigLIP parameters (float32); logit scale and bias at SigLIP's init."""
    v_rng, t_rng = jax.random.split(rng)
    images = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    tokens = jnp.zeros((1, cfg.context_length), jnp.int32)
    return {
        "vision": VisionTower(cfg).init(v_rng, images)["params"],
        "text": TextTower(cfg).init(t_rng, tokens)["params"],
        "logit_scale": jnp.full((1,), np.log(10.0), jnp.float32),
        "logit_bias": jnp.full((1,), -10.0, jnp.float32),
    }


def image_features(cfg: SiglipConfig, params: Params, images: jax.Array,
                   dtype: jnp.dtype = jnp.float32,
                   collect: Sequence[int] | None = None) -> jax.Array:
    """Every layer's tokens: (L+1, N, P, W) for images (N, H, W, 3) already normalised.

    Index 0 is the embedding output (transformers' `hidden_states[0]`), index k
    after block k (or only the indices in `collect`, in that order).
    """
    outs = VisionTower(cfg, dtype).apply({"params": params["vision"]}, images, collect)
    return jnp.stack(outs)


def image_embeddings(cfg: SiglipConfig, params: Params, images: jax.Array,
                     dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """SigLIP's pooled image embeddings (N, W): `SiglipModel.get_image_features`."""
    return VisionTower(cfg, dtype).apply({"params": params["vision"]}, images, project=True)


def text_features(cfg: SiglipConfig, params: Params, token_ids: jax.Array,
                  dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Text features (A, E) of ids (A, context): `SiglipModel.get_text_features`."""
    return TextTower(cfg, dtype).apply({"params": params["text"]}, jnp.asarray(token_ids))
