"""The frozen vision-language backbone under the side networks: CLIP or SigLIP.

What the model reads of a backbone, and all it reads:
    - its vision tower's tokens at the layer indices the interaction maps name,
      as patch tokens (N, P, W) on the backbone's grid. CLIP puts a class token
      before its patches, SigLIP has none; `patch_tokens` drops CLIP's here. The
      side networks never read it: they carry their own learned class token
      (`SideEmbedding.cls_embed`), so on SigLIP nothing takes its place.
    - its layer count, width, image and patch size (its config's `vision.layers`,
      `vision.width`, `image_size`, `patch_size`, `grid_size`);
    - its text features (A, E) of the attribute phrases, E = `projection_dim`.

Each backbone's config type names it (`of(cfg)`), so a model config holding a
`ClipConfig` or a `SiglipConfig` needs no separate switch. Params live under
the tree key 'backbone' whichever the backbone, so frozen-parameter patterns
('backbone/.*') and checkpoints keep their layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from vtfpar_jax.models import clip, siglip


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str                   # config.backbone
    display_name: str           # in messages
    config_type: type
    class_tokens: int           # tokens before the patches in the vision tower's output
    vision_tower: type          # clip.VisionTower or a subclass (its `params_up_to` too)
    text_features: Callable     # (cfg, params, token_ids, dtype) -> (A, E)
    init_params: Callable       # (cfg, rng) -> params
    # The top-level params besides 'vision' (its text tower, logit scale and bias):
    # what stays frozen when the vision tower is fine-tuned.
    non_vision: tuple[str, ...]

    def frozen_but_vision(self, root: str = "backbone") -> tuple[str, ...]:
        """frozen_patterns that freeze every param of this backbone outside its vision tower."""
        return tuple(f"{root}/{name}(/.*)?" for name in self.non_vision)


BACKBONES: dict[str, Backbone] = {
    "clip": Backbone("clip", "CLIP", clip.ClipConfig, 1, clip.VisionTower, clip.text_features,
                     clip.init_params, ("text", "logit_scale")),
    "siglip": Backbone("siglip", "SigLIP", siglip.SiglipConfig, 0, siglip.VisionTower,
                       siglip.text_features, siglip.init_params,
                       ("text", "logit_scale", "logit_bias")),
}


def register(backbone: Backbone) -> None:
    """Adds a backbone's towers (vtfpar_jax.backbones.registry.register calls this)."""
    BACKBONES[backbone.name] = backbone


def of(cfg: Any) -> Backbone:
    """The backbone whose config `cfg` is (its exact type first, then a subclass)."""
    # Exact matches sort first; sorted() is stable, so the registry's order breaks ties.
    for backbone in sorted(BACKBONES.values(), key=lambda b: type(cfg) is not b.config_type):
        if isinstance(cfg, backbone.config_type):
            return backbone
    raise TypeError(f"{type(cfg).__name__} is no backbone config; expected one of "
                    f"{[b.config_type.__name__ for b in BACKBONES.values()]}")


def patch_tokens(cfg: Any, params: Any, images: jax.Array, collect: Sequence[int],
                 dtype: jnp.dtype = jnp.float32, attention: str = "auto") -> list[jax.Array]:
    """The vision tower's patch tokens (N, grid^2, W) after each index in `collect`
    (0: the embeddings, k: after block k), for images (N, H, W, 3) normalised."""
    backbone = of(cfg)
    tower = backbone.vision_tower(cfg, dtype, attention=attention)
    outs = tower.apply({"params": params["vision"]}, images, tuple(collect))
    return [o[:, backbone.class_tokens:] for o in outs]
