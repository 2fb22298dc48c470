"""CLIP's vision and text towers (ViT family) in Flax, for frozen feature extraction.

The towers follow OpenAI's CLIP / transformers' `CLIPModel` exactly (pre-LN
blocks, QuickGELU, LayerNorm eps from the config), so imported weights give
the reference's numbers to float32 rounding. Parameters live in one tree:

    {'vision': {...}, 'text': {...}, 'logit_scale': ()}

Public functions:
    image_features(cfg, params, images)  -> (L+1, N, 1+P, W)
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

from vtfpar_jax.models.layers import TransformerBlock, params_up_to_block
from vtfpar_jax.models.lean_ops import LayerNorm

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TowerConfig:
    width: int
    layers: int
    heads: int
    mlp_dim: int
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """The shape of a CLIP of the ViT family; hashable, so it can be a static jit argument."""

    vision: TowerConfig
    text: TowerConfig
    image_size: int = 224
    patch_size: int = 16
    vocab_size: int = 49408
    context_length: int = 77
    projection_dim: int = 512
    # transformers' convention: 2 (legacy configs) pools at argmax(ids), as OpenAI
    # does; any other id pools at the first occurrence of that id.
    eos_token_id: int = 2

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @classmethod
    def from_hf(cls, hf_config: Any) -> ClipConfig:
        """From a transformers `CLIPConfig` (or its dict form)."""
        if not isinstance(hf_config, dict):
            hf_config = hf_config.to_dict()
        v, t = hf_config["vision_config"], hf_config["text_config"]

        def tower(c):
            return TowerConfig(width=c["hidden_size"], layers=c["num_hidden_layers"],
                               heads=c["num_attention_heads"], mlp_dim=c["intermediate_size"],
                               activation=c.get("hidden_act", "quick_gelu"),
                               layer_norm_eps=c.get("layer_norm_eps", 1e-5))

        return cls(vision=tower(v), text=tower(t), image_size=v["image_size"],
                   patch_size=v["patch_size"], vocab_size=t["vocab_size"],
                   context_length=t["max_position_embeddings"],
                   projection_dim=hf_config.get("projection_dim", t.get("projection_dim", 512)),
                   eos_token_id=t.get("eos_token_id", 2))

    def to_hf(self):
        """The equivalent transformers `CLIPConfig` (for saving and parity checks)."""
        from transformers import CLIPConfig

        def tower(c: TowerConfig) -> dict:
            return dict(hidden_size=c.width, num_hidden_layers=c.layers,
                        num_attention_heads=c.heads, intermediate_size=c.mlp_dim,
                        hidden_act=c.activation, layer_norm_eps=c.layer_norm_eps,
                        projection_dim=self.projection_dim)

        return CLIPConfig(
            vision_config=dict(tower(self.vision), image_size=self.image_size,
                               patch_size=self.patch_size),
            text_config=dict(tower(self.text), vocab_size=self.vocab_size,
                             max_position_embeddings=self.context_length,
                             eos_token_id=self.eos_token_id),
            projection_dim=self.projection_dim)


def vit_b16() -> ClipConfig:
    """OpenAI CLIP ViT-B/16, the backbone of the published VTFPAR++."""
    return ClipConfig(vision=TowerConfig(768, 12, 12, 3072), text=TowerConfig(512, 12, 8, 2048),
                      image_size=224, patch_size=16, projection_dim=512)


def vit_l14() -> ClipConfig:
    """OpenAI CLIP ViT-L/14 (224 px)."""
    return ClipConfig(vision=TowerConfig(1024, 24, 16, 4096), text=TowerConfig(768, 12, 12, 3072),
                      image_size=224, patch_size=14, projection_dim=768)


def tiny(image_size: int = 64, patch_size: int = 8, vocab_size: int = 49408) -> ClipConfig:
    """A small random CLIP for demos and tests (same code paths, ~1M params + embeddings)."""
    return ClipConfig(vision=TowerConfig(64, 4, 4, 256), text=TowerConfig(64, 2, 4, 256),
                      image_size=image_size, patch_size=patch_size, vocab_size=vocab_size,
                      projection_dim=64)


class VisionTower(nn.Module):
    """Patch embedding, class token, positions, ln_pre, then the residual blocks.
    """

    cfg: ClipConfig
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"     # attention.IMPLEMENTATIONS

    @nn.compact
    def __call__(self, images: jax.Array, collect: Sequence[int] | None = None,
                 project: bool = False) -> list[jax.Array] | jax.Array:
        """images (N, H, W, 3) normalised. Returns the tokens (N, 1+P, W) after each
        index in `collect` (0: after ln_pre, k: after block k; default all), running
        only as many blocks as the deepest index needs; or, with `project`, the
        image embeddings (N, E)."""
        c = self.cfg.vision
        if collect is None:
            collect = range(c.layers + 1)
        collect = tuple(collect)
        if collect and not 0 <= max(collect) <= c.layers:
            raise ValueError(f"CLIP layer index {max(collect)} out of range 0..{c.layers}")
        p = self.cfg.patch_size
        x = nn.Conv(c.width, (p, p), strides=(p, p), padding="VALID", use_bias=False,
                    dtype=self.dtype, name="patch_embed")(images)
        n = x.shape[0]
        x = x.reshape(n, -1, c.width)
        cls = self.param("class_embedding", nn.initializers.normal(0.02), (c.width,))
        pos = self.param("position_embedding", nn.initializers.normal(0.02),
                         (self.cfg.grid_size ** 2 + 1, c.width))
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (n, 1, c.width)), x], axis=1)
        x = x + pos.astype(x.dtype)
        x = LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="pre_layernorm")(x)
        outputs = {0: x}
        depth = c.layers if project else max(collect, default=0)
        for i in range(depth):
            x = _block(c, self.dtype, f"layers_{i}", attention=self.attention)(x)
            outputs[i + 1] = x
        post_ln = LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="post_layernorm")
        proj = nn.Dense(self.cfg.projection_dim, use_bias=False, dtype=self.dtype,
                        name="projection")
        if project or self.is_initializing():
            embeds = proj(post_ln(x[:, 0]))
            if project:
                return embeds
        return [outputs[i] for i in collect]


class TextTower(nn.Module):
    """Token and position embeddings, causal blocks, final LayerNorm, projection at EOT."""

    cfg: ClipConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, token_ids: jax.Array) -> jax.Array:
        c = self.cfg.text
        x = nn.Embed(self.cfg.vocab_size, c.width, embedding_init=nn.initializers.normal(0.02),
                     dtype=self.dtype, name="token_embedding")(token_ids)
        pos = self.param("position_embedding", nn.initializers.normal(0.01),
                         (self.cfg.context_length, c.width))
        x = x + pos[: token_ids.shape[1]].astype(x.dtype)
        for i in range(c.layers):
            x = _block(c, self.dtype, f"layers_{i}", causal=True)(x)
        x = LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="final_layernorm")(x)
        if self.cfg.eos_token_id == 2:
            eot = jnp.argmax(token_ids, axis=-1)
        else:
            eot = jnp.argmax(token_ids == self.cfg.eos_token_id, axis=-1)
        pooled = x[jnp.arange(x.shape[0]), eot]
        return nn.Dense(self.cfg.projection_dim, use_bias=False, dtype=self.dtype,
                        name="projection")(pooled)


def _block(c: TowerConfig, dtype, name: str, causal: bool = False,
           attention: str = "auto") -> TransformerBlock:
    return TransformerBlock(width=c.width, heads=c.heads, mlp_dim=c.mlp_dim,
                            activation=c.activation, layer_norm_eps=c.layer_norm_eps,
                            causal=causal, dtype=dtype,
                            attention=attention, name=name)


def vision_params_up_to(vision: Params, depth: int) -> Params:
    """The vision tower's params that a run collecting indices <= `depth` reads: the
    embeddings, ln_pre and blocks 0..depth-1 (no deeper block, post-LN or projection)."""
    return params_up_to_block(vision, depth, ("post_layernorm", "projection"))


def init_params(cfg: ClipConfig, rng: jax.Array) -> Params:
    """Random CLIP parameters (float32), e.g. for the demo's small CLIP."""
    v_rng, t_rng = jax.random.split(rng)
    images = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    tokens = jnp.zeros((1, cfg.context_length), jnp.int32)
    return {
        "vision": VisionTower(cfg).init(v_rng, images)["params"],
        "text": TextTower(cfg).init(t_rng, tokens)["params"],
        "logit_scale": jnp.asarray(np.log(1 / 0.07), jnp.float32),
    }


def image_features(cfg: ClipConfig, params: Params, images: jax.Array,
                   dtype: jnp.dtype = jnp.float32,
                   collect: Sequence[int] | None = None) -> jax.Array:
    """Every layer's tokens: (L+1, N, 1+P, W) for images (N, H, W, 3) already normalised.

    Index 0 is after the pre-LayerNorm, index k after block k (or only the
    indices in `collect`, in that order).
    """
    outs = VisionTower(cfg, dtype).apply({"params": params["vision"]}, images, collect)
    return jnp.stack(outs)


def image_embeddings(cfg: ClipConfig, params: Params, images: jax.Array,
                     dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """CLIP's projected image embeddings (N, E)."""
    return VisionTower(cfg, dtype).apply({"params": params["vision"]}, images, project=True)


def text_features(cfg: ClipConfig, params: Params, token_ids: jax.Array,
                  dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Projected text features (A, E) at the end-of-text token of ids (A, context)."""
    return TextTower(cfg, dtype).apply({"params": params["text"]}, jnp.asarray(token_ids))
