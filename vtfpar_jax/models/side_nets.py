"""The spatial and temporal side networks of VTFPAR++ (reference sections 4-6).

Both are small ViTs (timm blocks: exact GELU, LayerNorm eps 1e-6, qkv bias)
that read frozen CLIP tokens through "interaction maps": an entry `s -> t`
feeds CLIP feature index `s` into side layer `t`. Video is (B, F, H, W, 3);
CLIP tokens arrive per index as (B*F, 1+P, C), frames folded into the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vtfpar_jax.models.layers import TransformerBlock

InteractionMap = tuple[tuple[int, int], ...]

# Attention heads of the published side ViTs, by width (timm names vit_w{D}n{heads}d8).
SIDE_HEADS = {144: 6, 240: 6, 256: 8, 336: 6, 432: 6, 512: 8, 768: 8}
SIDE_DEPTH = 8
SIDE_LN_EPS = 1e-6


# The block with its activations recomputed in the backward pass (jax.checkpoint).
# `deterministic` (argument 2, counting self) is a Python bool, hence static; call
# it as block(x, deterministic), always positionally: jax.checkpoint rejects a
# static_argnum beyond the arguments given, and traces keyword arguments.
RematTransformerBlock = nn.remat(TransformerBlock, static_argnums=(2,))


def side_block(dim: int, heads: int, dtype, name: str, drop_path_rate: float = 0.0,
               remat: bool = False):
    """A timm side-ViT block; with `remat`, rematerialised (same parameter names)."""
    block = RematTransformerBlock if remat else TransformerBlock
    return block(width=dim, heads=heads, mlp_dim=4 * dim, activation="gelu",
                 layer_norm_eps=SIDE_LN_EPS, drop_path_rate=drop_path_rate, dtype=dtype,
                 name=name)


def resize_grid(patches: jax.Array, grid: int) -> jax.Array:
    """Patch tokens (N, P, C) on a square grid -> (N, grid*grid, C).

    Bilinear, half-pixel centres and no antialiasing: torch's
    F.interpolate(mode='bilinear', align_corners=False). Identity when the
    CLIP grid already is the side grid (ViT-B/16 at 224 px).
    """
    n, p, c = patches.shape
    side = int(round(p ** 0.5))
    if side == grid:
        return patches
    patches = patches.reshape(n, side, side, c)
    patches = jax.image.resize(patches, (n, grid, grid, c), "bilinear", antialias=False)
    return patches.reshape(n, grid * grid, c)


class SideEmbedding(nn.Module):
    """The class token and the positions, 1 + grid^2 rows (cls row kept apart, as published)."""

    dim: int
    grid: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        init = nn.initializers.normal(0.02)
        cls = self.param("cls_embed", init, (1, 1, self.dim))
        cls_pos = self.param("cls_pos_embed", init, (1, 1, self.dim))
        pos = self.param("pos_embed", init, (1, self.grid * self.grid, self.dim))
        return cls, jnp.concatenate([cls_pos, pos], axis=1)


class SpatialFusion(nn.Module):
    """y = Dense(LN(clip patch tokens)) added to the side patch tokens (class token untouched)."""

    dim: int
    grid: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, clip_tokens: jax.Array) -> jax.Array:
        y = nn.LayerNorm(epsilon=SIDE_LN_EPS, dtype=self.dtype, name="norm")(clip_tokens[:, 1:])
        y = nn.Dense(self.dim, dtype=self.dtype, name="proj")(y)
        # Projecting before resizing, as published (bilinear weights sum to one,
        # so the two orders agree anyway).
        y = resize_grid(y, self.grid)
        return jnp.concatenate([x[:, :1], x[:, 1:] + y.astype(x.dtype)], axis=1)


class SpatialSideNet(nn.Module):
    """Per frame: patch-embed the pixels, then 7 side blocks with CLIP fused in.

    Quirk kept (reference section 5): the positional embedding is re-added after
    every block, and the 8th block is never run.
    """

    dim: int
    heads: int
    patch_size: int
    grid: int
    interaction_map: InteractionMap
    dtype: jnp.dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, images: jax.Array, clip_tokens: Mapping[int, jax.Array]) -> jax.Array:
        """images (N, H, W, 3) -> side tokens (N, 1+grid^2, D)."""
        p = self.patch_size
        x = nn.Conv(self.dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                    name="patch_embed")(images)
        n = x.shape[0]
        x = x.reshape(n, -1, self.dim)
        cls, pos = SideEmbedding(self.dim, self.grid, name="embedding")()
        x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, self.dim)).astype(x.dtype), x], axis=1)
        pos = pos.astype(x.dtype)
        x = x + pos
        sources = {t: s for s, t in self.interaction_map}

        def fuse(t, x):
            if t not in sources:
                return x
            return SpatialFusion(self.dim, self.grid, self.dtype, name=f"fusion_{t}")(
                x, clip_tokens[sources[t]])

        x = fuse(0, x)
        for i in range(1, SIDE_DEPTH):
            x = side_block(self.dim, self.heads, self.dtype, f"blocks_{i - 1}",
                           remat=self.remat)(x, True)
            x = fuse(i, x)
            if i == SIDE_DEPTH - 1:
                return x
            x = x + pos
        raise AssertionError("unreachable")


class TemporalSideNet(nn.Module):
    """Cross-frame side net: one stream per map entry, block f reads frame f.

    Stream j starts from `first_linear` of its CLIP feature on frame 0, then
    for every later frame f runs side block f and adds a LayerNorm+Dense of the
    same CLIP feature on frame f. Streams share the blocks, so they run as one
    batch. Returns (S, B, 1+grid^2, D).
    """

    dim: int
    heads: int
    grid: int
    interaction_map: InteractionMap
    frames: int
    dtype: jnp.dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, clip_tokens: Mapping[int, jax.Array]) -> jax.Array:
        sources = [s for s, _ in self.interaction_map]
        streams = len(sources)
        # (S, B*F, grid^2, C): every stream's CLIP patch tokens on the side grid.
        feats = jnp.stack([resize_grid(clip_tokens[s][:, 1:], self.grid) for s in sources])
        s_, bf, p, c = feats.shape
        b = bf // self.frames
        feats = feats.reshape(streams, b, self.frames, p, c)
        cls, pos = SideEmbedding(self.dim, self.grid, name="embedding")()
        first = nn.Dense(self.dim, dtype=self.dtype, name="first_linear")(feats[:, :, 0])
        x = jnp.concatenate([jnp.broadcast_to(cls, (streams, b, 1, self.dim)).astype(first.dtype),
                             first], axis=2) + pos.astype(first.dtype)
        x = x.reshape(streams * b, 1 + p, self.dim)
        x = side_block(self.dim, self.heads, self.dtype, "blocks_0", remat=self.remat)(x, True)
        fusion_norm = nn.vmap(nn.LayerNorm, variable_axes={"params": 0},
                              split_rngs={"params": True}, in_axes=0, out_axes=0)
        fusion_proj = nn.vmap(nn.Dense, variable_axes={"params": 0},
                              split_rngs={"params": True}, in_axes=0, out_axes=0)
        norm = fusion_norm(epsilon=1e-5, dtype=self.dtype, name="fusion_norm")
        proj = fusion_proj(self.dim, dtype=self.dtype, name="fusion_proj")
        for f in range(1, self.frames):
            x = side_block(self.dim, self.heads, self.dtype, f"blocks_{f}",
                           remat=self.remat)(x, True)
            y = proj(norm(feats[:, :, f])).reshape(streams * b, p, self.dim)
            x = jnp.concatenate([x[:, :1], x[:, 1:] + y.astype(x.dtype)], axis=1)
        return x.reshape(streams, b, 1 + p, self.dim)


class Aggregation(nn.Module):
    """Collapse axis 1 of (B, K, L, D): K frames (spatial) or K streams (temporal).

    'mean' and 'mlp' (a learned weight per slice plus a bias: the published
    Conv1d(K->1, kernel 1)) are as published; 'lstm'/'gru' crash in the
    published code, so they follow its intent: one recurrent layer (hidden D)
    over the K axis for every token, keeping the last step's output.
    """

    kind: str
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, k, length, d = x.shape
        if self.kind == "mean":
            return x.mean(axis=1)
        if self.kind == "mlp":
            w = self.param("kernel", nn.initializers.lecun_normal(), (k, 1))
            bias = self.param("bias", nn.initializers.zeros, (1,))
            return jnp.einsum("bkld,k->bld", x, w[:, 0].astype(x.dtype)) + bias.astype(x.dtype)
        cells = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}
        if self.kind not in cells:
            raise ValueError(f"unknown aggregation {self.kind!r}; expected one of "
                             f"{AGGREGATIONS}")
        seq = jnp.moveaxis(x, 1, 2).reshape(b * length, k, d)
        rnn = nn.RNN(cells[self.kind](d, dtype=self.dtype, name="cell"), name="rnn")
        return rnn(seq)[:, -1].reshape(b, length, d)


AGGREGATIONS = ("mean", "mlp", "lstm", "gru")


def parse_interaction_map(spec: str | Sequence) -> InteractionMap:
    """A published map name ('default', '0'..'7') or a list of 's->t' strings / (s, t) pairs."""
    if isinstance(spec, str) and spec in INTERACTION_MAPS:
        return INTERACTION_MAPS[spec]
    entries = spec.split(",") if isinstance(spec, str) else list(spec)
    pairs = []
    for e in entries:
        try:
            s, t = (int(v) for v in e.split("->")) if isinstance(e, str) else (int(e[0]), int(e[1]))
        except (ValueError, TypeError, IndexError):
            raise ValueError(f"interaction map {spec!r}: entry {e!r} is not 's->t'; known names: "
                             f"{sorted(INTERACTION_MAPS)}") from None
        pairs.append((s, t))
    targets = [t for _, t in pairs]
    if len(set(targets)) != len(targets) or not pairs:
        raise ValueError(f"interaction map {spec!r}: needs at least one entry and distinct "
                         "targets (the published code keeps one source per target)")
    return tuple(pairs)


def _named(entries: str) -> InteractionMap:
    return tuple(tuple(int(v) for v in e.split("->")) for e in entries.split())


INTERACTION_MAPS: dict[str, InteractionMap] = {
    "default": _named("0->0 3->1 6->2 9->3 11->4"),
    "0": _named("0->0 1->1 2->2 3->3 4->4"),
    "1": _named("7->0 8->1 9->2 10->3 11->4"),
    "2": _named("0->0 3->1 6->2 9->3 11->4"),
    "3": _named("3->1 6->2 9->3 11->4"),
    "4": _named("6->2 9->3 11->4"),
    "5": _named("9->3 11->4"),
    "6": _named("11->4"),
    "7": _named("0->0 1->1 2->2 4->3 6->4 8->5 10->6 11->7"),
}
