"""The whole VTFPAR++ model: frozen backbone features -> side nets -> fusion block -> heads -> BN.

The backbone is CLIP (as published) or SigLIP (models/towers.py says what
the model reads of it). Parameters come in two trees that never mix:
    backbone_params  the backbone's towers (frozen by default; models/clip.py, models/siglip.py)
    variables        {'params': side nets, fusion and heads, 'batch_stats': BN}

`apply` is the pure forward pass used by training, evaluation and prediction.
Shapes: video (B, F, H, W, 3) normalised; text features (A, E) computed once
from the frozen text tower; logits (B, A) float32 with the attribute head, (B, L)
with the group head (L: the groups' class counts summed, models/group_head.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vtfpar_jax.models import clip, group_head, siglip, towers
from vtfpar_jax.models.attention import IMPLEMENTATIONS as ATTENTION_IMPLEMENTATIONS
from vtfpar_jax.models.lean_ops import LayerNorm
from vtfpar_jax.models.side_nets import (
    AGGREGATIONS,
    INTERACTION_MAPS,
    REMAT_POLICIES,
    SIDE_DEPTH,
    SIDE_HEADS,
    Aggregation,
    InteractionMap,
    SpatialSideNet,
    TemporalSideNet,
    side_block,
)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# 'attribute': one Linear(D -> 1) per attribute (train.py); 'group': one Linear(D -> classes)
# per attribute group (train_marco.py, base_block_marco.py).
HEADS = ("attribute", "group")


@dataclasses.dataclass(frozen=True)
class VTFPARConfig:
    """Everything that shapes the model; hashable (a static jit argument)."""

    backbone: clip.ClipConfig | siglip.SiglipConfig   # the backbone (models/towers.py)
    num_attributes: int
    frames: int = 6
    spatial_map: InteractionMap = INTERACTION_MAPS["default"]
    temporal_map: InteractionMap = INTERACTION_MAPS["default"]
    spatial_aggregation: str = "mean"
    temporal_aggregation: str = "mean"
    dim: int = 240                      # side width: spatial = temporal = fusion, as published
    heads: int | None = None            # None: the published table by width
    side_patch_size: int = 16
    use_spatial: bool = True
    use_temporal: bool = True
    drop_path_rate: float = 0.1         # on the fusion block, in training
    dtype: str = "float32"              # compute dtype of side nets, fusion and heads
    backbone_dtype: str = "float32"     # compute dtype of the frozen backbone
    remat: str = "dots"                 # what side/fusion blocks keep for backward (side_nets)
    attention: str = "auto"             # attention implementation (models/attention.py)
    head: str = "attribute"             # HEADS
    # head 'group': the label columns of each group (AttributeSet.head_groups), () otherwise.
    group_columns: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self):
        self.validate()

    @property
    def num_heads(self) -> int:
        return self.heads if self.heads is not None else SIDE_HEADS[self.dim]

    @property
    def side_grid(self) -> int:
        return self.backbone.image_size // self.side_patch_size

    @property
    def backbone_sources(self) -> tuple[int, ...]:
        """The CLIP feature indices the side nets read (CLIP runs only up to the deepest)."""
        maps = (self.spatial_map if self.use_spatial else ()) + (
            self.temporal_map if self.use_temporal else ())
        return tuple(sorted({s for s, _ in maps}))

    @property
    def num_logits(self) -> int:
        """The width of the logits: one per attribute, or every group's classes."""
        if self.head == "group":
            return sum(group_head.class_counts(self.group_columns))
        return self.num_attributes

    def validate(self):
        for name, known in (("head", HEADS), ("remat", REMAT_POLICIES),
                            ("attention", ATTENTION_IMPLEMENTATIONS), ("dtype", sorted(DTYPES)),
                            ("backbone_dtype", sorted(DTYPES))):
            if getattr(self, name) not in known:
                raise ValueError(f"config: {name}={getattr(self, name)!r}; expected one of {known}")
        if self.head == "group":
            group_head.check_layout(self.group_columns, self.num_attributes)
        elif self.group_columns:
            raise ValueError("config: group_columns are for head='group' only")
        if not (self.use_spatial or self.use_temporal):
            raise ValueError("config: use_spatial and use_temporal are both off; keep at least one")
        if self.heads is None and self.dim not in SIDE_HEADS:
            raise ValueError(f"config: side width dim={self.dim} has no published head count "
                             f"({sorted(SIDE_HEADS)}); set heads explicitly")
        if self.dim % self.num_heads:
            raise ValueError(f"config: dim={self.dim} is not divisible by heads={self.num_heads}")
        for name in ("spatial_aggregation", "temporal_aggregation"):
            if getattr(self, name) not in AGGREGATIONS:
                raise ValueError(f"config: unknown {name} {getattr(self, name)!r}; expected one "
                                 f"of {AGGREGATIONS}")
        if self.use_temporal and not 1 <= self.frames <= SIDE_DEPTH:
            raise ValueError(f"config: frames={self.frames} with the temporal side net; it runs "
                             f"side block f on frame f, so 1..{SIDE_DEPTH} frames only (or set "
                             "use_temporal=False)")
        if self.frames < 1:
            raise ValueError(f"config: frames={self.frames}; need at least 1")
        layers = self.backbone.vision.layers
        backbone = towers.of(self.backbone).display_name
        for name, entries, use in (("spatial_map", self.spatial_map, self.use_spatial),
                                   ("temporal_map", self.temporal_map, self.use_temporal)):
            if not use:
                continue
            targets = [t for _, t in entries]
            if not entries or len(set(targets)) != len(targets):
                raise ValueError(f"config: {name} {entries} needs at least one entry and distinct "
                                 "targets (the published code keeps one source per target)")
            for s, t in entries:
                if not 0 <= s <= layers:
                    raise ValueError(f"config: {name} entry {s}->{t} reads {backbone} feature "
                                     f"{s}; this {backbone} has indices 0..{layers}")
                if name == "spatial_map" and not 0 <= t < SIDE_DEPTH:
                    raise ValueError(f"config: spatial_map entry {s}->{t} targets side layer {t}; "
                                     f"the spatial side net has layers 0..{SIDE_DEPTH - 1}")
        if self.backbone.image_size % self.side_patch_size:
            raise ValueError(f"config: image size {self.backbone.image_size} is not a multiple of "
                             f"side_patch_size={self.side_patch_size}")


class TorchBatchNorm(nn.Module):
    """BatchNorm1d as torch computes it: biased variance to normalise, unbiased
    variance into the running average (momentum 0.1), eps 1e-5."""

    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        mean_r = self.variable("batch_stats", "mean", jnp.zeros, (features,))
        var_r = self.variable("batch_stats", "var", jnp.ones, (features,))
        if train:
            mean, var = x.mean(axis=0), x.var(axis=0)
            if not self.is_initializing():
                n = x.shape[0]
                unbiased = var * n / max(n - 1, 1)
                mean_r.value = (1 - self.momentum) * mean_r.value + self.momentum * mean
                var_r.value = (1 - self.momentum) * var_r.value + self.momentum * unbiased
        else:
            mean, var = mean_r.value, var_r.value
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class VTFPAR(nn.Module):
    """Side nets, aggregation, fusion with the text tokens, per-attribute or per-group heads,
    BN."""

    cfg: VTFPARConfig

    @nn.compact
    def __call__(self, video: jax.Array, backbone_tokens: Mapping[int, jax.Array],
                 text_features: jax.Array, train: bool = False) -> jax.Array:
        cfg, dtype = self.cfg, DTYPES[self.cfg.dtype]
        b, f, h, w, _ = video.shape
        sides = []
        side_net = dict(dim=cfg.dim, heads=cfg.num_heads, grid=cfg.side_grid, dtype=dtype,
                        remat=cfg.remat, attention=cfg.attention)
        if cfg.use_spatial:
            spatial = SpatialSideNet(interaction_map=cfg.spatial_map,
                                     patch_size=cfg.side_patch_size, **side_net,
                                     name="spatial_side_net")(
                video.reshape(b * f, h, w, 3).astype(dtype), backbone_tokens)
            self.sow("intermediates", "spatial_side", spatial)
            sides.append(Aggregation(cfg.spatial_aggregation, dtype, cfg.num_heads,
                                     name="spatial_aggregation")(
                spatial.reshape(b, f, *spatial.shape[1:])))
        if cfg.use_temporal:
            temporal = TemporalSideNet(frames=f, interaction_map=cfg.temporal_map, **side_net,
                                       name="temporal_side_net")(backbone_tokens)
            self.sow("intermediates", "temporal_side", temporal)
            sides.append(Aggregation(cfg.temporal_aggregation, dtype, cfg.num_heads,
                                     name="temporal_aggregation")(temporal))
        side = sides[0] if len(sides) == 1 else sides[0] + sides[1]
        a = cfg.num_attributes
        words = nn.Dense(cfg.dim, dtype=dtype, name="word_embed")(text_features.astype(dtype))
        x = jnp.concatenate([jnp.broadcast_to(words, (b, a, cfg.dim)), side.astype(dtype)], axis=1)
        # `deterministic` positionally: static under remat (side_nets.RematTransformerBlock).
        x = side_block(cfg.dim, cfg.num_heads, dtype, "fusion_block", cfg.drop_path_rate,
                       remat=cfg.remat, attention=cfg.attention)(x, not train)
        x = LayerNorm(epsilon=1e-6, dtype=dtype, name="norm")(x)
        self.sow("intermediates", "fused_tokens", x)
        if cfg.head == "group":
            # Group g's Linear(D -> classes) reads the token at position g, that is attribute
            # phrase g's (not a token of the group): the published quirk (docs/quirks.md).
            logits = jnp.concatenate(
                [nn.Dense(n, dtype=dtype, name=f"group_head_{g}")(x[:, g]).astype(jnp.float32)
                 for g, n in enumerate(group_head.class_counts(cfg.group_columns))], axis=1)
        else:
            # One Linear(D -> 1) per attribute, applied to that attribute's text token.
            kernel = self.param("heads_kernel", nn.initializers.lecun_normal(), (a, cfg.dim))
            bias = self.param("heads_bias", nn.initializers.zeros, (a,))
            logits = jnp.einsum("bad,ad->ba", x[:, :a], kernel.astype(dtype)).astype(jnp.float32)
            logits = logits + bias
        self.sow("intermediates", "logits_pre_bn", logits)
        return TorchBatchNorm(name="bn")(logits, train)


def backbone_tokens(cfg: VTFPARConfig, backbone_params: Mapping[str, Any], video: jax.Array,
                    frozen: bool = True) -> dict[int, jax.Array]:
    """Backbone patch tokens {index: (B*F, P, C)} at the indices the side nets read
    (CLIP's class token dropped: towers.patch_tokens).

    With `frozen`, under stop_gradient: no backward pass runs through the backbone.
    """
    b, f, h, w, _ = video.shape
    sources = cfg.backbone_sources
    outs = towers.patch_tokens(cfg.backbone, backbone_params, video.reshape(b * f, h, w, 3),
                               sources, DTYPES[cfg.backbone_dtype], cfg.attention)
    if frozen:
        outs = [jax.lax.stop_gradient(o) for o in outs]
    return dict(zip(sources, outs, strict=True))


def apply(cfg: VTFPARConfig, variables: Mapping[str, Any], backbone_params: Mapping[str, Any],
          video: jax.Array, text_features: jax.Array, *, train: bool = False,
          rng: jax.Array | None = None, backbone_frozen: bool = True,
          capture_intermediates: bool = False) -> tuple[jax.Array, dict]:
    """Logits (B, cfg.num_logits) and the updated collections (batch_stats in training,
    intermediates when captured)."""
    tokens = backbone_tokens(cfg, backbone_params, video, frozen=backbone_frozen)
    mutable = (["batch_stats"] if train else []) + (
        ["intermediates"] if capture_intermediates else [])
    rngs = {"dropout": rng} if train and rng is not None else {}
    if train and rng is None and cfg.drop_path_rate > 0:
        raise ValueError("apply(train=True) needs an rng for drop-path")
    # An empty `mutable` list still returns (logits, {}).
    return VTFPAR(cfg).apply(variables, video, tokens, text_features, train, rngs=rngs,
                             mutable=mutable)


def init(cfg: VTFPARConfig, rng: jax.Array) -> dict:
    """Fresh variables {'params', 'batch_stats'} (float32)."""
    c = cfg.backbone
    video = jnp.zeros((1, cfg.frames, c.image_size, c.image_size, 3), jnp.float32)
    tokens = {s: jnp.zeros((cfg.frames, c.grid_size ** 2, c.vision.width), jnp.float32)
              for s in cfg.backbone_sources}
    text = jnp.zeros((cfg.num_attributes, c.projection_dim), jnp.float32)
    return dict(VTFPAR(cfg).init(rng, video, tokens, text, False))
