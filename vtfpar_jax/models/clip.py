"""CLIP's vision and text towers (ViT family) in Flax, for frozen feature extraction.

The towers follow OpenAI's CLIP / transformers' `CLIPModel` exactly (pre-LN
blocks, QuickGELU, LayerNorm eps from the config), so imported weights give
the reference's numbers to float32 rounding. Parameters live in one tree:

    {'vision': {...}, 'text': {...}, 'logit_scale': ()}

SigLIP's towers (models/siglip.py) are these, with what differs set by their
class attributes (patch bias, class token and ln_pre, causal mask, position
init) and their own `pool` (how an embedding is taken from the last tokens).

Public functions:
    image_features(cfg, params, images)  -> (L+1, N, 1+P, W)
    text_features(cfg, params, token_ids) -> (A, E)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vtfpar_jax.models.layers import TransformerBlock
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

    @classmethod
    def from_hf(cls, c: Mapping[str, Any], activation: str = "quick_gelu",
                layer_norm_eps: float = 1e-5,
                activations: Mapping[str, str] = {}) -> TowerConfig:  # noqa: B006 - read only
        """From a transformers tower config (dict form); `activation` and `layer_norm_eps`
        are the model's defaults (CLIP's unless given), `activations` maps transformers'
        names to ours."""
        act = c.get("hidden_act", activation)
        return cls(width=c["hidden_size"], layers=c["num_hidden_layers"],
                   heads=c["num_attention_heads"], mlp_dim=c["intermediate_size"],
                   activation=activations.get(act, act),
                   layer_norm_eps=c.get("layer_norm_eps", layer_norm_eps))

    def to_hf(self, hidden_act: str) -> dict:
        """transformers' fields of this tower, its activation named `hidden_act` there."""
        return dict(hidden_size=self.width, num_hidden_layers=self.layers,
                    num_attention_heads=self.heads, intermediate_size=self.mlp_dim,
                    hidden_act=hidden_act, layer_norm_eps=self.layer_norm_eps)


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
        """From a transformers `CLIPConfig`."""
        hf = hf_config.to_dict()
        v, t = hf["vision_config"], hf["text_config"]
        return cls(vision=TowerConfig.from_hf(v), text=TowerConfig.from_hf(t),
                   image_size=v["image_size"], patch_size=v["patch_size"],
                   vocab_size=t["vocab_size"], context_length=t["max_position_embeddings"],
                   projection_dim=hf.get("projection_dim", t.get("projection_dim", 512)),
                   eos_token_id=t.get("eos_token_id", 2))

    def to_hf(self):
        """The equivalent transformers `CLIPConfig` (for saving and parity checks)."""
        from transformers import CLIPConfig

        def tower(c: TowerConfig) -> dict:
            return dict(c.to_hf(hidden_act=c.activation), projection_dim=self.projection_dim)

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


def layer_norm(c: TowerConfig, dtype, name: str) -> LayerNorm:
    return LayerNorm(epsilon=c.layer_norm_eps, dtype=dtype, name=name)


def _block(c: TowerConfig, dtype, name: str, causal: bool = False,
           attention: str = "auto") -> TransformerBlock:
    return TransformerBlock(width=c.width, heads=c.heads, mlp_dim=c.mlp_dim,
                            activation=c.activation, layer_norm_eps=c.layer_norm_eps,
                            causal=causal, dtype=dtype, attention=attention, name=name)


class VisionTower(nn.Module):
    """Patch embedding (no bias), class token, positions, ln_pre, the residual blocks; the
    image embedding is the post-LayerNorm class token, projected."""

    cfg: Any                    # ClipConfig (SiglipConfig in siglip.VisionTower)
    dtype: jnp.dtype = jnp.float32
    attention: str = "auto"     # attention.IMPLEMENTATIONS

    display_name: ClassVar[str] = "CLIP"
    patch_bias: ClassVar[bool] = False
    class_token: ClassVar[bool] = True      # a learned token before the patches, and ln_pre
    # The modules after the last block: only the image embedding reads them.
    after_blocks: ClassVar[tuple[str, ...]] = ("post_layernorm", "projection")

    def pool(self, x: jax.Array) -> jax.Array:
        """The image embeddings (N, E) of the last block's tokens (run at init too)."""
        x = layer_norm(self.cfg.vision, self.dtype, "post_layernorm")(x[:, 0])
        return nn.Dense(self.cfg.projection_dim, use_bias=False, dtype=self.dtype,
                        name="projection")(x)

    @nn.compact
    def __call__(self, images: jax.Array, collect: Sequence[int] | None = None,
                 project: bool = False) -> list[jax.Array] | jax.Array:
        """images (N, H, W, 3) normalised. Returns the tokens (N, T, W) after each index in
        `collect` (0: the embeddings, after ln_pre where there is one; k: after block k;
        default all), running only as many blocks as the deepest index needs; or, with
        `project`, the image embeddings (N, E)."""
        c = self.cfg.vision
        collect = tuple(range(c.layers + 1) if collect is None else collect)
        if collect and not 0 <= max(collect) <= c.layers:
            raise ValueError(f"{self.display_name} layer index {max(collect)} out of range "
                             f"0..{c.layers}")
        p = self.cfg.patch_size
        x = nn.Conv(c.width, (p, p), strides=(p, p), padding="VALID", use_bias=self.patch_bias,
                    dtype=self.dtype, name="patch_embed")(images)
        n = x.shape[0]
        x = x.reshape(n, -1, c.width)
        if self.class_token:
            cls = self.param("class_embedding", nn.initializers.normal(0.02), (c.width,))
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (n, 1, c.width)), x],
                                axis=1)
        pos = self.param("position_embedding", nn.initializers.normal(0.02),
                         (self.cfg.grid_size ** 2 + int(self.class_token), c.width))
        x = x + pos.astype(x.dtype)
        if self.class_token:
            x = layer_norm(c, self.dtype, "pre_layernorm")(x)
        outputs = {0: x}
        depth = c.layers if project else max(collect, default=0)
        for i in range(depth):
            x = _block(c, self.dtype, f"layers_{i}", attention=self.attention)(x)
            outputs[i + 1] = x
        if project or self.is_initializing():
            embeds = self.pool(x)
            if project:
                return embeds
        return [outputs[i] for i in collect]

    @classmethod
    def features(cls, cfg: Any, params: Params, images: jax.Array,
                 dtype: jnp.dtype = jnp.float32,
                 collect: Sequence[int] | None = None) -> jax.Array:
        """The tokens of `__call__`, stacked: (L+1, N, T, W) by default, T the class token
        (CLIP) and the patches; index 0 is transformers' `hidden_states[0]`."""
        return jnp.stack(cls(cfg, dtype).apply({"params": params["vision"]}, images, collect))

    @classmethod
    def embeddings(cls, cfg: Any, params: Params, images: jax.Array,
                   dtype: jnp.dtype = jnp.float32) -> jax.Array:
        """The image embeddings (N, E) (transformers' `get_image_features`)."""
        return cls(cfg, dtype).apply({"params": params["vision"]}, images, project=True)

    @classmethod
    def params_up_to(cls, vision: Params, depth: int) -> Params:
        """The vision params that a run collecting indices <= `depth` reads: the embeddings
        and blocks 0..depth-1 (no deeper block, nor `after_blocks`)."""
        def read(name: str) -> bool:
            if name.startswith("layers_"):
                return int(name.removeprefix("layers_")) < depth
            return name not in cls.after_blocks

        return {name: value for name, value in vision.items() if read(name)}


class TextTower(nn.Module):
    """Token and position embeddings, causal blocks, final LayerNorm, projection at EOT."""

    cfg: Any                    # ClipConfig (SiglipConfig in siglip.TextTower)
    dtype: jnp.dtype = jnp.float32

    causal: ClassVar[bool] = True
    position_std: ClassVar[float] = 0.01     # the init of the position embedding

    def pool(self, x: jax.Array, token_ids: jax.Array) -> jax.Array:
        """The text features (A, E) of the final LayerNorm's tokens."""
        if self.cfg.eos_token_id == 2:
            eot = jnp.argmax(token_ids, axis=-1)
        else:
            eot = jnp.argmax(token_ids == self.cfg.eos_token_id, axis=-1)
        pooled = x[jnp.arange(x.shape[0]), eot]
        return nn.Dense(self.cfg.projection_dim, use_bias=False, dtype=self.dtype,
                        name="projection")(pooled)

    @nn.compact
    def __call__(self, token_ids: jax.Array) -> jax.Array:
        c = self.cfg.text
        x = nn.Embed(self.cfg.vocab_size, c.width, embedding_init=nn.initializers.normal(0.02),
                     dtype=self.dtype, name="token_embedding")(token_ids)
        pos = self.param("position_embedding", nn.initializers.normal(self.position_std),
                         (self.cfg.context_length, c.width))
        x = x + pos[: token_ids.shape[1]].astype(x.dtype)
        for i in range(c.layers):
            x = _block(c, self.dtype, f"layers_{i}", causal=self.causal)(x)
        x = layer_norm(c, self.dtype, "final_layernorm")(x)
        return self.pool(x, token_ids)

    @classmethod
    def features(cls, cfg: Any, params: Params, token_ids: jax.Array,
                 dtype: jnp.dtype = jnp.float32) -> jax.Array:
        """Text features (A, E) of ids (A, context) (transformers' `get_text_features`)."""
        return cls(cfg, dtype).apply({"params": params["text"]}, jnp.asarray(token_ids))


def init_towers(vision: type[VisionTower], text: type[TextTower], cfg: Any,
                rng: jax.Array) -> Params:
    """Random params (float32) of both towers: {'vision': ..., 'text': ...}."""
    v_rng, t_rng = jax.random.split(rng)
    images = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    tokens = jnp.zeros((1, cfg.context_length), jnp.int32)
    return {"vision": vision(cfg).init(v_rng, images)["params"],
            "text": text(cfg).init(t_rng, tokens)["params"]}


def init_params(cfg: ClipConfig, rng: jax.Array) -> Params:
    """Random CLIP parameters (float32), e.g. for the demo's small CLIP."""
    return {**init_towers(VisionTower, TextTower, cfg, rng),
            "logit_scale": jnp.asarray(np.log(1 / 0.07), jnp.float32)}


image_features = VisionTower.features
text_features = TextTower.features
