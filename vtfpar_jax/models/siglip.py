"""SigLIP's vision and text towers in Flax, for frozen feature extraction.

They follow transformers' `SiglipModel` exactly (pre-LN blocks with tanh GELU,
LayerNorm eps from the config), so imported weights give the reference's
numbers to float32 rounding. The towers are CLIP's (models/clip.py: the same
blocks, packed qkv and shared attention); what differs from CLIP is around the
blocks, and is all that this module's subclasses set:

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
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vtfpar_jax.models import clip
from vtfpar_jax.models.attention import dot_product_attention
from vtfpar_jax.models.clip import Params, TowerConfig, layer_norm
from vtfpar_jax.models.layers import ACTIVATIONS

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
        """From a transformers `SiglipConfig`."""
        hf = hf_config.to_dict()
        v, t = hf["vision_config"], hf["text_config"]

        def tower(c):
            return TowerConfig.from_hf(c, activation="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                                       activations=_HF_ACTIVATIONS)

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
            return c.to_hf(hidden_act=hf_act[c.activation])

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
        h = layer_norm(self.c, self.dtype, "layernorm")(y)
        h = nn.Dense(self.c.mlp_dim, dtype=self.dtype, name="fc1")(h)
        h = nn.Dense(w, dtype=self.dtype, name="fc2")(ACTIVATIONS[self.c.activation](h))
        return (y + h)[:, 0]


class VisionTower(clip.VisionTower):
    """Patch embedding (with bias) plus positions, then the residual blocks; no class token.
    The image embedding is the attention pooling head over the post-LayerNorm tokens."""

    display_name = "SigLIP"
    patch_bias = True
    class_token = False
    after_blocks = ("post_layernorm", "head")

    def pool(self, x: jax.Array) -> jax.Array | None:
        x = layer_norm(self.cfg.vision, self.dtype, "post_layernorm")(x)
        if self.cfg.vision_use_head:
            return AttentionPoolingHead(self.cfg.vision, self.dtype, name="head")(x)
        if not self.is_initializing():      # asked for the embeddings
            raise ValueError("this SigLIP has no vision head (vision_use_head=False)")
        return None


class TextTower(clip.TextTower):
    """Token and position embeddings, blocks (no causal mask), final LayerNorm, a Linear
    head on the last position."""

    causal = False
    position_std = 0.02

    def pool(self, x: jax.Array, token_ids: jax.Array) -> jax.Array:
        # transformers pools the last position, padding or not (ids are padded to 64).
        return nn.Dense(self.cfg.projection_dim, dtype=self.dtype, name="head")(x[:, -1])


def init_params(cfg: SiglipConfig, rng: jax.Array) -> Params:
    """Random SigLIP parameters (float32); logit scale and bias at SigLIP's init."""
    return {**clip.init_towers(VisionTower, TextTower, cfg, rng),
            "logit_scale": jnp.full((1,), np.log(10.0), jnp.float32),
            "logit_bias": jnp.full((1,), -10.0, jnp.float32)}


image_features = VisionTower.features
text_features = TextTower.features
